"""Meeting domain shift: the support (the store) and the queries re-expressed in a common space.

The clips to label often come from other sources (kits, instruments, microphones) than the store's:
each source shifts the embeddings its own way. ``adapt`` (the ``adapt`` setting of ``evaluate`` and
``rag_classify``) removes such offsets before a predictor's rule; every mode re-normalises rows to
unit length afterwards (the predictors compare cosines).

- ``none``: the embeddings as they are;
- ``source`` (needs no queries): each support row minus its source's mean (the store's per-source
  statistics, `source_means`), the queries minus the mean of those source means;
- transductive, they use the *unlabelled queries themselves* (all queries of the run together, so a
  label may depend on the other clips labelled with it; meaningless for one clip, refused then):
  ``center``: the support minus its mean, the queries minus *their* mean (the query batch's);
  ``standardize``: the same, each dimension also divided by its standard deviation, per source of
  the support and for the query batch as one source;
  ``propagate``: ``center``, then the predictor's class probabilities for the queries spread over
  the graph of support and queries (Zhou et al. 2004, "Learning with local and global
  consistency", https://papers.nips.cc/paper/2506: ``F <- a S F + (1 - a) Y``, ``S`` the
  symmetrically normalised k-nearest-neighbour graph, ``Y`` the support's one-hot labels and the
  queries' probabilities), so queries that resemble each other agree.

A support row's source: its manifest ``source`` field, else the part of its file name before ``__``
(``<source>__<file>``, as ``scripts/make_devset.py`` names them), else one source for the store.
Sources of a single label are pooled (`adapted`): one instrument's notes say nothing of its offset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import PurePosixPath

import numpy as np
from scipy import sparse

from .adapters import Support
from .errors import ConfigError

MODES = ("none", "source", "center", "standardize", "propagate")
TRANSDUCTIVE = ("center", "standardize", "propagate")
MIN_QUERIES = 2  # a transductive mode needs a batch to estimate the queries' statistics
GRAPH_K = 10  # neighbours per node of the propagation graph (Zhou et al.'s kNN variant)
ALPHA = 0.8  # propagation's weight of the graph against the seeds
STEPS = 20  # iterations of F <- a S F + (1 - a) Y (a geometric series: 0.8^20 ~ 1%)
MAX_GRAPH = 20000  # support + queries above this: the dense similarity graph is refused


def item_source(item: dict) -> str:
    """The source of a store row (module docstring)."""
    if item.get("source"):
        return str(item["source"])
    name = PurePosixPath(str(item.get("path") or item.get("id") or "")).name
    return name.split("__", 1)[0] if "__" in name else ""


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def source_means(emb: np.ndarray, sources: Sequence[str]) -> dict[str, np.ndarray]:
    """Mean embedding of each source."""
    src = np.asarray(sources)
    return {s: emb[src == s].mean(0) for s in sorted(set(sources))}


def _standardized(x: np.ndarray) -> np.ndarray:
    centred = x - x.mean(0)
    std = centred.std(0)
    floor = max(float(np.median(std)), 1e-6)  # a near-constant dimension is not blown up
    return centred / np.maximum(std, floor)


def check(mode: str, n_queries: int | None = None) -> None:
    """One-line refusals: an unknown mode; a transductive one for fewer than ``MIN_QUERIES`` queries."""
    if mode not in MODES:
        raise ConfigError(f"adapt={mode!r} is not one of {', '.join(MODES)}")
    if mode in TRANSDUCTIVE and n_queries is not None and n_queries < MIN_QUERIES:
        raise ConfigError(
            f"adapt={mode} is transductive (it uses the other clips labelled with it) and needs at least "
            f"{MIN_QUERIES} clips; {n_queries} given: use adapt=none or adapt=source for one clip"
        )


def query_batch(mode: str | None, batch_size: int | None, n_queries: int, world: int = 1) -> int:
    """The query batch size: ``batch_size``, or every query at once for a transductive ``mode`` (its
    statistics are the whole batch's); refused on several ranks (each would see only its share)."""
    if (mode or "none") not in TRANSDUCTIVE:
        return int(batch_size or 8)
    if world > 1:
        raise ConfigError(f"adapt={mode} uses every query together; run it in one process, not on {world} ranks")
    if n_queries:
        check(str(mode), n_queries)
    return max(1, n_queries)


def space(mode: str, support: np.ndarray, sources: Sequence[str], queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(support, queries) in the space of ``mode`` (``propagate``: the centred space), unit rows."""
    check(mode, len(queries))
    support, queries = np.asarray(support, np.float64), np.asarray(queries, np.float64)
    if mode == "none":
        return _unit(support), _unit(queries)
    if mode == "source":
        means = source_means(support, sources)
        shifted = support - np.stack([means[s] for s in sources])
        return _unit(shifted), _unit(queries - np.mean(list(means.values()), axis=0))
    if mode == "standardize":
        by_row = np.asarray(sources)
        out = np.empty_like(support)
        for s in set(sources):
            out[by_row == s] = _standardized(support[by_row == s])
        return _unit(out), _unit(_standardized(queries))
    return _unit(support - support.mean(0)), _unit(queries - queries.mean(0))  # center, propagate


def single_label_batch(support: Support, queries: np.ndarray) -> str | None:
    """The label every query is nearest to *before* adapting, when they all agree and the store has
    others: a transductive mode centres such a batch's shared sound away (a folder of only kicks came
    out as snares and cymbals), so the caller warns. None otherwise."""
    if len(support.labels) < 2 or len(queries) < MIN_QUERIES:
        return None
    nearest = support.onehot[np.argmax(_unit(np.asarray(queries, np.float64)) @ _unit(support.emb).T, axis=1)].argmax(1)
    return support.labels[int(nearest[0])] if len(set(nearest.tolist())) == 1 else None


def propagate(support: np.ndarray, onehot: np.ndarray, queries: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """The queries' class scores [m, labels] after spreading (module docstring); ``support`` and
    ``queries`` are unit rows of one space, ``probs`` the predictor's probabilities for the queries.
    Hand-written: scikit-learn's LabelSpreading seeds only hard labels, not the queries' probabilities."""
    x = np.concatenate([support, queries])
    if len(x) > MAX_GRAPH:
        raise ConfigError(
            f"adapt=propagate builds a dense graph of the store and the queries ({len(x)} rows, at most "
            f"{MAX_GRAPH}); use adapt=center"
        )
    k = min(GRAPH_K, len(x) - 1)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    near = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    rows = np.repeat(np.arange(len(x)), k)
    w = sparse.csr_matrix((np.maximum(sims[rows, near.ravel()], 0.0), (rows, near.ravel())), shape=sims.shape)
    w = w.maximum(w.T)  # symmetric
    d = np.asarray(w.sum(1)).ravel()
    inv = sparse.diags(1.0 / np.sqrt(np.maximum(d, 1e-12)))
    s = inv @ w @ inv
    y = np.concatenate([onehot, probs])
    f = y.copy()
    for _ in range(STEPS):
        f = ALPHA * (s @ f) + (1 - ALPHA) * y
    return f[len(support) :]


def adapted(mode: str, support: Support, sources: Sequence[str], queries: np.ndarray) -> tuple[Support, np.ndarray]:
    """``support`` (its rows' ``sources``) and ``queries`` in the space of ``mode`` (`space`).
    A source whose rows hold a single label is pooled with the other such sources (``""``): its
    mean is its label's as much as its offset, and removing it would remove the label."""
    src = np.asarray(sources, dtype=object)
    spans = {s: int(support.onehot[src == s].any(0).sum()) for s in set(sources)}
    pooled = ["" if spans[s] < 2 else s for s in sources]
    emb, q = space(mode, support.emb, pooled, queries)
    return replace(support, emb=emb), q

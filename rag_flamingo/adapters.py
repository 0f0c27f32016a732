"""Training-free classifiers fitted on a labelled support set (the index store), for new labels.

Each method turns the support embeddings and their labels into per-label scores for a query
embedding, with no gradient training and no per-dataset setting: what is not fixed by rule is chosen
on the support set itself (leave-one-out on the support). `rag_flamingo.predictors` wraps them as
registered predictors (``simpleshot``, ``tip_adapter``, ``lda``), fitted without the query's own rows.

- `SimpleShot`: centre on the support mean, L2-normalise, nearest class centroid (Wang et al. 2019,
  "SimpleShot", https://arxiv.org/abs/1911.04623, its CL2N + nearest-centroid rule).
- `TipAdapter`: training-free Tip-Adapter (Zhang et al. 2022, https://arxiv.org/abs/2207.09519): the
  support is a key-value cache, a query's cache logits are ``exp(-beta (1 - q.k)) @ onehot``, added
  with weight ``alpha`` to a base classifier. Audio encoders without text have no CLIP zero-shot head,
  so the base is the SimpleShot centroid cosine at CLIP's logit scale (100); ``alpha`` and ``beta``
  are chosen on the grid of the paper's search by leave-one-out accuracy on the support.
- `ShrinkageLda`: linear discriminant analysis with the Ledoit-Wolf shrunk pooled covariance
  (scikit-learn's ``LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")``; the shrinkage is
  Ledoit and Wolf's closed form on the support, https://doi.org/10.1016/S0047-259X(03)00096-4) and
  uniform class priors (an unbalanced support does not bias the answer). It models which directions
  of the embedding vary within a class, which the cosine of nearest-neighbour and centroid rules
  ignores: the best of these alone (BENCHMARKS.md, "How well does it adapt to new labels?"), below
  1-NN where the store holds near-copies of a clip (`Fusion` keeps them). Its scores are its class posteriors.
- `Fusion`: a base classifier's class probabilities (lda's posteriors; for a cosine rule such as the
  nearest centroid, a softmax of its cosines at the neighbour vote's temperature, i.e. the centroids
  voting like neighbours) mixed with the retrieved neighbours' similarity-weighted vote,
  ``(1 - w) p_base + w p_vote``: Tip-Adapter's blend of a base classifier with a cache of the
  support's nearest examples (above), with the retrieved shots as the cache and class probabilities
  on both sides, so ``w`` is a share in [0, 1]. ``w`` is fixed (``predictors.fusion.weight``, chosen
  across development sets: BENCHMARKS.md "Across sets"), or, when that is null, chosen on the support
  by cross-validation (which rates the vote by the support's own sources, so it errs under a shift of
  source). `FusedVote` is the same blend as a `Method` over exact neighbours (for `rag_flamingo.shift`).

A multi-label support item (tagging) counts as an example of each of its labels.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .config import FusionOptions
from .errors import ConfigError
from .labels import item_labels
from .vectors import normalize_rows


@dataclass(frozen=True)
class Support:
    """Labelled support vectors: L2-normalised embeddings [n, d], label names, one-hot [n, labels],
    and the store row of each vector (unlabelled rows are left out)."""

    emb: np.ndarray
    labels: list[str]
    onehot: np.ndarray
    rows: np.ndarray

    @classmethod
    def from_items(cls, embeddings: np.ndarray, items: Sequence[dict], where: str = "the store") -> Support:
        names = sorted({lab for it in items for lab in item_labels(it)})
        if not names:
            raise ConfigError(
                f"{where}: no labelled items to adapt to; index a labelled dataset "
                f"(manifest 'label'/'labels', or sub-folders for dataset=folder)"
            )
        index = {lab: j for j, lab in enumerate(names)}
        onehot = np.zeros((len(items), len(names)), np.float64)
        for i, it in enumerate(items):
            for lab in item_labels(it):
                onehot[i, index[lab]] = 1.0
        keep = onehot.any(1)  # unlabelled rows (a captioning store's) say nothing about labels
        emb = normalize_rows(np.asarray(embeddings, np.float64)[keep])
        return cls(emb, names, onehot[keep], np.flatnonzero(keep))

    def without(self, rows: Collection[int]) -> Support:
        """The support less the store rows ``rows``, and less the labels left with no example."""
        if not rows:
            return self
        keep = ~np.isin(self.rows, np.fromiter(rows, np.int64))
        onehot = self.onehot[keep]
        used = np.asarray(onehot.any(0), bool)
        labels = [self.labels[j] for j in np.flatnonzero(used)]
        return Support(self.emb[keep], labels, onehot[:, used], self.rows[keep])

    def centroids(self, emb: np.ndarray | None = None) -> np.ndarray:
        """L2-normalised class means of ``emb`` (default: the support's vectors) [labels, d]."""
        emb = self.emb if emb is None else emb
        return normalize_rows((self.onehot.T @ emb) / self.onehot.sum(0)[:, None])


class Fitted(Protocol):
    def scores(self, queries: np.ndarray) -> np.ndarray:
        """Per-label scores [m, labels] (larger is better) for L2-normalised queries [m, d]."""
        ...


class Method(Protocol):
    name: str

    def fit(self, support: Support) -> Fitted: ...


@dataclass
class _Centred:
    mean: np.ndarray
    centroids: np.ndarray

    def scores(self, queries: np.ndarray) -> np.ndarray:
        return normalize_rows(queries - self.mean) @ self.centroids.T


class SimpleShot:
    name = "simpleshot"

    def fit(self, support: Support) -> _Centred:
        mean = support.emb.mean(0)
        return _Centred(mean, support.centroids(normalize_rows(support.emb - mean)))


@dataclass
class _Tip:
    base: _Centred
    keys: np.ndarray  # centred, normalised support vectors
    onehot: np.ndarray
    alpha: float
    beta: float

    def scores(self, queries: np.ndarray) -> np.ndarray:
        affinity = normalize_rows(queries - self.base.mean) @ self.keys.T
        cache = np.exp(-self.beta * (1.0 - affinity)) @ self.onehot
        return 100.0 * self.base.scores(queries) + self.alpha * cache


class TipAdapter:
    """``alpha``/``beta`` grids: Tip-Adapter's own search ranges (alpha in [0, 10], beta in [1, 10]);
    alpha 0 (the base classifier alone) is a candidate, so the cache is used only where it helps."""

    name = "tip_adapter"
    ALPHAS = (0.0, 0.5, 1.0, 2.0, 4.0, 10.0)
    BETAS = (1.0, 2.0, 3.0, 5.5, 8.0, 10.0)
    MAX_SELECT = 2000  # leave-one-out selection on at most this many support rows (a seeded subset)

    def fit(self, support: Support) -> _Tip:
        base = SimpleShot().fit(support)
        keys = normalize_rows(support.emb - base.mean)
        alpha, beta = self._select(support, keys)
        return _Tip(base, keys, support.onehot, alpha, beta)

    def _select(self, support: Support, keys: np.ndarray) -> tuple[float, float]:
        """Leave-one-out accuracy on the support for every (alpha, beta); ties: the smallest alpha."""
        rows = np.arange(len(keys))
        if len(rows) > self.MAX_SELECT:
            rows = np.sort(np.random.default_rng(0).choice(len(rows), self.MAX_SELECT, replace=False))
        onehot = support.onehot
        counts = onehot.sum(0)
        sums = onehot.T @ keys  # class sums of the centred vectors
        own = onehot[rows]  # each held-out row leaves its own labels' sums and counts
        held_sums = sums[None] - own[:, :, None] * keys[rows][:, None, :]
        held_counts = counts[None] - own
        with np.errstate(invalid="ignore", divide="ignore"):
            cents = held_sums / held_counts[:, :, None]
        cents = np.nan_to_num(cents) / np.maximum(np.linalg.norm(np.nan_to_num(cents), axis=2, keepdims=True), 1e-12)
        base = 100.0 * np.einsum("rd,rld->rl", keys[rows], cents)
        base[held_counts == 0] = -np.inf  # a label whose only example is held out cannot be answered
        affinity = keys[rows] @ keys.T
        affinity[np.arange(len(rows)), rows] = -np.inf  # the held-out row is not in its own cache
        truth = onehot[rows]
        best, choice = -1.0, (0.0, 1.0)
        for beta in self.BETAS:
            cache = np.exp(-beta * (1.0 - affinity)) @ onehot
            for alpha in self.ALPHAS:
                guess = np.argmax(base + alpha * cache, axis=1)
                accuracy = float(truth[np.arange(len(rows)), guess].mean())
                if accuracy > best + 1e-12:
                    best, choice = accuracy, (alpha, beta)
        return choice


@dataclass
class _Lda:
    posteriors = True  # its scores are class probabilities (`Fusion` uses them as they are)
    model: object  # a fitted sklearn LinearDiscriminantAnalysis
    order: np.ndarray  # model class index of each support label

    def scores(self, queries: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(queries)[:, self.order]  # type: ignore[attr-defined]


class ShrinkageLda:
    name = "lda"

    def fit(self, support: Support) -> Fitted:
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        rows, cols = np.nonzero(support.onehot)  # a multi-label item is an example of each label
        if len(support.labels) < 2:
            return _Single()
        if len(rows) <= len(support.labels):  # one example per class: no within-class spread to model,
            return NearestCentroid().fit(support)  # and the shrunk covariance is the identity: nearest mean
        model = LinearDiscriminantAnalysis(
            solver="lsqr", shrinkage="auto", priors=np.full(len(support.labels), 1.0 / len(support.labels))
        )
        with warnings.catch_warnings():  # a one-example class: sklearn warns, its shrunk covariance is 0
            warnings.filterwarnings("ignore", "Only one sample available", UserWarning)
            model.fit(support.emb[rows], cols)
        return _Lda(model, np.searchsorted(model.classes_, np.arange(len(support.labels))))


class NearestCentroid:
    """Cosine to the L2-normalised class means (the ``prototype`` predictor's rule, as a `Method`)."""

    name = "nearest_centroid"

    def fit(self, support: Support) -> Fitted:
        return _Plain(support.centroids())


@dataclass
class _Plain:
    centroids: np.ndarray

    def scores(self, queries: np.ndarray) -> np.ndarray:
        return queries @ self.centroids.T


class _Single:
    def scores(self, queries: np.ndarray) -> np.ndarray:
        return np.ones((len(queries), 1))


METHODS: dict[str, type] = {m.name: m for m in (SimpleShot, TipAdapter, ShrinkageLda)}


@dataclass
class _Vote:
    posteriors = True  # vote shares
    emb: np.ndarray
    onehot: np.ndarray
    k: int
    temperature: float

    def scores(self, queries: np.ndarray) -> np.ndarray:
        sims = queries @ self.emb.T
        k = min(self.k, len(self.emb))
        near = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        weights = vote_weights(np.take_along_axis(sims, near, 1), self.temperature)
        return np.einsum("mk,mkl->ml", weights, self.onehot[near]) / weights.sum(1, keepdims=True)


@dataclass
class NeighbourVote:
    """The knn predictor's similarity-weighted vote of the ``k`` nearest support rows, by exact search
    over the support (for a support in another space than the index's: `rag_flamingo.shift`).
    Its scores are vote shares (class probabilities)."""

    k: int = 1
    temperature: float = 0.1
    name = "knn"

    def fit(self, support: Support) -> Fitted:
        return _Vote(support.emb, support.onehot, self.k, self.temperature)


def vote_weights(sims: np.ndarray | Sequence[float], temperature: float) -> np.ndarray:
    """The neighbour vote's weights ``exp((s - s_max) / temperature)`` of similarities ``sims`` [..., k]."""
    sims = np.asarray(sims, np.float64)
    return np.exp((sims - sims.max(axis=-1, keepdims=True)) / temperature)


def probabilities(fitted: Fitted, queries: np.ndarray, temperature: float) -> np.ndarray:
    """Class probabilities [m, labels]: a posterior model's scores, else a softmax of the scores at
    ``temperature`` (for cosines: the class centroids voting with the neighbour vote's weights)."""
    scores = fitted.scores(queries)
    if getattr(fitted, "posteriors", False):
        return scores
    weights = vote_weights(scores, temperature)
    return weights / weights.sum(1, keepdims=True)


class Fusion:
    """``(1 - w) p_base + w p_vote`` (module docstring); ``w`` fixed, or (``weight`` None) from ``WEIGHTS``
    by cross-validation accuracy on the support: base probabilities from ``FOLDS`` seeded folds (the base refitted
    without each fold), the vote of each row's ``k`` nearest other support rows (leave-one-out, as
    retrieval leaves a query's own recording out). Ties: the smallest ``w`` (the base alone first)."""

    WEIGHTS = tuple(i / 10 for i in range(11))
    FOLDS = 5
    MAX_SELECT = 2000  # cross-validation on at most this many support rows (a seeded subset)

    def __init__(
        self, base: Method, temperature: float = FusionOptions.temperature, weight: float | None = FusionOptions.weight
    ):
        if temperature <= 0:
            raise ConfigError(f"fusion temperature must be > 0, got {temperature}")
        if weight is not None and not 0 <= weight <= 1:
            raise ConfigError(f"fusion weight must be in [0, 1] (or null: chosen on the store), got {weight}")
        self.base, self.temperature, self.fixed = base, float(temperature), weight

    def weight(self, support: Support, k: int) -> float:
        """The vote's share ``w``: the fixed one, else by cross-validation on ``support`` (`Fusion`)."""
        if self.fixed is not None:
            return float(self.fixed)
        n = len(support.emb)
        rng = np.random.default_rng(0)
        rows = np.arange(n) if n <= self.MAX_SELECT else np.sort(rng.choice(n, self.MAX_SELECT, replace=False))
        if len(rows) < 2 or k < 1:
            return 0.0
        column = {lab: j for j, lab in enumerate(support.labels)}
        base = np.zeros((len(rows), len(support.labels)))
        for fold in np.array_split(rng.permutation(len(rows)), min(self.FOLDS, len(rows))):
            rest = support.without(support.rows[rows[fold]].tolist())
            if not rest.labels:
                continue
            probs = probabilities(self.base.fit(rest), support.emb[rows[fold]], self.temperature)
            base[np.ix_(fold, np.array([column[lab] for lab in rest.labels]))] = probs
        sims = support.emb[rows] @ support.emb.T
        sims[np.arange(len(rows)), rows] = -np.inf  # a row is not its own neighbour
        k = min(k, n - 1)
        near = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        weights = vote_weights(np.take_along_axis(sims, near, 1), self.temperature)
        vote = np.einsum("rk,rkl->rl", weights, support.onehot[near]) / weights.sum(1, keepdims=True)
        truth = support.onehot[rows]
        best, choice = -1.0, 0.0
        for w in self.WEIGHTS:
            guess = np.argmax((1 - w) * base + w * vote, axis=1)
            accuracy = float(truth[np.arange(len(rows)), guess].mean())
            if accuracy > best + 1e-12:
                best, choice = accuracy, w
        return choice


@dataclass
class _Fused:
    posteriors = True  # a share of two probability vectors
    base: Fitted
    vote: Fitted
    weight: float
    temperature: float

    def scores(self, queries: np.ndarray) -> np.ndarray:
        p_base = probabilities(self.base, queries, self.temperature)
        return (1 - self.weight) * p_base + self.weight * self.vote.scores(queries)


@dataclass
class FusedVote:
    """`Fusion`'s blend as a `Method`: the base's probabilities and the vote of the ``k`` nearest
    support rows by exact search (for a support in another space than the index's: `rag_flamingo.shift`)."""

    fusion: Fusion
    k: int
    name = "fusion"

    def fit(self, support: Support) -> Fitted:
        vote = NeighbourVote(self.k, self.fusion.temperature).fit(support)
        w = self.fusion.weight(support, self.k)
        return _Fused(self.fusion.base.fit(support), vote, w, self.fusion.temperature)

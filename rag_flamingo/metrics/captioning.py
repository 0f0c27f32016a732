"""Captioning metrics: CIDEr-D, BLEU-4, ROUGE-L (offline, pure Python/numpy) and SPICE/SPIDEr via
aac-metrics when it and Java are available.

Why hand-written: aac-metrics (the maintained implementation) depends on msclap, which pins numpy<2
and so cannot be installed beside this project's stack; CIDEr-D/BLEU/ROUGE-L are short, exactly
specified algorithms (coco-caption, as ported by aac-metrics) and are reproduced here definition by
definition:

- CIDEr-D: n-grams n=1..4, TF-IDF with document frequencies from the *references of the evaluated
  corpus* (IDF = log(#items) - log(max(1, df))), clipped cosine similarity per n, Gaussian length
  penalty exp(-(Δ²)/(2σ²)) with σ = 6, mean over n, mean over references, × 10; corpus score = mean
  over items. As in coco-caption, the "length" used for Δ is the number of *bigrams* of a sentence
  (words - 1), not its number of words.
- BLEU-4: corpus BLEU (clipped n-gram counts summed over the corpus, geometric mean of the 1..4
  precisions, brevity penalty with the *closest* reference length per item, coco's 1e-15/1e-9
  smoothing); per-item scores use the same formula on one item.
- ROUGE-L: per item, LCS with each reference; precision and recall are each maximised over the
  references, F = (1+β²)PR / (R+β²P) with β = 1.2; corpus score = mean over items.

Inputs are tokenised with `text.tokenize` (lowercase, punctuation stripped), not the Java PTB
tokenizer that aac-metrics' ``evaluate`` applies; see `text.tokenize` for the differences.
Given the same token lists, the scores equal aac-metrics' ``cider_d``/``bleu``/``rouge_l``
(checked in tests against values computed with aac-metrics 0.6.0).
"""

from __future__ import annotations

import logging
import math
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from ..errors import ConfigError
from .text import tokenize

logger = logging.getLogger(__name__)

Tokenizer = Callable[[str], list[str]]
Gram = tuple[str, ...]
TfIdf = tuple[list[dict[Gram, float]], np.ndarray, int]  # per-n TF-IDF vectors, their norms, #bigrams


def _check(candidates: Sequence[str], mult_references: Sequence[Sequence[str]]) -> None:
    if len(candidates) != len(mult_references):
        raise ConfigError(
            f"{len(candidates)} candidates but {len(mult_references)} reference lists; "
            f"give one list of references per candidate"
        )
    for i, refs in enumerate(mult_references):
        if isinstance(refs, str) or len(refs) == 0:
            raise ConfigError(f"item {i}: references must be a non-empty list of strings, got {refs!r}")


def _ngrams(words: list[str], n: int) -> Counter:
    counts: Counter = Counter()
    for size in range(1, n + 1):
        for i in range(len(words) - size + 1):
            counts[tuple(words[i : i + size])] += 1
    return counts


# ----------------------------------------------------------------------------- CIDEr-D


def _tfidf(counts: Counter, df: Counter, log_items: float, n: int) -> TfIdf:
    vec: list[dict[Gram, float]] = [{} for _ in range(n)]
    norm = np.zeros(n)
    bigrams = 0
    for gram, tf in counts.items():
        size = len(gram) - 1
        value = tf * (log_items - math.log(max(1.0, df[gram])))
        vec[size][gram] = value
        norm[size] += value * value
        if size == 1:
            bigrams += tf
    return vec, np.sqrt(norm), bigrams


def _cider_sim(cand: TfIdf, ref: TfIdf, n: int, sigma: float) -> np.ndarray:
    (c_vec, c_norm, c_len), (r_vec, r_norm, r_len) = cand, ref
    penalty = math.exp(-((c_len - r_len) ** 2) / (2 * sigma**2))
    sims = np.zeros(n)
    for size in range(n):
        dot = sum(
            min(value, r_vec[size].get(gram, 0.0)) * r_vec[size].get(gram, 0.0) for gram, value in c_vec[size].items()
        )
        if c_norm[size] != 0 and r_norm[size] != 0:
            dot /= c_norm[size] * r_norm[size]
        sims[size] = dot * penalty
    return sims


def cider_d(
    candidates: Sequence[str],
    mult_references: Sequence[Sequence[str]],
    n: int = 4,
    sigma: float = 6.0,
    tokenizer: Tokenizer = tokenize,
) -> tuple[float, list[float]]:
    """(corpus CIDEr-D, per-item scores). Needs >= 2 items: the IDF comes from the corpus."""
    _check(candidates, mult_references)
    if len(candidates) < 2:
        raise ConfigError(
            "CIDEr-D needs at least 2 items (its IDF is computed from the evaluated "
            "corpus' references); evaluate a larger set"
        )
    cands = [_ngrams(tokenizer(c), n) for c in candidates]
    refs = [[_ngrams(tokenizer(r), n) for r in rs] for rs in mult_references]
    df: Counter = Counter()
    for rs in refs:
        for gram in set().union(*[r.keys() for r in rs]):
            df[gram] += 1
    log_items = math.log(float(len(refs)))
    scores = []
    for cand, rs in zip(cands, refs):
        c = _tfidf(cand, df, log_items, n)
        total = sum(_cider_sim(c, _tfidf(r, df, log_items, n), n, sigma) for r in rs)
        scores.append(float(np.mean(total)) / len(rs) * 10.0)
    return float(np.mean(scores)), scores


# ----------------------------------------------------------------------------- BLEU

_TINY, _SMALL = 1e-15, 1e-9


class _BleuStats(NamedTuple):
    test_len: int
    ref_len: int
    guess: list[int]  # candidate n-grams per n
    correct: list[int]  # clipped matching n-grams per n


def _bleu_stats(cand: list[str], refs: list[list[str]], n: int) -> _BleuStats:
    counts = _ngrams(cand, n)
    max_ref: dict = {}
    for ref in refs:
        for gram, c in _ngrams(ref, n).items():
            max_ref[gram] = max(max_ref.get(gram, 0), c)
    correct = [0] * n
    for gram, c in counts.items():
        correct[len(gram) - 1] += min(c, max_ref.get(gram, 0))
    guess = [max(0, len(cand) - k + 1) for k in range(1, n + 1)]
    ref_len = min((abs(len(r) - len(cand)), len(r)) for r in refs)[1]  # closest, ties -> shorter
    return _BleuStats(len(cand), ref_len, guess, correct)


def _bleu_from(stats: _BleuStats, n: int) -> float:
    score = 1.0
    for k in range(n):
        score *= (stats.correct[k] + _TINY) / (stats.guess[k] + _SMALL)
    score **= 1.0 / n
    ratio = (stats.test_len + _TINY) / (stats.ref_len + _SMALL)
    return score * math.exp(1 - 1 / ratio) if ratio < 1 else score


def bleu(
    candidates: Sequence[str], mult_references: Sequence[Sequence[str]], n: int = 4, tokenizer: Tokenizer = tokenize
) -> tuple[float, list[float]]:
    """(corpus BLEU-n, per-item BLEU-n)."""
    _check(candidates, mult_references)
    stats = [_bleu_stats(tokenizer(c), [tokenizer(r) for r in rs], n) for c, rs in zip(candidates, mult_references)]
    items = [_bleu_from(s, n) for s in stats]
    totals = _BleuStats(
        sum(s.test_len for s in stats),
        sum(s.ref_len for s in stats),
        [sum(s.guess[k] for s in stats) for k in range(n)],
        [sum(s.correct[k] for s in stats) for k in range(n)],
    )
    return _bleu_from(totals, n), items


# ----------------------------------------------------------------------------- ROUGE-L


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(
    candidates: Sequence[str],
    mult_references: Sequence[Sequence[str]],
    beta: float = 1.2,
    tokenizer: Tokenizer = tokenize,
) -> tuple[float, list[float]]:
    """(corpus ROUGE-L = mean of items, per-item ROUGE-L F-scores)."""
    _check(candidates, mult_references)
    scores = []
    for cand, refs in zip(candidates, mult_references):
        c = tokenizer(cand)
        precision = recall = 0.0
        for ref in refs:
            r = tokenizer(ref)
            lcs = _lcs(c, r)
            precision = max(precision, lcs / len(c) if c else 0.0)
            recall = max(recall, lcs / len(r) if r else 0.0)
        ok = precision != 0 and recall != 0
        scores.append(((1 + beta**2) * precision * recall) / (recall + beta**2 * precision) if ok else 0.0)
    return float(np.mean(scores)) if scores else 0.0, scores


# ----------------------------------------------------------------------------- SPICE / SPIDEr


def spice_unavailable_reason() -> str | None:
    """Why SPICE cannot run here (None when aac-metrics and Java are available)."""
    try:
        import aac_metrics.functional.spice  # noqa: F401
    except Exception as exc:  # ImportError, or msclap/torchaudio import failures inside aac-metrics
        return (
            f"aac-metrics is not importable ({type(exc).__name__}: {exc}); install it with "
            f"`pip install aac-metrics && aac-metrics-download` (it pins numpy<2 via msclap)"
        )
    if shutil.which("java") is None:
        return "SPICE needs Java 8-13 on PATH (aac-metrics runs the SPICE-1.0 jar)"
    return None


def spice(
    candidates: Sequence[str], mult_references: Sequence[Sequence[str]], tokenizer: Tokenizer = tokenize, **kwargs
) -> tuple[float, list[float]]:
    """SPICE through aac-metrics (inputs tokenised and re-joined like the other metrics)."""
    from aac_metrics.functional.spice import spice as aac_spice

    cands = [" ".join(tokenizer(c)) for c in candidates]
    refs = [[" ".join(tokenizer(r)) for r in rs] for rs in mult_references]
    corpus, items = aac_spice(cands, refs, return_all_scores=True, **kwargs)
    return float(corpus["spice"]), [float(x) for x in items["spice"]]


def captioning_metrics(
    candidates: Sequence[str], mult_references: Sequence[Sequence[str]], use_spice: bool | str = "auto"
) -> dict:
    """CIDEr-D, BLEU-4, ROUGE-L and, where SPICE runs, SPICE and SPIDEr = (CIDEr-D + SPICE) / 2.

    Returns ``{"n", "cider_d", "bleu_4", "rouge_l", "spice", "spider", "unavailable", "per_item"}``;
    ``spice``/``spider`` are None and ``unavailable`` names the reason when SPICE cannot run
    (``use_spice="auto"``), or always when ``use_spice=False``; with fewer than 2 items CIDEr-D
    (and so SPIDEr) is None too.
    """
    _check(candidates, mult_references)
    bleu4, bleu_items = bleu(candidates, mult_references)
    rouge, rouge_items = rouge_l(candidates, mult_references)
    per_item: dict[str, list[float]] = {"bleu_4": bleu_items, "rouge_l": rouge_items}
    out: dict[str, Any] = {
        "n": len(candidates),
        "cider_d": None,
        "bleu_4": bleu4,
        "rouge_l": rouge,
        "spice": None,
        "spider": None,
        "unavailable": {},
        "per_item": per_item,
    }
    if len(candidates) < 2:  # CIDEr-D's IDF needs a corpus; SPIDEr needs CIDEr-D
        too_few = f"CIDEr-D needs at least 2 items (got {len(candidates)})"
        out["unavailable"] = {"cider_d": too_few, "spice": too_few, "spider": too_few}
        return out
    cider, cider_items = cider_d(candidates, mult_references)
    out["cider_d"], per_item["cider_d"] = cider, cider_items
    reason = "disabled (use_spice=False)" if use_spice is False else spice_unavailable_reason()
    spice_score: float | None = None
    if reason is None:
        try:
            spice_score, per_item["spice"] = spice(candidates, mult_references)
        except Exception as exc:  # missing jars, Java version, timeouts: report, keep the other metrics
            reason = f"SPICE failed ({type(exc).__name__}: {exc}); run `aac-metrics-download`"
            if use_spice is True:
                raise
    if spice_score is not None:
        out["spice"] = spice_score
        out["spider"] = (cider + spice_score) / 2
        per_item["spider"] = [(a + b) / 2 for a, b in zip(cider_items, per_item["spice"])]
    else:
        out["unavailable"] = {"spice": reason, "spider": f"needs SPICE: {reason}"}
        if use_spice is True:
            raise ConfigError(f"SPICE requested but unavailable: {reason}")
        logger.info("SPICE/SPIDEr not computed: %s", reason)
    return out


# ----------------------------------------------------------------------------- bootstrap


def captioning_statistic(
    candidates: Sequence[str],
    mult_references: Sequence[Sequence[str]],
    per_item: dict[str, list[float]],
    n: int = 4,
    sigma: float = 6.0,
    tokenizer: Tokenizer = tokenize,
) -> Callable[[np.ndarray], dict[str, float | None]]:
    """``weights -> {cider_d, bleu_4, rouge_l, spider}`` on a resampled corpus (`bootstrap.bootstrap`).

    CIDEr-D is recomputed from the resample: its document frequencies and corpus size count each
    query as often as it was drawn. Since IDF >= 0, every n-gram term of CIDEr-D's clipped dot
    product and norms is IDF² times a count that does not depend on the corpus, so each (query,
    reference, n) similarity is a ratio of sparse dot products with the vector IDF² (computed once
    here, evaluated per resample). BLEU-4 sums the drawn queries' n-gram statistics; ROUGE-L (and
    SPICE for SPIDEr, from ``per_item``) are means of per-item scores. All weights 1: the metrics.
    """
    from scipy import sparse

    _check(candidates, mult_references)
    cand_tokens = [tokenizer(c) for c in candidates]
    ref_tokens = [[tokenizer(r) for r in rs] for rs in mult_references]
    bleu_stats = [_bleu_stats(c, rs, n) for c, rs in zip(cand_tokens, ref_tokens)]
    bleu_lens = np.array([[s.test_len, s.ref_len] for s in bleu_stats], dtype=np.float64)
    bleu_guess = np.array([s.guess for s in bleu_stats], dtype=np.float64)
    bleu_correct = np.array([s.correct for s in bleu_stats], dtype=np.float64)
    rouge = np.asarray(per_item["rouge_l"], dtype=np.float64)
    spice_items = np.asarray(per_item["spice"], dtype=np.float64) if per_item.get("spice") else None

    vocab: dict[Gram, int] = {}

    def gid(gram: Gram) -> int:
        return vocab.setdefault(gram, len(vocab))

    doc_rows, doc_cols = [], []
    a_data, c_data, r_data = [], [], []  # (row, col, value) triples of the three matrices
    penalty, row_item = [], []
    refs_per_item = np.array([len(rs) for rs in ref_tokens], dtype=np.float64)
    row = 0
    for i, (cand, refs) in enumerate(zip(cand_tokens, ref_tokens)):
        c_counts = _ngrams(cand, n)
        r_counts = [_ngrams(r, n) for r in refs]
        for gram in set().union(*[r.keys() for r in r_counts]):
            doc_rows.append(i)
            doc_cols.append(gid(gram))
        c_len = max(0, len(cand) - 1)
        for rc, ref in zip(r_counts, refs):
            pen = math.exp(-((c_len - max(0, len(ref) - 1)) ** 2) / (2 * sigma**2))
            for size in range(1, n + 1):
                for gram, tf in c_counts.items():
                    if len(gram) == size:
                        c_data.append((row, gid(gram), float(tf * tf)))
                        if gram in rc:
                            a_data.append((row, gid(gram), float(min(tf, rc[gram]) * rc[gram])))
                for gram, tf in rc.items():
                    if len(gram) == size:
                        r_data.append((row, gid(gram), float(tf * tf)))
                penalty.append(pen)
                row_item.append(i)
                row += 1

    def matrix(data: list[tuple[int, int, float]]):
        rows, cols, vals = (list(x) for x in zip(*data)) if data else ([], [], [])
        return sparse.csr_matrix((vals, (rows, cols)), shape=(row, len(vocab)))

    docs = sparse.csr_matrix(
        (np.ones(len(doc_rows)), (doc_rows, doc_cols)), shape=(len(cand_tokens), len(vocab))
    ).T.tocsr()
    dot_m, cand_m, ref_m = matrix(a_data), matrix(c_data), matrix(r_data)
    pen_v, item_v = np.asarray(penalty), np.asarray(row_item)
    norm = 10.0 / (n * refs_per_item)

    def stat(w: np.ndarray) -> dict[str, float | None]:
        total = w.sum()
        out: dict[str, float | None] = {"cider_d": None, "spider": None}
        if len(candidates) >= 2:
            idf = math.log(total) - np.log(np.maximum(1.0, docs @ w))
            q = idf * idf
            dot, cn, rn = dot_m @ q, cand_m @ q, ref_m @ q
            denom = np.sqrt(cn * rn)
            sim = np.where(denom > 0, dot / np.where(denom > 0, denom, 1.0), dot) * pen_v
            items = np.bincount(item_v, weights=sim, minlength=len(candidates)) * norm
            cider = float(w @ items / total)
            out["cider_d"] = cider
            if spice_items is not None:
                out["spider"] = (cider + float(w @ spice_items / total)) / 2
        lens = w @ bleu_lens
        sums = _BleuStats(lens[0], lens[1], list(w @ bleu_guess), list(w @ bleu_correct))
        out["bleu_4"] = float(_bleu_from(sums, n))
        out["rouge_l"] = float(w @ rouge / total)
        return out

    return stat

"""95% bootstrap intervals of every metric, resampling queries.

A resample draws the N queries of a (predictor, shots) group N times with replacement (numpy's
``default_rng(seed)``); the statistic gets the draw as *weights* (how often each query was drawn)
and recomputes the metric on the resampled set exactly as the metric defines it: corpus-level
metrics are recomputed from the resampled corpus (CIDEr-D's document frequencies and corpus size,
BLEU-4's summed n-gram counts, macro-F1's per-class counts), never averaged from per-item scores.
With all weights 1 a statistic returns the metric itself (tested against the metric functions).
The interval is the percentile interval (2.5th and 97.5th percentiles of the resampled values).

Statistics (``weights -> {metric: value}``) are built from the per-item results of one scoring:
`mean_statistic` (per-item scores: accuracy, ROUGE-L), `classification_statistic` (accuracy,
macro-F1), `tagging_statistic` (micro/macro F1, mAP), and `captioning.captioning_statistic`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import ConfigError

Statistic = Callable[[np.ndarray], dict[str, float | None]]

RESAMPLES = 1000
SEED = 0
LEVEL = 0.95


def bootstrap(
    statistic: Statistic, n: int, resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL
) -> tuple[dict[str, list[float]], float]:
    """(``{metric: [low, high]}``, seconds spent). Metrics a resample cannot compute (None) are left
    out of that resample; a metric with no value in any resample gets no interval."""
    if n < 1:
        raise ConfigError("a bootstrap interval needs at least one query")
    if not 0 < level < 1:
        raise ConfigError(f"bootstrap level must be in (0, 1), got {level}")
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        weights = np.bincount(rng.integers(0, n, size=n), minlength=n).astype(np.float64)
        for key, value in statistic(weights).items():
            if value is not None and np.isfinite(value):
                draws.setdefault(key, []).append(float(value))
    tail = (1 - level) / 2 * 100
    intervals = {
        key: [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]
        for key, values in draws.items()
    }
    return intervals, time.perf_counter() - start


def mean_statistic(values: dict[str, Sequence[float]]) -> Statistic:
    """Metrics that are means of per-item values (accuracy from 0/1 correctness, ROUGE-L)."""
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}

    def stat(w: np.ndarray) -> dict[str, float | None]:
        return {k: float(w @ a / w.sum()) for k, a in arrays.items()}

    return stat


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Per-class F1 = 2tp / (2tp + fp + fn), 0 where undefined (scikit-learn's zero_division=0)."""
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(denom, dtype=np.float64), where=denom > 0)


def classification_statistic(truth: Sequence[str], predicted: Sequence[str | None]) -> Statistic:
    """accuracy and macro-F1 (over the classes occurring in the resample's references or matched
    predictions, as `classification.classification_metrics`); None = unmatched output."""
    classes = sorted(set(truth) | {p for p in predicted if p is not None})
    index = {c: i for i, c in enumerate(classes)}
    t = np.array([index[x] for x in truth])
    p = np.array([-1 if x is None else index[x] for x in predicted])
    hit = (p == t).astype(np.float64)
    k = len(classes)
    onehot_t = np.eye(k)[t]
    onehot_p = np.zeros((len(p), k))
    onehot_p[p >= 0, p[p >= 0]] = 1.0

    def stat(w: np.ndarray) -> dict[str, float | None]:
        tp = (w * hit) @ onehot_t
        support = w @ onehot_t
        predicted_count = w @ onehot_p
        used = (support > 0) | (predicted_count > 0)
        f1 = _f1(tp, predicted_count - tp, support - tp)
        return {"accuracy": float(w @ hit / w.sum()), "macro_f1": float(f1[used].mean()) if used.any() else 0.0}

    return stat


def tagging_statistic(
    truth: np.ndarray, predicted: np.ndarray | None, scores: np.ndarray | None, approx: np.ndarray | None = None
) -> Statistic:
    """micro-F1 and macro-F1 (over labels occurring in the resample's references or predictions) from
    binary [N, C] matrices, mAP from scores [N, C] (a resampled query counted as often as drawn), and the
    approximate F1 from per-query counts [N, 4] (`multilabel.approximate_f1`: matched pieces, pieces,
    matched labels, labels)."""
    from scipy import sparse

    truth = np.asarray(truth, dtype=np.float64)
    t_sparse = sparse.csr_matrix(truth).T.tocsr()
    counts = None
    if predicted is not None:
        pred = np.asarray(predicted, dtype=np.float64)
        counts = [sparse.csr_matrix(m).T.tocsr() for m in (truth * pred, pred * (1 - truth), truth * (1 - pred), pred)]
    ap = average_precision_statistic(truth, np.asarray(scores, dtype=np.float64)) if scores is not None else None

    def stat(w: np.ndarray) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        if counts is not None:
            tp, fp, fn, predicted_count = (m @ w for m in counts)
            used = (t_sparse @ w > 0) | (predicted_count > 0)
            total = 2 * tp.sum() + fp.sum() + fn.sum()
            out["micro_f1"] = float(2 * tp.sum() / total) if total > 0 else 0.0
            out["macro_f1"] = float(_f1(tp, fp, fn)[used].mean()) if used.any() else 0.0
        if ap is not None:
            out["mAP"] = ap(w)
        if approx is not None:
            hit_p, n_p, hit_t, n_t = np.asarray(approx, dtype=np.float64).T @ w
            precision = hit_p / n_p if n_p > 0 else 0.0
            recall = hit_t / n_t if n_t > 0 else 0.0
            out["approx_f1"] = float(2 * precision * recall / (precision + recall)) if precision + recall > 0 else 0.0
        return out

    return stat


def average_precision_statistic(truth: np.ndarray, scores: np.ndarray) -> Callable[[np.ndarray], float | None]:
    """``weights -> mAP``: the mean over labels with a positive of scikit-learn's step-wise average
    precision (ties in score form one threshold), each item counted ``w`` times. The score order and
    the tie groups do not depend on the weights: sorted once, each resample is cumulative sums.
    AP = sum over items of w·y / positives x the precision at the end of the item's tie group."""
    n, c = truth.shape
    order = np.argsort(-scores, axis=0, kind="mergesort")
    y = np.take_along_axis(truth, order, axis=0)
    s = np.take_along_axis(scores, order, axis=0)
    end = np.ones((n, c), dtype=bool)
    end[:-1] = s[1:] != s[:-1]  # the last row of each tie group
    group_end = np.where(end, np.arange(n)[:, None], n)  # each row: the index of its group's last row
    group_end = np.flip(np.minimum.accumulate(np.flip(group_end, axis=0), axis=0), axis=0)

    def ap(w: np.ndarray) -> float | None:
        ws = w[order]
        hits = ws * y
        tp = np.cumsum(hits, axis=0)
        seen = np.cumsum(ws, axis=0)
        precision = np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)
        at_end = np.take_along_axis(precision, group_end, axis=0)
        positives = hits.sum(axis=0)
        cols = positives > 0
        if not cols.any():
            return None
        return float(np.mean((hits * at_end).sum(axis=0)[cols] / positives[cols]))

    return ap


def weighted_map(truth: np.ndarray, scores: np.ndarray, w: np.ndarray) -> float | None:
    """mAP with each item counted ``w`` times (`average_precision_statistic` for one weighting)."""
    return average_precision_statistic(np.asarray(truth, dtype=np.float64), np.asarray(scores, dtype=np.float64))(w)

"""Multi-label (tagging) metrics: micro/macro F1 from predicted label sets, mAP from scores.

Free-text outputs (``"dog, bark, animal"``) are split at commas/semicolons and each piece is
matched to the label vocabulary with `text.match_option`; pieces naming no label are dropped from
the prediction and reported (count + examples). Macro-F1 averages per-label F1 over the labels that
occur in the references or the predictions (scikit-learn, ``zero_division=0``). mAP needs scores
[N, C] (e.g. per-label log-likelihoods from the model): the mean over labels with at least one
positive of scikit-learn's average precision; it is None without scores.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import ConfigError
from .classification import canonical_reference
from .text import match_option, normalize

_SPLIT = re.compile(r"[,;\n]")


@dataclass
class MultilabelResult:
    n: int
    micro_f1: float
    macro_f1: float
    micro_precision: float
    micro_recall: float
    mAP: float | None
    unmatched: int  # predicted pieces naming no label
    unmatched_examples: list[dict] = field(default_factory=list)
    predictions: list[list[str]] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        return asdict(self)


def parse_labels(output: str | Sequence[str], labels: Sequence[str]) -> tuple[list[str], list[str]]:
    """(matched labels in output order without repeats, unmatched pieces) of one output."""
    pieces = _SPLIT.split(output) if isinstance(output, str) else list(output)
    found, missed = [], []
    for piece in pieces:
        if not piece.strip():
            continue
        label = match_option(piece, labels)
        if label is None:
            missed.append(piece.strip())
        elif label not in found:
            found.append(label)
    return found, missed


def _binarize(sets: Sequence[Sequence[str]], index: dict[str, int]) -> np.ndarray:
    out = np.zeros((len(sets), len(index)), dtype=np.int64)
    for i, labels in enumerate(sets):
        for label in labels:
            out[i, index[label]] = 1
    return out


def mean_average_precision(truth: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    cols = [c for c in range(truth.shape[1]) if truth[:, c].any()]
    if not cols:
        raise ConfigError("mAP needs at least one positive label in the references")
    return float(np.mean([average_precision_score(truth[:, c], scores[:, c]) for c in cols]))


def multilabel_metrics(
    outputs: Sequence[str | Sequence[str]] | None,
    references: Sequence[Sequence[str]],
    labels: Sequence[str],
    scores: np.ndarray | None = None,
    max_examples: int = 10,
) -> MultilabelResult:
    """``outputs``: free text or label lists per item (None: scores only); ``labels``: the vocabulary
    (column order of ``scores``)."""
    from sklearn.metrics import f1_score, precision_score, recall_score

    labels = list(dict.fromkeys(labels))
    index = {label: i for i, label in enumerate(labels)}
    truth_sets = [[canonical_reference(r, labels, i) for r in refs] for i, refs in enumerate(references)]
    truth = _binarize(truth_sets, index)
    result = MultilabelResult(
        n=len(references),
        micro_f1=float("nan"),
        macro_f1=float("nan"),
        micro_precision=float("nan"),
        micro_recall=float("nan"),
        mAP=None,
        unmatched=0,
    )
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != truth.shape:
            raise ConfigError(f"scores have shape {scores.shape}, expected {truth.shape} (items x labels)")
        result.mAP = mean_average_precision(truth, scores)
    if outputs is None:
        return result
    if len(outputs) != len(references):
        raise ConfigError(f"{len(outputs)} outputs but {len(references)} reference label lists")
    for i, out in enumerate(outputs):
        found, missed = parse_labels(out, labels)
        result.predictions.append(found)
        result.unmatched += len(missed)
        if missed and len(result.unmatched_examples) < max_examples:
            result.unmatched_examples.append({"index": i, "output": out, "unmatched": missed})
    pred = _binarize(result.predictions, index)
    used = [c for c in range(len(labels)) if truth[:, c].any() or pred[:, c].any()]
    kw = {"zero_division": 0}
    result.micro_f1 = float(f1_score(truth, pred, average="micro", **kw))
    result.micro_precision = float(precision_score(truth, pred, average="micro", **kw))
    result.micro_recall = float(recall_score(truth, pred, average="micro", **kw))
    result.macro_f1 = float(f1_score(truth, pred, labels=used, average="macro", **kw)) if used else 0.0
    return result


# ----------------------------------------------------------------------------- approximate F1


@dataclass
class ApproximateF1Result:
    """F1 of generated tags against each item's true labels under `approximate_match` (micro over the
    set). ``counts``: per item ``[matched pieces, pieces, matched labels, labels]``."""

    n: int
    approx_f1: float
    approx_precision: float
    approx_recall: float
    counts: list[list[int]] = field(default_factory=list, repr=False)


def approximate_match(piece: str, label: str) -> bool:
    """Whether a generated tag names a true label, approximately: after `text.normalize` (lowercase,
    punctuation and underscores to spaces), equal, equal without spaces, or one found as whole words
    in the other (``guitar`` ~ ``Acoustic_guitar``, ``dog barking`` ~ ``dog``; ``animal`` is not
    ``animals``)."""
    a, b = normalize(piece), normalize(label)
    if not a or not b:
        return False
    return a == b or a.replace(" ", "") == b.replace(" ", "") or f" {b} " in f" {a} " or f" {a} " in f" {b} "


def approximate_counts(output: str | Sequence[str], labels: Sequence[str]) -> list[int]:
    """``[matched pieces, pieces, matched labels, labels]`` of one item: its output split at commas,
    semicolons and newlines (repeats after normalisation counted once), each piece matched against
    the item's own true labels (never the vocabulary)."""
    raw = _SPLIT.split(output) if isinstance(output, str) else list(output)
    pieces = list(dict.fromkeys(normalize(p) for p in raw if normalize(p)))
    truth = list(dict.fromkeys(str(lab) for lab in labels))
    hit_pieces = sum(any(approximate_match(p, t) for t in truth) for p in pieces)
    hit_labels = sum(any(approximate_match(p, t) for p in pieces) for t in truth)
    return [hit_pieces, len(pieces), hit_labels, len(truth)]


def approximate_f1_from_counts(counts: np.ndarray) -> tuple[float, float, float]:
    """(F1, precision, recall) from summed counts ``[matched pieces, pieces, matched labels, labels]``:
    precision = matched pieces / pieces, recall = matched labels / labels (0 when nothing is there)."""
    hit_p, n_p, hit_t, n_t = (float(x) for x in counts)
    precision = hit_p / n_p if n_p > 0 else 0.0
    recall = hit_t / n_t if n_t > 0 else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return f1, precision, recall


def approximate_f1(outputs: Sequence[str | Sequence[str]], references: Sequence[Sequence[str]]) -> ApproximateF1Result:
    """OUR reading of AF1's FSD50k "approximate F1" (F1_approx): AF1 publishes the figure (69.7) but
    neither the poster nor the released code defines it (docs/af1_prompts.md, "FSD50k approximate F1").
    A generated tag is correct when it approximately matches one of the item's true labels
    (`approximate_match`), a true label is found when some generated tag approximately matches it;
    precision and recall are pooled over all items (micro), F1 their harmonic mean. Unlike ``micro_f1``,
    tags that name no label of the vocabulary count as false positives, and no tag is snapped to the
    vocabulary first."""
    if len(outputs) != len(references):
        raise ConfigError(f"{len(outputs)} outputs but {len(references)} reference label lists")
    counts = [approximate_counts(out, refs) for out, refs in zip(outputs, references, strict=True)]
    total = np.asarray(counts, dtype=np.float64).reshape(-1, 4).sum(axis=0)
    f1, precision, recall = approximate_f1_from_counts(total)
    return ApproximateF1Result(len(references), f1, precision, recall, counts)

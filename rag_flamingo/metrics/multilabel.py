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
from .text import match_option

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

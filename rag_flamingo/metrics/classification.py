"""Single-label classification metrics on free-text outputs: accuracy and macro-F1.

Each output is matched to the option set with `text.match_option` (normalised exact match, then
exact ignoring spaces, then unique containment). Unmatched outputs count as wrong (a miss for the
true class, a false positive for no class) and are reported as a count plus examples. Macro-F1 is
the unweighted mean of per-class F1 over the classes that occur in the references or among the
matched predictions (scikit-learn's definition with ``zero_division=0``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from ..errors import ConfigError
from .text import match_option, normalize

UNMATCHED = "\x00unmatched"


@dataclass
class ClassificationResult:
    n: int
    accuracy: float
    macro_f1: float
    correct: int
    unmatched: int
    unmatched_examples: list[dict] = field(default_factory=list)
    per_class: dict[str, dict] = field(default_factory=dict)
    predictions: list[str | None] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        return asdict(self)


def canonical_reference(reference: str, options: Sequence[str], index: int) -> str:
    """The option a reference label names (normalised exact match), or ConfigError."""
    ref = normalize(reference)
    for opt in options:
        if normalize(opt) == ref:
            return opt
    raise ConfigError(
        f"item {index}: reference label {reference!r} is not one of the {len(options)} options; "
        f"pass the full label set as options"
    )


def unmatched_examples(outputs, references, matched, limit: int) -> list[dict]:
    return [{"index": i, "output": outputs[i], "reference": references[i]} for i, m in enumerate(matched) if m is None][
        :limit
    ]


def classification_metrics(
    outputs: Sequence[str], references: Sequence[str], options: Sequence[str], max_examples: int = 10
) -> ClassificationResult:
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    if len(outputs) != len(references):
        raise ConfigError(f"{len(outputs)} outputs but {len(references)} references")
    if not options:
        raise ConfigError("classification metrics need the option (label) set")
    options = list(dict.fromkeys(options))
    truth = [canonical_reference(r, options, i) for i, r in enumerate(references)]
    matched = [match_option(o, options) for o in outputs]
    predicted = [m if m is not None else UNMATCHED for m in matched]
    classes = sorted(set(truth) | {m for m in matched if m is not None})
    correct = sum(p == t for p, t in zip(predicted, truth))
    n = len(truth)
    macro = float(f1_score(truth, predicted, labels=classes, average="macro", zero_division=0)) if n else 0.0
    per_class = {}
    if n:
        p, r, f, s = precision_recall_fscore_support(truth, predicted, labels=classes, zero_division=0)
        per_class = {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        }
    return ClassificationResult(
        n=n,
        accuracy=correct / n if n else 0.0,
        macro_f1=macro,
        correct=int(correct),
        unmatched=sum(m is None for m in matched),
        unmatched_examples=unmatched_examples(list(outputs), list(references), matched, max_examples),
        per_class=per_class,
        predictions=matched,
    )

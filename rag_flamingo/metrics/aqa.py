"""AQA accuracy on free-text outputs.

An item is correct when its output, normalised (`text.normalize`), equals its normalised answer.
Items with an option set (given per item, or yes/no automatically when the answer is yes/no, as the
reference's binary-AQA prompt offers) are instead matched to the options with `text.match_option`
("yes, there are waves" -> "yes"); outputs naming no option are counted wrong and reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from ..errors import ConfigError
from .text import match_option, normalize

YES_NO = ("yes", "no")


@dataclass
class AQAResult:
    n: int
    accuracy: float
    correct: int
    unmatched: int
    unmatched_examples: list[dict] = field(default_factory=list)
    per_item: list[bool] = field(default_factory=list, repr=False)  # each item correct or not

    def as_dict(self) -> dict:
        return asdict(self)


def aqa_accuracy(
    outputs: Sequence[str],
    answers: Sequence[str],
    options: Sequence[Sequence[str] | None] | None = None,
    auto_yes_no: bool = True,
    max_examples: int = 10,
) -> AQAResult:
    if len(outputs) != len(answers):
        raise ConfigError(f"{len(outputs)} outputs but {len(answers)} answers")
    if options is not None and len(options) != len(answers):
        raise ConfigError(f"{len(options)} option lists for {len(answers)} items; give one (or None) per item")
    correct = unmatched = 0
    examples: list[dict] = []
    per_item: list[bool] = []
    for i, (out, ans) in enumerate(zip(outputs, answers)):
        opts = options[i] if options is not None else None
        if opts is None and auto_yes_no and normalize(ans) in YES_NO:
            opts = YES_NO
        if opts:
            pick = match_option(out, opts)
            if pick is None:
                unmatched += 1
                per_item.append(False)
                if len(examples) < max_examples:
                    examples.append({"index": i, "output": out, "reference": ans})
                continue
            per_item.append(normalize(pick) == normalize(ans))
        else:
            per_item.append(normalize(out) == normalize(ans))
        correct += per_item[-1]
    n = len(answers)
    return AQAResult(
        n=n,
        accuracy=correct / n if n else 0.0,
        correct=int(correct),
        unmatched=unmatched,
        unmatched_examples=examples,
        per_item=per_item,
    )

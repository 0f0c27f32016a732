"""The one answer record: what a predictor (the model's engine included) answers for one query, from
the engine through the runner to ``evaluate``'s records, ``rag_classify``, the app and the Python API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .retrieval import Shot


@dataclass
class Prediction:
    output: str  # the answer text (a label for label predictors; tags joined by ", ")
    score: float | None = None  # confidence of ``output`` (vote share, cosine, CLAP score; rank: best option's)
    label_scores: dict[str, float] | None = None  # every option's score (label predictors; decode=rank)
    shots: list[Shot] = field(default_factory=list)  # the shots that informed the answer, prompt order
    prompt: str | None = None  # the model's prompt (flamingo only)
    dropped: int = 0  # flamingo: retrieved shots the prompt budget could not hold
    samples: list[tuple[str, float]] = field(default_factory=list)  # flamingo + CLAP filter: (text, score)

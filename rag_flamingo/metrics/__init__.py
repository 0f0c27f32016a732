"""Evaluation metrics: captioning (CIDEr-D, BLEU-4, ROUGE-L, SPICE/SPIDEr), single-label
classification (accuracy, macro-F1), multi-label tagging (micro/macro F1, mAP, approximate F1) and AQA accuracy."""

from .aqa import AQAResult, aqa_accuracy
from .captioning import bleu, captioning_metrics, cider_d, rouge_l, spice_unavailable_reason
from .classification import ClassificationResult, classification_metrics
from .multilabel import (
    ApproximateF1Result,
    MultilabelResult,
    approximate_f1,
    approximate_match,
    multilabel_metrics,
    parse_labels,
)
from .text import match_option, normalize, tokenize

__all__ = [
    "AQAResult",
    "ApproximateF1Result",
    "ClassificationResult",
    "MultilabelResult",
    "approximate_f1",
    "approximate_match",
    "aqa_accuracy",
    "bleu",
    "captioning_metrics",
    "cider_d",
    "classification_metrics",
    "match_option",
    "multilabel_metrics",
    "normalize",
    "parse_labels",
    "rouge_l",
    "spice_unavailable_reason",
    "tokenize",
]

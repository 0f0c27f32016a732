"""Test-time augmentation of a query: deterministic views of its audio, embedded and averaged.

A predictor option (``predictors.<name>.tta=N``, support-set predictors): the query is embedded
``N`` times by the store's encoder and the L2-normalised embeddings are averaged (then normalised),
so the answer does not hinge on where the encoder's frame grid falls on the onset or on the level.

Views (fixed, no randomness, so a run repeats exactly): view 0 is the query as decoded; view ``i``
(1 <= i < N) is delayed by ``i / N`` of ``SHIFT_SECONDS`` (zeros prepended: the onset moves across
one STFT hop of common audio encoders, 10-23 ms, without cutting the attack off) and scaled by
``+GAIN_DB`` dB for odd ``i`` and ``-GAIN_DB`` dB for even ``i`` (a peak-normalising encoder such as
aisfx ignores the gain). Averaging the embeddings of augmented views is the classic test-time
augmentation of image classifiers (Krizhevsky et al. 2012, "ImageNet classification with deep
convolutional neural networks", ten crops averaged), here with shifts instead of crops.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .audio import wave_for
from .errors import ConfigError
from .vectors import normalize_rows

SHIFT_SECONDS = 0.025  # the largest delay (exclusive): about one STFT hop (aisfx 23 ms)
GAIN_DB = 1.0


def check_views(views: int) -> int:
    if int(views) != views or views < 1:
        raise ConfigError(f"tta must be a whole number of query views >= 1 (1: off), got {views}")
    return int(views)


def views(wave: np.ndarray, sample_rate: int, n: int) -> list[np.ndarray]:
    """The ``n`` views of ``wave`` (float32 mono at ``sample_rate``), view 0 the wave itself."""
    wave = np.asarray(wave, np.float32)
    out = [wave]
    for i in range(1, n):
        delay = int(round(SHIFT_SECONDS * sample_rate * i / n))
        gain = np.float32(10.0 ** ((GAIN_DB if i % 2 else -GAIN_DB) / 20.0))
        out.append(np.concatenate([np.zeros(delay, np.float32), wave * gain]))
    return out


def embed_views(encoder: Any, queries: Sequence[Any], n: int) -> np.ndarray:
    """The averaged, L2-normalised embedding of ``n`` views of each query [m, d] (float64).

    ``queries``: `rag_flamingo.predictors.Query` records; their decoded audio (``Query.waves``) for
    ``encoder`` (the store's) is what is augmented; view 0 is their retrieval embedding itself.
    """
    base = normalize_rows(np.stack([q.embedding for q in queries]).astype(np.float64))
    if n == 1:
        return base
    if encoder is None:
        raise ConfigError("tta needs the store's encoder to embed the query views")
    waves = []
    for q in queries:
        try:
            wave = wave_for(q.waves, encoder)
        except KeyError:
            raise ConfigError(f"tta: query {q.id} has no decoded audio for the store's encoder") from None
        waves += views(wave, int(encoder.sample_rate), n)[1:]
    extra = normalize_rows(np.asarray(encoder.embed(waves), np.float64)).reshape(len(queries), n - 1, -1)
    return normalize_rows(base + extra.sum(1))

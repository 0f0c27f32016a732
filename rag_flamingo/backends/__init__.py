"""Model backends: what answers a prompt of k retrieved shots + the query.

The query side (decoding, retrieval with hygiene, the shots, the per-(predictor, shots) loop, the
records) is shared; a backend is the engine the ``flamingo`` predictor calls
(`rag_flamingo.engine.FlamingoEngine`: ``generate``, ``max_shots``, ``audio_slots``,
``audio_encoders``, ``retriever``, ``store``). The ``model`` config group says which one
(``model.backend``):

- ``af1`` (default): Audio Flamingo v1, `rag_flamingo.engine.RagFlamingo` (AF1's own interleaved
  prompt, cached window features of the shots, gated cross-attention);
- ``transformers``: an audio-language model of the transformers library that splices audio tokens
  into its language model's context (Audio Flamingo 3, Music Flamingo, Qwen2-Audio, Voxtral),
  `rag_flamingo.backends.transformers_audio.TransformersAudioEngine` (Voxtral's:
  `rag_flamingo.backends.voxtral.VoxtralEngine`), with the chat ICL formats of
  `rag_flamingo.backends.chat_icl`, loaded and built from the config by `rag_flamingo.backends.loading`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError, did_you_mean

BACKENDS = ("af1", "transformers")


def backend_name(model_cfg: Mapping[str, Any]) -> str:
    """``model.backend`` (default ``af1``), checked."""
    name = str(model_cfg.get("backend") or "af1")
    if name not in BACKENDS:
        raise ConfigError(
            f"model.backend={name!r} is unknown{did_you_mean(name, BACKENDS)}; use {' or '.join(BACKENDS)}"
        )
    return name

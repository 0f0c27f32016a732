"""Audio Flamingo v1: architecture, strict checkpoint loading, tokenizer, decoding, chat.

Public API (names are stable; the engine builds on them):

- ``AudioFlamingoConfig``: the hyper-parameters, a transformers ``PreTrainedConfig``;
  ``AudioFlamingoConfig.from_json(path)`` also accepts the af1_tiny ``config.json`` layout;
  ``AudioFlamingoConfig.foundation(lm=None)`` is the released size (``lm="facebook/opt-iml-max-1.3b"``
  reads the OPT config from the hub/cache).
- ``AudioFlamingoForConditionalGeneration`` (alias ``AudioFlamingo``): the model, a ``PreTrainedModel``
  with ``GenerationMixin`` (``from_pretrained`` strict, ``save_pretrained``, ``generate(input_ids=...,
  audio_features=..., audio_mask=...)``).
  ``model(input_ids, audio_features, audio_mask, attention_mask)`` -> ``.logits`` (teacher forcing).
- ``load_audio_flamingo(checkpoint, config=None, tokenizer=None, dtype=None, device=None)`` loads
  ``foundation.pt`` / ``chat.pt`` / the five ``*_partN.pt`` / hub names ``"foundation"``, ``"chat"``,
  ``hf://repo/file`` / a converted folder (``scripts/convert_checkpoint.py``), strictly (`loading`).
- ``GenerationSettings``: every decoding setting, validated (``GenerationSettings.from_config`` reads
  a ``model.generation`` section). ``generate(model, input_ids, attention_mask, audio_features,
  audio_mask, settings, *, audios=None, audio_encoder=None, num_slots=None, eos_token_id=<model's
  </s>>, streamer=None, **overrides)`` -> ``GenerationOutput`` (``.sequences``, ``.new_tokens``,
  ``.scores``): transformers' ``generate`` driven by our settings.
- ``load_af1_tokenizer(name_or_path="facebook/opt-iml-max-1.3b")``, ``tokenize_prompts``,
  ``postprocess_output(text)`` (reference post-processing), ``af1_token_ids``.
- ``encode_prompt_audios`` / ``pack_window_features``: raw audio (via any ``WindowFeatureEncoder``,
  e.g. clapcap) -> (B, L, D) features + (B, L) mask.
- ``load_model(cfg)`` -> (model, tokenizer) from a Hydra ``model`` config (``rag_flamingo/conf/model/*.yaml``);
  ``generation_settings(cfg)`` -> its ``generation`` section as `GenerationSettings`.
- ``chat_prompt``, ``ChatSession``: the chat model's multi-turn template (up to 4 rounds; ``ask_stream``
  yields the answer as it grows).
"""

from .chat import ChatSession, chat_prompt
from .config import AudioFlamingoConfig
from .factory import generation_settings, load_model
from .generation import GenerationOutput, generate
from .generation_settings import GenerationSettings
from .loading import af1_key_layout, checkpoint_files, load_audio_flamingo
from .media import WindowFeatureEncoder, encode_prompt_audios, pack_window_features, silence_features
from .modeling import AudioFlamingo, AudioFlamingoForConditionalGeneration, AudioFlamingoOutput
from .tokenizer import af1_token_ids, load_af1_tokenizer, postprocess_output, tokenize_prompts

__all__ = [
    "AudioFlamingo",
    "AudioFlamingoConfig",
    "AudioFlamingoForConditionalGeneration",
    "AudioFlamingoOutput",
    "ChatSession",
    "GenerationOutput",
    "GenerationSettings",
    "WindowFeatureEncoder",
    "af1_key_layout",
    "af1_token_ids",
    "chat_prompt",
    "checkpoint_files",
    "encode_prompt_audios",
    "generate",
    "generation_settings",
    "load_model",
    "load_af1_tokenizer",
    "load_audio_flamingo",
    "pack_window_features",
    "postprocess_output",
    "silence_features",
    "tokenize_prompts",
]

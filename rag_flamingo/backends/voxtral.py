"""Voxtral (Mistral; Whisper encoder + a Mistral language model) through transformers'
``VoxtralForConditionalGeneration``, without mistral-common.

transformers' ``VoxtralProcessor`` puts audio into a prompt only through mistral-common's chat
encoding; the rest needs none of it: transformers converts the repository's ``tekken.json`` into a
tokenizer of its own (``TokenizersBackend``), and the features are the Whisper feature extractor's.
So `VoxtralEngine` is `TransformersAudioEngine` with two parts of its own:

- ``encode_audio``: the feature extractor alone, the audio padded to whole 30 s chunks
  (``VoxtralProcessor``'s ``pad_to_multiple_of=480000``), one feature row per chunk, and the
  expansion ``[BEGIN_AUDIO]`` then one ``[AUDIO]`` per audio token (375 per chunk: 3000 mel frames,
  halved by the encoder, 4 encoder frames per token);
- ``render``: Mistral's instruct format (tokenizer v7, the version of Voxtral's tekken.json)
  written here because its only implementation is mistral-common's:
  ``<s>[INST]`` user turn ``[/INST]`` assistant answer ``</s>`` ... ``[INST]`` query turn ``[/INST]``,
  each audio where its part is. No system prompt (mistral-common refuses one with audio).

Every text part is tokenized on its own in mistral-common (a text chunk at a time, special-token
strings in it as plain text); here the whole prompt is tokenized at once, which gives the same ids
because every part boundary is a special token. Not the same: a text holding a special token's
string (a label ``[INST]``), which mistral-common reads as plain text and the tokenizer here as
that token (so do the other backends' tokenizers with their own special strings).
tests/test_backends_voxtral.py checks the prompt ids against mistral-common's
``encode_chat_completion`` of the same conversations (an oracle run in its own test-only venv:
mistral-common needs numpy < 2.4).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .transformers_audio import EncodedAudio, TransformersAudioEngine

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
BEGIN_INST, END_INST, BEGIN_AUDIO = "[INST]", "[/INST]", "[BEGIN_AUDIO]"


def load_voxtral_processor(folder: str):
    """``VoxtralProcessor`` of a Voxtral repository: its feature extractor and the tokenizer transformers
    converts from tekken.json, whether or not mistral-common is installed (with it, ``AutoProcessor``
    would pick mistral-common's backend, which reads ``[INST]`` in a text as plain text)."""
    from transformers import AutoFeatureExtractor, TokenizersBackend, VoxtralProcessor

    return VoxtralProcessor(AutoFeatureExtractor.from_pretrained(folder), TokenizersBackend.from_pretrained(folder))


def tokens_per_chunk(audio_config, frames: int = 3000) -> int:
    """Audio tokens of one chunk of ``frames`` mel frames: the encoder's stride-2 convolution halves
    them, the projector takes ``intermediate_size / hidden_size`` encoder frames per token."""
    return frames // 2 * int(audio_config.hidden_size) // int(audio_config.intermediate_size)


class VoxtralEngine(TransformersAudioEngine):
    """`TransformersAudioEngine` for ``VoxtralForConditionalGeneration`` + ``VoxtralProcessor``."""

    def __init__(self, store, model, processor, *args, **kwargs):
        tok = processor.tokenizer
        missing = [t for t in (BOS, EOS, PAD, BEGIN_INST, END_INST, BEGIN_AUDIO) if t not in tok.get_vocab()]
        if missing:
            raise ConfigError(f"the Voxtral tokenizer lacks {', '.join(missing)}: not a Voxtral tekken.json")
        # tekken.json names no bos/eos/pad; the converted tokenizer needs them to pad, stop and decode
        for name, token in (("bos_token", BOS), ("eos_token", EOS), ("pad_token", PAD)):
            if getattr(tok, name) is None:
                setattr(tok, name, token)
        super().__init__(store, model, processor, *args, **kwargs)
        features = processor.feature_extractor
        self.chunk_samples = int(features.n_samples)  # 30 s: the encoder's fixed input
        self.chunk_frames = int(features.nb_max_frames)
        self.tokens_per_chunk = tokens_per_chunk(model.config.audio_config, self.chunk_frames)

    def encode_audio(self, wave: np.ndarray) -> EncodedAudio:
        """``wave``'s features (one row per 30 s chunk, as ``VoxtralProcessor`` computes them) and its
        ``[BEGIN_AUDIO]`` + ``[AUDIO]`` x tokens."""
        fe = self.processor.feature_extractor
        out = fe(
            np.asarray(wave, np.float32),
            sampling_rate=self.sample_rate,
            padding=True,
            truncation=False,
            pad_to_multiple_of=self.chunk_samples,
            return_tensors="pt",
        )
        chunks = out["input_features"].reshape(fe.feature_size, -1, self.chunk_frames).transpose(0, 1)
        return EncodedAudio(
            {"input_features": chunks}, BEGIN_AUDIO + self.audio_token * (len(chunks) * self.tokens_per_chunk)
        )

    def render(self, messages: list[dict]) -> str:
        """Mistral's instruct prompt of ``messages`` (ending with the query's ``[/INST]``), one
        ``[AUDIO]`` placeholder per audio part."""
        text = [BOS]
        for m in messages:
            body = "".join(
                self.audio_token if p["type"] == "audio" else p["text"].replace(self.audio_token, "")
                for p in m["content"]
            )
            text.append(f"{BEGIN_INST}{body}{END_INST}" if m["role"] == "user" else body.rstrip(" ") + EOS)
        return "".join(text)

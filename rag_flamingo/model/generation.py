"""Decoding for `AudioFlamingoForConditionalGeneration`: transformers' ``generate`` (greedy, beam
search, sampling with top-k / top-p / temperature, and every other strategy it has), driven by our
`GenerationSettings`.

`generate` below is a thin wrapper: it checks the prompt against the model (one audio per ``<audio>``
token, the learned positions), encodes raw audio once per prompt, runs the audio transformer and the
cross-attention keys/values once per prompt (never per beam or step: they are expanded and carried
through ``generate``, see `modeling`), turns the settings into a ``GenerationConfig`` and returns the
record our callers read (the new tokens, the per-step scores, the windows each step saw).

Note on beam search vs the reference (transformers 4.27): finished hypotheses are normalised by
the generated length (transformers >= 4.36), the reference divided by prompt + generated length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import GenerationConfig

from ..errors import ConfigError
from .generation_settings import GenerationSettings
from .media import WindowFeatureEncoder, encode_prompt_audios
from .modeling import AudioFlamingoForConditionalGeneration


@dataclass
class GenerationOutput:
    sequences: torch.Tensor  # (N, T + n): the (left-padded) prompt then new tokens; pad after eos
    prompt_length: int
    scores: list[torch.Tensor] | None = None  # greedy/sampling: per step (N, V) processed logits
    sequences_scores: torch.Tensor | None = None  # beam search: final (length-normalised) scores
    xattn_masks: list[torch.Tensor] | None = None  # per step (N, L): windows the predicting position saw

    @property
    def new_tokens(self) -> torch.Tensor:
        return self.sequences[:, self.prompt_length :]


def _check_audio_count(input_ids: torch.Tensor, audio_mask: torch.Tensor, cfg) -> None:
    """Every ``<audio>`` token needs its own slot of W windows with at least one real window."""
    w = cfg.windows_per_audio
    if audio_mask.shape[1] % w:
        raise ConfigError(f"audio_mask has {audio_mask.shape[1]} windows, not a multiple of {w} per audio")
    n_tokens = (input_ids == cfg.media_token_id).sum(dim=1)
    n_audios = (audio_mask.view(audio_mask.shape[0], -1, w) != 0).any(dim=-1).sum(dim=1)
    bad = [b for b in range(len(n_tokens)) if int(n_tokens[b]) > int(n_audios[b])]
    if bad:
        raise ConfigError(
            f"prompt rows {bad} hold {[int(n_tokens[b]) for b in bad]} <audio> tokens but only "
            f"{[int(n_audios[b]) for b in bad]} audios with real windows; pack one audio per <audio> token"
        )


def _eos_list(eos_token_id) -> list[int]:
    if eos_token_id is None:
        return []
    return [int(eos_token_id)] if isinstance(eos_token_id, int) else [int(e) for e in eos_token_id]


def generation_config(
    settings: GenerationSettings, eos: list[int], pad: int, bos: int | None = None
) -> GenerationConfig:
    """The ``GenerationConfig`` of ``settings``: every decoding choice explicit, none left to the
    checkpoint's ``generation_config.json``. ``eos`` empty: never stop early."""
    return GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        num_beams=settings.num_beams,
        do_sample=settings.do_sample,
        top_k=settings.top_k if settings.do_sample else None,
        top_p=settings.top_p if settings.do_sample else None,
        temperature=settings.temperature if settings.do_sample else None,
        length_penalty=settings.length_penalty,
        early_stopping=settings.early_stopping,
        num_return_sequences=settings.num_return_sequences,
        use_cache=settings.use_cache,
        eos_token_id=eos,
        pad_token_id=pad,
        bos_token_id=bos,
        output_scores=True,
        return_dict_in_generate=True,
    )


@torch.inference_mode()
def generate(
    model: AudioFlamingoForConditionalGeneration,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    audio_features: torch.Tensor | None = None,
    audio_mask: torch.Tensor | None = None,
    settings: GenerationSettings | None = None,
    *,
    audios: Sequence[Sequence[np.ndarray]] | None = None,
    audio_encoder: WindowFeatureEncoder | None = None,
    num_slots: int | None = None,
    eos_token_id: int | Sequence[int] | None = -1,
    pad_token_id: int | None = None,
    streamer: Any = None,
    **overrides: Any,
) -> GenerationOutput:
    """Generate continuations of ``input_ids`` (B, T) (left-padded, with ``attention_mask``).

    Audio: ``audio_features`` (B, L, D) + ``audio_mask`` (B, L), or raw ``audios`` (per prompt, a
    list of mono waveforms in prompt order) with an ``audio_encoder`` implementing
    `media.WindowFeatureEncoder`; every audio is encoded once, the audio transformer and the
    cross-attention keys/values run once per prompt (never per beam or per step).

    Decoding: ``settings`` (`GenerationSettings`, default greedy with 128 new tokens); keyword
    ``overrides`` replace single settings (``generate(..., settings, num_beams=3)``). Stops at
    ``eos_token_id`` (default: the model's ``</s>``; pass ``[]`` or None to never stop).
    ``num_return_sequences`` outputs per prompt come out consecutively (row ``b * n + i``).
    ``streamer``: a transformers streamer (e.g. ``TextIteratorStreamer``) fed each new token.
    """
    settings = (settings or GenerationSettings()).replace(**overrides)
    cfg = model.config
    eos = _eos_list(cfg.eos_token_id if eos_token_id == -1 else eos_token_id)
    pad = cfg.pad_token_id if pad_token_id is None else pad_token_id
    if audios is not None:
        if audio_encoder is None:
            raise ValueError("raw `audios` need an `audio_encoder` with window_features()")
        audio_features, audio_mask = encode_prompt_audios(audio_encoder, audios, num_slots)
    if audio_features is None or audio_mask is None:
        raise ValueError("pass audio_features and audio_mask, or audios and audio_encoder")
    device = model.device
    input_ids = input_ids.to(device)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    attention_mask = attention_mask.to(device).long()
    audio_mask = audio_mask.to(device)
    _check_audio_count(input_ids, audio_mask, cfg)
    longest = int(attention_mask.sum(dim=1).max())
    if longest + settings.max_new_tokens > cfg.opt["max_position_embeddings"]:
        raise ConfigError(
            f"prompt of {longest} tokens + max_new_tokens={settings.max_new_tokens} exceeds the model's "
            f"{cfg.opt['max_position_embeddings']} positions; use fewer shots or fewer new tokens"
        )
    masks: list[torch.Tensor] = []
    hook = model.register_forward_hook(lambda _m, _a, out: masks.append(out.xattn_mask[:, -1]))
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if settings.do_sample and settings.seed is not None:
                torch.manual_seed(settings.seed)
            out = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                audio_mask=audio_mask,
                media_kv=model.project_audio(model.encode_audio(audio_features)),
                reference_cache_quirk=settings.reference_cache_quirk and settings.use_cache,
                generation_config=generation_config(settings, eos, pad, cfg.bos_token_id),
                streamer=streamer,
            )
    finally:
        hook.remove()
    beams = settings.num_beams > 1
    return GenerationOutput(
        out.sequences,
        input_ids.shape[1],
        scores=None if beams else list(out.scores),
        sequences_scores=out.sequences_scores if beams else None,
        xattn_masks=masks,
    )

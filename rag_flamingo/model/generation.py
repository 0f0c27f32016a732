"""Decoding for `AudioFlamingo`: greedy, beam search, sampling (top-k / top-p / temperature).

Why our own loop instead of ``transformers.GenerationMixin``: the cross-attention needs per-row
state that HF's loop does not carry (how many ``<audio>`` tokens each sequence has seen, the
per-layer audio keys/values computed once per prompt, and the reference's cache quirk as an
option), and the model is not a ``PreTrainedModel``. The loop below follows HF's algorithms
(the beam search is a compact port of transformers 5's vectorised ``_beam_search``, with the same
``length_penalty`` / ``early_stopping`` semantics; the samplers are HF's own LogitsProcessor
classes) so tokens match HF's OPT generation when the gates are zero (tested).

Note on beam search vs the reference (transformers 4.27): finished hypotheses are normalised by
the generated length (transformers >= 4.36), the reference divided by prompt + generated length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from ..errors import ConfigError
from .generation_settings import GenerationSettings
from .media import WindowFeatureEncoder, encode_prompt_audios
from .modeling import AudioFlamingo, MediaKV
from .xattn import quirk_xattn_mask


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


class _Stepper:
    """Runs the model for each decoding step; owns the KV cache and the media counts."""

    def __init__(self, model: AudioFlamingo, media_kv: MediaKV, audio_mask, use_cache: bool, quirk: bool):
        self.model, self.media_kv, self.audio_mask = model, media_kv, audio_mask
        self.use_cache = use_cache
        # the reference's mask for cached steps after the prefill: the same every step, built once
        self.quirk_mask = (
            quirk_xattn_mask(1, audio_mask, model.config.windows_per_audio) if quirk and use_cache else None
        )
        self.cache = None
        self.counts = None
        self.masks: list[torch.Tensor] = []

    def __call__(self, seqs: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Logits (N, V) for the next token after ``seqs`` (N, S); attn (N, S)."""
        common = dict(attention_mask=attn, media_kv=self.media_kv, audio_mask=self.audio_mask, last_logits_only=True)
        if not self.use_cache:
            out = self.model(seqs, **common)
        elif self.cache is None:  # prefill: the whole prompt, correct media mask
            out = self.model(seqs, use_cache=True, **common)
        else:
            out = self.model(
                seqs[:, -1:],
                past_key_values=self.cache,
                prior_counts=self.counts,
                xattn_mask_override=self.quirk_mask,
                use_cache=True,
                **common,
            )
        if self.use_cache:
            self.cache, self.counts = out.past_key_values, out.media_counts
        self.masks.append(out.xattn_mask[:, -1])
        return out.logits[:, -1].float()

    def reorder(self, idx: torch.Tensor) -> None:
        if self.cache is not None:
            self.cache.reorder_cache(idx)
            self.counts = self.counts[idx]


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


def _warpers(settings: GenerationSettings) -> LogitsProcessorList:
    procs = LogitsProcessorList()
    if not settings.do_sample:
        return procs
    if settings.temperature != 1.0:
        procs.append(TemperatureLogitsWarper(settings.temperature))
    if settings.top_k:
        procs.append(TopKLogitsWarper(settings.top_k))
    if settings.top_p < 1.0:
        procs.append(TopPLogitsWarper(settings.top_p))
    return procs


def _generator(settings: GenerationSettings, device: torch.device) -> torch.Generator | None:
    """The sampling generator on the model's device, seeded by ``settings.seed`` (None: torch's global one)."""
    if not settings.do_sample or settings.seed is None:
        return None
    return torch.Generator(device=device).manual_seed(settings.seed)


@torch.inference_mode()
def generate(
    model: AudioFlamingo,
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

    beams = settings.num_beams
    expand = beams if beams > 1 else settings.num_return_sequences
    audio_states = model.encode_audio(audio_features)
    media_kv: MediaKV = [
        None if kv is None else (kv[0].repeat_interleave(expand, dim=0), kv[1].repeat_interleave(expand, dim=0))
        for kv in model.project_audio(audio_states)
    ]
    stepper = _Stepper(
        model, media_kv, audio_mask.repeat_interleave(expand, dim=0), settings.use_cache, settings.reference_cache_quirk
    )
    ids = input_ids.repeat_interleave(expand, dim=0)
    attn = attention_mask.repeat_interleave(expand, dim=0)
    if beams > 1:
        return _beam_search(
            stepper,
            ids,
            attn,
            beams,
            settings.max_new_tokens,
            eos,
            pad,
            settings.length_penalty,
            settings.early_stopping,
            settings.num_return_sequences,
        )
    return _sample_or_greedy(
        stepper,
        ids,
        attn,
        settings.max_new_tokens,
        eos,
        pad,
        _warpers(settings),
        settings.do_sample,
        _generator(settings, device),
    )


def _sample_or_greedy(step, seqs, attn, max_new_tokens, eos, pad, warpers, do_sample, generator):
    prompt_len = seqs.shape[1]
    eos_t = torch.tensor(eos, device=seqs.device, dtype=torch.long)
    unfinished = torch.ones(seqs.shape[0], dtype=torch.bool, device=seqs.device)
    scores = []
    for _ in range(max_new_tokens):
        logits = step(seqs, attn)
        processed = warpers(seqs, logits)
        scores.append(processed)
        if do_sample:
            nxt = torch.multinomial(processed.softmax(dim=-1), num_samples=1, generator=generator).squeeze(1)
        else:
            nxt = processed.argmax(dim=-1)
        if eos:
            nxt = torch.where(unfinished, nxt, torch.full_like(nxt, pad))
        seqs = torch.cat([seqs, nxt[:, None]], dim=1)
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
        if eos:
            unfinished &= ~torch.isin(nxt, eos_t)
            if not unfinished.any():
                break
    return GenerationOutput(seqs, prompt_len, scores=scores, xattn_masks=step.masks)


def _gather(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """t (B, K, ...) gathered along dim 1 with idx (B, K')."""
    while idx.dim() < t.dim():
        idx = idx.unsqueeze(-1)
    return torch.take_along_dim(t, idx, dim=1)


def _beam_search(step, ids, attn, nb, max_new_tokens, eos, pad, length_penalty, early_stopping, nrs):
    """Port of transformers 5 ``GenerationMixin._beam_search`` (same stopping heuristics)."""
    dev = ids.device
    n, prompt_len = ids.shape
    b = n // nb
    max_len = prompt_len + max_new_tokens
    eos_t = torch.tensor(eos, device=dev, dtype=torch.long)
    keep = max(2, 1 + len(eos)) * nb
    top_nb_mask = torch.arange(keep, device=dev) < nb
    fill = pad if pad is not None else (eos[0] if eos else -1)

    running = torch.full((b, nb, max_len), fill, dtype=torch.long, device=dev)
    running[:, :, :prompt_len] = ids.view(b, nb, prompt_len)
    finished = running.clone()
    running_scores = torch.zeros(b, nb, device=dev)
    running_scores[:, 1:] = -1e9
    finished_scores = torch.full((b, nb), -1e9, device=dev)
    is_finished = torch.zeros(b, nb, dtype=torch.bool, device=dev)
    can_improve = torch.ones(b, 1, dtype=torch.bool, device=dev)
    running_bi = torch.full((b, nb, max_new_tokens), -1, dtype=torch.long, device=dev)
    finished_bi = running_bi.clone()

    cur = prompt_len
    while cur < max_len:
        logits = step(running.view(n, max_len)[:, :cur], attn)
        vocab = logits.shape[-1]
        logp = torch.log_softmax(logits, dim=-1).view(b, nb, vocab) + running_scores[:, :, None]
        top_lp, top_idx = torch.topk(logp.view(b, -1), k=keep)
        src_beam = top_idx // vocab
        tok = top_idx % vocab
        cand = _gather(running, src_beam)
        cand[:, :, cur] = tok
        cand_bi = _gather(running_bi, src_beam)
        cand_bi[:, :, cur - prompt_len] = src_beam + torch.arange(b, device=dev)[:, None] * nb
        hits = torch.isin(tok, eos_t) if eos else torch.zeros_like(tok, dtype=torch.bool)
        if cur + 1 >= max_len:
            hits = torch.ones_like(hits)

        # the best num_beams unfinished continuations run on
        run_lp = top_lp + hits.float() * -1e9
        nxt = torch.topk(run_lp, k=nb)[1]
        running, running_scores, running_bi = _gather(cand, nxt), _gather(run_lp, nxt), _gather(cand_bi, nxt)

        # finished hypotheses among the top num_beams candidates compete for the final slots
        just = hits & top_nb_mask[None, :]
        fin_lp = top_lp / ((cur + 1 - prompt_len) ** length_penalty)
        full = is_finished.all(dim=-1, keepdim=True) & (early_stopping is True)
        fin_lp = fin_lp + full.float() * -1e9 + (~can_improve).float() * -1e9 + (~just).float() * -1e9
        m_seq = torch.cat([finished, cand], 1)
        m_sc = torch.cat([finished_scores, fin_lp], 1)
        m_bi = torch.cat([finished_bi, cand_bi], 1)
        m_fin = torch.cat([is_finished, just], 1)
        best = torch.topk(m_sc, k=nb)[1]
        finished, finished_scores = _gather(m_seq, best), _gather(m_sc, best)
        finished_bi, is_finished = _gather(m_bi, best), _gather(m_fin, best)

        step.reorder(running_bi[:, :, cur - prompt_len].reshape(-1))
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
        cur += 1

        best_len = (max_len if early_stopping == "never" and length_penalty > 0.0 else cur) - prompt_len
        best_possible = running_scores[:, :1] / (best_len**length_penalty)
        worst = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True)[0], -1.0e9)
        can_improve = can_improve & (best_possible > worst).any(dim=-1, keepdim=True)
        open_beam = ~(is_finished.all() & (early_stopping is True))
        if not (can_improve.any() and open_beam and not hits.all()):
            break

    seqs = finished[:, :nrs].reshape(b * nrs, max_len)
    bi = finished_bi[:, :nrs].reshape(b * nrs, max_new_tokens)
    gen_len = int((bi + 1).bool().sum(dim=1).max())
    return GenerationOutput(
        seqs[:, : prompt_len + gen_len], prompt_len, sequences_scores=finished_scores[:, :nrs].reshape(-1)
    )

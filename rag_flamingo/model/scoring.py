"""Log-likelihood scoring of answer continuations after a prompt (rank classification).

For each prompt and each of its candidate continuations (token ids), the score is the model's
log-probability of the continuation's tokens after the prompt, teacher-forced:

    total = sum_j log p(c_j | prompt, c_<j)  [+ log sum_{e in end_ids} p(e | prompt, c)]
    mean  = total / (len(c) [+ 1])           (the length-normalised score)

``end_ids``: the tokens that may end a continuation; their probabilities are summed at the position
after its last token and the end counts as one more scored token. With a single end token this is
the log-likelihood of ``c + [end]``; two (``<|endofchunk|>`` or ``,``) score "c is the answer's first
tag". Without ``end_ids`` a continuation that is a prefix of another (``dog`` / ``dog bark``) wins
under ``total``, which is why the engine always ends an answer.

Shared prefix: the prompts are prefilled once (one batched forward, its KV cache and the per-layer
audio keys/values kept); each prompt's continuations then run as a batch of rows that continue
from that cache (the cache rows are expanded views, copied only by the attention's own
concatenation), ``rows_per_pass`` at a time so memory stays bounded for hundreds of options. The
cross-attention media mask of continuation tokens comes from the prompt's ``<audio>`` count
(``prior_counts``), so with k audios in the prompt every continuation token sees all k of them,
exactly as in a full uncached forward of prompt + continuation (tested to 1e-5).
``share_prefix=False`` runs every row as one uncached forward of prompt + continuation instead (the
baseline of ``scripts/bench_scoring.py``; same scores).

This is OpenFlamingo's rank classification (``get_rank_classifications``,
https://github.com/mlfoundations/open_flamingo/blob/655f693fbfa04cd6e9a987d960654624d48917cf/open_flamingo/eval/models/open_flamingo.py),
which loops over class names with one forward each, batched here over the options of a prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from ..errors import ConfigError
from .generation import _check_audio_count
from .modeling import AudioFlamingo, MediaKV

SCORE_KINDS = ("mean", "sum")


@dataclass
class OptionScores:
    """The scores of one prompt's continuations, in the order given."""

    total: np.ndarray  # (N,) float64: summed log-probabilities
    length: np.ndarray  # (N,) int: tokens scored (continuation tokens, + 1 with end_ids)

    @property
    def mean(self) -> np.ndarray:
        """Length-normalised log-likelihood (mean per scored token)."""
        return self.total / np.maximum(self.length, 1)

    def get(self, kind: str) -> np.ndarray:
        if kind not in SCORE_KINDS:
            raise ConfigError(f"unknown score {kind!r}; use one of {', '.join(SCORE_KINDS)}")
        return self.mean if kind == "mean" else self.total


def _rows(kv: MediaKV, b: int, n: int) -> MediaKV:
    """Prompt ``b``'s audio keys/values as ``n`` rows (views, no copy)."""
    return [None if x is None else tuple(t[b : b + 1].expand(n, *t.shape[1:]) for t in x) for x in kv]  # type: ignore[misc]


def _kv(layer) -> tuple[torch.Tensor, torch.Tensor]:
    assert isinstance(layer, DynamicLayer) and layer.keys is not None and layer.values is not None
    return layer.keys, layer.values


def _cache_rows(cache: DynamicCache, b: int, n: int) -> DynamicCache:
    """A cache holding prompt ``b``'s keys/values as ``n`` rows (expanded views of one copied row)."""
    rows = DynamicCache([(k[b : b + 1], v[b : b + 1]) for k, v in map(_kv, cache.layers)])
    for layer in rows.layers:
        assert isinstance(layer, DynamicLayer)
        k, v = _kv(layer)
        layer.keys, layer.values = k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)
    return rows


def _pad(conts: Sequence[Sequence[int]], width: int, pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(conts), max(width, 0)), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, c in enumerate(conts):
        c = list(c)[:width]
        ids[i, : len(c)] = torch.tensor(c, dtype=torch.long)
        mask[i, : len(c)] = 1
    return ids.to(device), mask.to(device)


@torch.inference_mode()
def score_continuations(
    model: AudioFlamingo,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    audio_features: torch.Tensor,
    audio_mask: torch.Tensor,
    continuations: Sequence[Sequence[Sequence[int]]],
    *,
    end_ids: Sequence[int] = (),
    rows_per_pass: int = 32,
    share_prefix: bool = True,
) -> list[OptionScores]:
    """Scores of ``continuations[b]`` (a list of token-id lists) after prompt ``b`` of ``input_ids``
    (B, T) (left-padded, with ``attention_mask``; audio as in `generation.generate`)."""
    cfg = model.config
    device = model.device
    if len(continuations) != input_ids.shape[0]:
        raise ValueError(f"{len(continuations)} continuation lists for {input_ids.shape[0]} prompts")
    if any(len(c) == 0 and not end_ids for opts in continuations for c in opts):
        raise ConfigError("an empty continuation scores nothing; give it tokens or end_ids")
    input_ids = input_ids.to(device)
    attn = (torch.ones_like(input_ids) if attention_mask is None else attention_mask).to(device).long()
    audio_mask = audio_mask.to(device)
    _check_audio_count(input_ids, audio_mask, cfg)
    longest = max((len(c) for opts in continuations for c in opts), default=0)
    positions = int(cfg.opt["max_position_embeddings"])
    if int(attn.sum(1).max()) + longest > positions:
        raise ConfigError(
            f"prompt of {int(attn.sum(1).max())} tokens + a {longest}-token answer exceeds the model's "
            f"{positions} positions; use fewer shots or shorter options"
        )
    media_kv = model.project_audio(model.encode_audio(audio_features))
    common = dict(media_kv=media_kv, audio_mask=audio_mask)
    if share_prefix:  # one prefill of every prompt: the KV cache and the next-token distribution
        pre = model(input_ids, attention_mask=attn, use_cache=True, logits_to_keep=1, **common)
        first, cache, counts = pre.logits[:, -1].float().log_softmax(-1), pre.cache, pre.media_counts

    def log_probs(b: int, fed: torch.Tensor, fed_mask: torch.Tensor) -> torch.Tensor:
        n = fed.shape[0]
        rows = dict(
            attention_mask=torch.cat([attn[b : b + 1].expand(n, -1), fed_mask], 1),
            media_kv=_rows(media_kv, b, n),
            audio_mask=audio_mask[b : b + 1].expand(n, -1),
        )
        if not share_prefix:  # one uncached forward of prompt + continuation per row
            full = model(torch.cat([input_ids[b : b + 1].expand(n, -1), fed], 1), **rows)
            return full.logits[:, input_ids.shape[1] - 1 :].float().log_softmax(-1)
        logp = first[b : b + 1, None].expand(n, 1, -1)
        if not fed.shape[1]:
            return logp
        cached = dict(cache=_cache_rows(cache, b, n), prior_counts=counts[b : b + 1].expand(n), use_cache=True)
        step = model(fed, **rows, **cached)
        return torch.cat([logp, step.logits.float().log_softmax(-1)], 1)

    return [
        _option_scores(opts, end_ids, rows_per_pass, cfg.pad_token_id, device, lambda f, m, b=b: log_probs(b, f, m))
        for b, opts in enumerate(continuations)
    ]


def _option_scores(
    options: Sequence[Sequence[int]], end_ids: Sequence[int], rows_per_pass: int, pad: int, device, log_probs
) -> OptionScores:
    """One prompt's option scores, ``rows_per_pass`` options at a time. ``log_probs(fed, fed_mask)``:
    for the fed tokens (every continuation token whose successor is scored, right-padded), (n, >= width,
    V) log-probabilities whose row j is the distribution of continuation token j (j = len: the end's)."""
    if rows_per_pass < 1:
        raise ConfigError(f"rows_per_pass must be >= 1, got {rows_per_pass}")
    ends = torch.tensor(list(end_ids), dtype=torch.long, device=device)
    total = np.zeros(len(options), np.float64)
    length = np.array([len(c) + (1 if end_ids else 0) for c in options], np.int64)
    for start in range(0, len(options), rows_per_pass):
        chunk = [list(c) for c in options[start : start + rows_per_pass]]
        n, width = len(chunk), max(len(c) for c in chunk)
        # inputs: every token whose successor is scored (the last one only when an end follows)
        fed, fed_mask = _pad(chunk, width if end_ids else width - 1, pad, device)
        targets, target_mask = _pad(chunk, width, pad, device)
        logp = log_probs(fed, fed_mask)
        tok = logp[:, :width].gather(2, targets[:, :, None]).squeeze(2) * target_mask
        scores = tok.sum(1).double()
        if end_ids:
            lens = torch.tensor([len(c) for c in chunk], device=device)
            scores = scores + logp[torch.arange(n, device=device), lens][:, ends].logsumexp(-1).double()
        total[start : start + n] = scores.cpu().numpy()
    return OptionScores(total, length)


def answer_token_ids(tokenizer, prompt_text: str, full_texts: Sequence[str], end_tokens: int) -> list[list[int]]:
    """The tokens ``full_texts`` (each the prompt text followed by an answer) add after the prompt,
    without their last ``end_tokens`` tokens (the sample's closing ``<|endofchunk|></s>``).

    Tokenized as whole samples, as the reference tokenizes them; the prompt ends at a special token
    (``<SEP>``), so its tokens are a prefix of every sample's (checked).
    """
    prompt = tokenizer(prompt_text)["input_ids"]
    out = []
    for text in full_texts:
        ids = tokenizer(text)["input_ids"]
        if ids[: len(prompt)] != prompt:
            raise ConfigError(f"answer text changes the prompt's tokens: {text[len(prompt_text) :]!r}")
        out.append(ids[len(prompt) : len(ids) - end_tokens])
    return out


@torch.inference_mode()
def score_after_prompt(
    model,
    prompt: dict[str, torch.Tensor],
    continuations: Sequence[Sequence[int]],
    *,
    end_ids: Sequence[int] = (),
    rows_per_pass: int = 32,
) -> OptionScores:
    """The same scores as `score_continuations` for any transformers causal LM (the audio-language
    models of `rag_flamingo.backends`): ``prompt`` is the model's inputs for one prompt (``input_ids``
    (1, T), ``attention_mask`` and its audio features), prefilled once; the continuations then run as
    rows continuing from its KV cache (the audio is merged at the prefill, so later tokens need none)."""
    if prompt["input_ids"].shape[0] != 1:
        raise ValueError("score_after_prompt scores the options of one prompt")
    if any(len(c) == 0 and not end_ids for c in continuations):
        raise ConfigError("an empty continuation scores nothing; give it tokens or end_ids")
    pre = model(**prompt, use_cache=True, logits_to_keep=1)
    first, cache, attn = pre.logits[:, -1].float().log_softmax(-1), pre.cache, prompt["attention_mask"]

    def log_probs(fed: torch.Tensor, fed_mask: torch.Tensor) -> torch.Tensor:
        n = fed.shape[0]
        logp = first.expand(n, -1)[:, None]
        if not fed.shape[1]:
            return logp
        mask = torch.cat([attn.expand(n, -1), fed_mask], 1)
        step = model(input_ids=fed, attention_mask=mask, cache=_cache_rows(cache, 0, n), use_cache=True)
        return torch.cat([logp, step.logits.float().log_softmax(-1)], 1)

    # pad: any id, padded positions are masked out of the attention and of the targets
    return _option_scores(continuations, end_ids, rows_per_pass, 0, prompt["input_ids"].device, log_probs)

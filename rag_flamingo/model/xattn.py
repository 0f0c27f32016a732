"""Gated cross-attention dense blocks and the AF1 media-location mask (AF1:
https://github.com/NVIDIA/audio-flamingo/blob/5ea6f6d6dc50b35f24d0362ef0c24680b5199414/foundation/src/helpers.py).

Mask rule (one function, used by the teacher-forced pass, cached and uncached decoding alike):
a text position whose running count of ``<audio>`` tokens (inclusive) is ``c`` may attend the
window blocks of audios ``0 .. max(c, 1) - 1``: text after the i-th ``<audio>`` sees audios 0..i,
text before the first ``<audio>`` sees audio 0. Audio ``i`` owns windows ``[i*W, (i+1)*W)``.
Combined with the per-window padding mask. Because the count is carried across decoding steps
(``prior_counts``), a token generated after a prompt with k audios sees all k of them.

One deliberate difference from the reference: a sequence with *no* ``<audio>`` token at all gets
no window in the reference's mask, so its softmax becomes uniform over all L windows, padding
included; here it attends audio 0 (the "before the first ``<audio>``" rule). AF1 prompts always
contain ``<audio>``, so the fixtures and real use are unaffected.
"""

from __future__ import annotations

import torch
from torch import nn


def media_counts(input_ids: torch.Tensor, media_token_id: int, prior: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T) inclusive running count of ``<audio>`` tokens, offset by ``prior`` (B,) counts."""
    counts = torch.cumsum((input_ids == media_token_id).long(), dim=1)
    if prior is not None:
        counts = counts + prior.to(counts.device)[:, None]
    return counts


def xattn_mask(counts: torch.Tensor, audio_mask: torch.Tensor, windows_per_audio: int) -> torch.Tensor:
    """(B, T, L) bool: True where a text position may attend a window.

    ``counts`` (B, T) from `media_counts` (blocks visible = max(count, 1), clipped to L by the
    comparison); ``audio_mask`` (B, L), nonzero = real window.
    """
    blocks = counts.clamp(min=1)
    limit = blocks * windows_per_audio  # (B, T)
    window = torch.arange(audio_mask.shape[1], device=counts.device)
    media = window[None, None, :] < limit[:, :, None]
    return media & (audio_mask != 0)[:, None, :]


def quirk_xattn_mask(num_new: int, audio_mask: torch.Tensor, windows_per_audio: int) -> torch.Tensor:
    """The reference's mask for tokens decoded with KV cache after the first step: audio 0 only.

    HF feeds one token; the reference re-uses the prompt's media locations, whose mask loop only
    fills the first row with the first segment (windows [0, W)); a generated ``<audio>`` replaces
    the locations by a single one, which again yields [0, W). See af1_tiny README 'KV-cache quirk'.
    """
    b = audio_mask.shape[0]
    counts = torch.ones(b, num_new, dtype=torch.long, device=audio_mask.device)
    return xattn_mask(counts, audio_mask, windows_per_audio)


class MaskedCrossAttention(nn.Module):
    """Text queries attend audio windows; masked scores are *filled* with -finfo.max (reference)."""

    def __init__(self, dim: int, dim_audio: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.scale = dim_head**-0.5
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim_audio, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def project_audio(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, Da) -> k, v each (B, heads, L, dim_head). Computed once per prompt when decoding."""
        b, n, _ = audio.shape
        k, v = self.to_kv(audio).chunk(2, dim=-1)
        return tuple(t.view(b, n, self.heads, self.dim_head).transpose(1, 2) for t in (k, v))

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.to_q(self.norm(x)).view(b, t, self.heads, self.dim_head).transpose(1, 2) * self.scale
        k, v = kv
        sim = torch.matmul(q, k.transpose(-1, -2)).float()
        sim = sim.masked_fill(~mask[:, None], -torch.finfo(torch.float32).max)
        sim = sim - sim.amax(dim=-1, keepdim=True)
        attn = sim.softmax(dim=-1).to(v.dtype)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, t, -1)
        return self.to_out(out)


class GatedCrossAttentionBlock(nn.Module):
    """x += tanh(attn_gate) * attn(x); x += tanh(ff_gate) * ff(x). Gates start at 0."""

    def __init__(self, dim: int, dim_audio: int, heads: int = 8, dim_head: int = 64, ff_mult: int = 4):
        super().__init__()
        self.attn = MaskedCrossAttention(dim, dim_audio, heads, dim_head)
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.ff = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, dim * ff_mult, bias=False),
            nn.GELU(),
            nn.Linear(dim * ff_mult, dim, bias=False),
        )
        self.ff_gate = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        x = self.attn(x, kv, mask) * self.attn_gate.tanh() + x
        return self.ff(x) * self.ff_gate.tanh() + x

"""The AF1 audio transformer (``TransformerEncoder`` in AF1's foundation/src/helpers.py): per-window
CLAP features -> contextualised features.

``x * sqrt(D)`` + fixed sinusoid table -> LayerNorm(eps 1e-6) -> N post-LN encoder layers
(bias-free multi-head attention, ReLU FFN with biases). Module and parameter names follow the
released checkpoint (``position_enc.pos_table``, ``layer_stack.{i}.slf_attn.w_qs`` ...).

The self-attention is deliberately *unmasked*: padding windows (CLAP's embedding of a silent clip)
take part, exactly as in the reference, so outputs depend on how many padding windows a sample
carries. Only the cross-attention honours the window mask.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import AudioFlamingoConfig

_EPS = 1e-6


def sinusoid_table(n_position: int, d: int) -> torch.Tensor:
    """(1, n_position, d) table: pos / 10000^(2*(j//2)/d), sin on even j, cos on odd j (float64 math)."""
    pos = torch.arange(n_position, dtype=torch.float64)[:, None]
    j = torch.arange(d, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / d)
    table = torch.where(j.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float().unsqueeze(0)


class PositionalEncoding(nn.Module):
    pos_table: torch.Tensor  # buffer (registered in __init__)

    def __init__(self, d: int, n_position: int):
        super().__init__()
        # persistent: the released checkpoint stores it (and the loader loads it strictly)
        self.register_buffer("pos_table", sinusoid_table(n_position, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.pos_table.shape[1]:
            raise ValueError(f"{x.shape[1]} audio windows exceed the model's {self.pos_table.shape[1]} slots")
        return x + self.pos_table[:, : x.shape[1]].to(x.dtype)


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.n_head, self.d_k = n_head, d // n_head
        self.w_qs = nn.Linear(d, d, bias=False)
        self.w_ks = nn.Linear(d, d, bias=False)
        self.w_vs = nn.Linear(d, d, bias=False)
        self.fc = nn.Linear(d, d, bias=False)
        self.layer_norm = nn.LayerNorm(d, eps=_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        split = lambda t: t.view(b, n, self.n_head, self.d_k).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.w_qs(x)), split(self.w_ks(x)), split(self.w_vs(x))
        attn = torch.matmul(q / math.sqrt(self.d_k), k.transpose(2, 3)).softmax(dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, n, -1)
        return self.layer_norm(self.fc(out) + x)


class PositionwiseFeedForward(nn.Module):
    def __init__(self, d: int, d_inner: int):
        super().__init__()
        self.w_1 = nn.Linear(d, d_inner)
        self.w_2 = nn.Linear(d_inner, d)
        self.layer_norm = nn.LayerNorm(d, eps=_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.w_2(torch.relu(self.w_1(x))) + x)


class EncoderLayer(nn.Module):
    def __init__(self, d: int, n_head: int, d_inner: int):
        super().__init__()
        self.slf_attn = MultiHeadSelfAttention(d, n_head)
        self.pos_ffn = PositionwiseFeedForward(d, d_inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pos_ffn(self.slf_attn(x))


class AudioTransformer(nn.Module):
    """(B, L, D) window features -> (B, L, D); L <= ``max_num_media``."""

    def __init__(self, config: AudioFlamingoConfig):
        super().__init__()
        d = config.audio_embed_dim
        self.scale = math.sqrt(d)
        self.position_enc = PositionalEncoding(d, config.max_num_media)
        self.layer_norm = nn.LayerNorm(d, eps=_EPS)
        self.layer_stack = nn.ModuleList(
            EncoderLayer(d, config.at_n_head, config.at_d_inner) for _ in range(config.at_n_layers)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.layer_norm(self.position_enc(features * self.scale))
        for layer in self.layer_stack:
            x = layer(x)
        return x

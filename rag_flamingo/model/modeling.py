"""The Audio Flamingo v1 model as explicit modules (AF1: https://github.com/NVIDIA/audio-flamingo/blob/5ea6f6d6dc50b35f24d0362ef0c24680b5199414/foundation/src/flamingo.py).

    window features (B, L, Da) ─ AudioTransformer ─► audio states ─► per-layer to_kv (once)
    input_ids ─ embed_tokens + embed_positions(offset 2, from the attention mask)
              ─► [GatedCrossAttentionBlock ─► OPTDecoderLayer] × N ─► final LN ─► logits (tied head)

The OPT building blocks (decoder layer, learned positional embedding) come from
``transformers.models.opt.modeling_opt``; we run the stack ourselves so that the cross-attention
media mask can be carried across KV-cached decoding steps (the reference re-uses the prompt's
mask there, see `xattn.quirk_xattn_mask`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache
from transformers.models.opt.modeling_opt import OPTDecoderLayer, OPTLearnedPositionalEmbedding

from ..errors import ConfigError
from .audio_transformer import AudioTransformer
from .config import AudioFlamingoConfig
from .xattn import GatedCrossAttentionBlock, media_counts, xattn_mask

MediaKV = list[tuple[torch.Tensor, torch.Tensor] | None]
# the KV-cache argument of OPTDecoderLayer: `cache` since transformers 5.x deprecated `past_key_values`
# (which then warns on every call); older 5.x releases only know `past_key_values`
_CACHE_ARG = "cache" if "cache" in inspect.signature(OPTDecoderLayer.forward).parameters else "past_key_values"


@dataclass
class AudioFlamingoOutput:
    logits: torch.Tensor  # (B, T, V) float
    past_key_values: DynamicCache | None  # KV cache including these tokens (use_cache=True)
    media_counts: torch.Tensor  # (B,) ``<audio>`` tokens seen up to the last position
    xattn_mask: torch.Tensor  # (B, T, L) bool, windows each position could attend


class FlamingoDecoderLayer(nn.Module):
    """Gated cross-attention block (if this layer has one) followed by the original OPT layer."""

    def __init__(self, config: AudioFlamingoConfig, opt_config, layer_idx: int):
        super().__init__()
        self.gated_cross_attn_layer = (
            GatedCrossAttentionBlock(
                config.hidden_size,
                config.audio_embed_dim,
                heads=config.xattn_heads,
                dim_head=config.xattn_dim_head,
                ff_mult=config.xattn_ff_mult,
            )
            if config.has_xattn(layer_idx)
            else None
        )
        self.decoder_layer = OPTDecoderLayer(opt_config, layer_idx=layer_idx)

    def forward(self, hidden, kv, xmask, causal_mask, cache):
        if self.gated_cross_attn_layer is not None:
            hidden = self.gated_cross_attn_layer(hidden, kv, xmask)
        return self.decoder_layer(hidden, attention_mask=causal_mask, **{_CACHE_ARG: cache})


class FlamingoDecoder(nn.Module):
    """OPT decoder (embeddings, layers, final LN) whose layers are `FlamingoDecoderLayer`s."""

    def __init__(self, config: AudioFlamingoConfig):
        super().__init__()
        opt = config.opt_config()
        if opt.word_embed_proj_dim != opt.hidden_size or not opt.do_layer_norm_before:
            raise ConfigError("AF1 uses OPT with word_embed_proj_dim == hidden_size and pre-LN layers")
        self.opt_config = opt
        self.embed_tokens = nn.Embedding(opt.vocab_size, opt.hidden_size, opt.pad_token_id)
        self.embed_positions = OPTLearnedPositionalEmbedding(opt.max_position_embeddings, opt.hidden_size)
        self.layers = nn.ModuleList(FlamingoDecoderLayer(config, opt, i) for i in range(opt.num_hidden_layers))
        self.final_layer_norm = nn.LayerNorm(opt.hidden_size, elementwise_affine=opt.layer_norm_elementwise_affine)


def causal_mask(attention_mask: torch.Tensor, q_len: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, q, S) additive mask: key j visible to query i iff j <= past+i and j is not padding."""
    b, s = attention_mask.shape
    past = s - q_len
    rows = torch.arange(q_len, device=attention_mask.device)[:, None] + past
    cols = torch.arange(s, device=attention_mask.device)[None, :]
    allowed = (cols <= rows)[None] & attention_mask[:, None, :].bool()
    mask = torch.zeros(b, 1, q_len, s, dtype=dtype, device=attention_mask.device)
    return mask.masked_fill(~allowed[:, None], torch.finfo(dtype).min)


class AudioFlamingo(nn.Module):
    """Audio Flamingo v1. See the package docstring for the public API: it is loaded with
    `loading.load_audio_flamingo` and decodes with `generation.generate` (both build on this module)."""

    def __init__(self, config: AudioFlamingoConfig):
        super().__init__()
        self.config = config
        self.audio_transformer = AudioTransformer(config)
        self.decoder = FlamingoDecoder(config)

    # ------------------------------------------------------------------ pieces
    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.decoder.embed_tokens.weight.device

    def encode_audio(self, audio_features: torch.Tensor) -> torch.Tensor:
        """(B, L, Da) per-window features -> (B, L, Da) audio-transformer states."""
        return self.audio_transformer(audio_features.to(device=self.device, dtype=self.dtype))

    def project_audio(self, audio_states: torch.Tensor) -> MediaKV:
        """Per layer (k, v) of the cross-attention over the audio states (None where no block)."""
        media_kv: MediaKV = []
        for layer in self.decoder.layers:
            assert isinstance(layer, FlamingoDecoderLayer)  # nn.ModuleList yields its items as plain Modules
            block = layer.gated_cross_attn_layer
            media_kv.append(block.attn.project_audio(audio_states) if block is not None else None)
        return media_kv

    def compute_xattn_mask(
        self, input_ids: torch.Tensor, audio_mask: torch.Tensor, prior_counts: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, L) mask and the (B, T) running ``<audio>`` counts; see `xattn.xattn_mask`."""
        counts = media_counts(input_ids, self.config.media_token_id, prior_counts)
        return xattn_mask(counts, audio_mask.to(input_ids.device), self.config.windows_per_audio), counts

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Tied LM head: hidden · embed_tokensᵀ (the released lm_head is loaded into embed_tokens)."""
        return nn.functional.linear(hidden, self.decoder.embed_tokens.weight)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor,
        audio_features: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        media_kv: MediaKV | None = None,
        past_key_values: DynamicCache | None = None,
        prior_counts: torch.Tensor | None = None,
        xattn_mask_override: torch.Tensor | None = None,
        use_cache: bool = False,
        last_logits_only: bool = False,
    ) -> AudioFlamingoOutput:
        """Logits for ``input_ids`` (B, T).

        Audio: either ``audio_features`` (B, L, Da) (run through the audio transformer here) or
        precomputed ``media_kv`` from `project_audio`; ``audio_mask`` (B, L) 1 = real window.
        ``attention_mask`` (B, past+T) covers cached + new tokens (left padding: 0). When
        continuing from ``past_key_values``, pass the ``prior_counts`` of the earlier tokens so the
        media mask stays correct; ``xattn_mask_override`` replaces the computed mask (used by
        ``reference_cache_quirk``). ``last_logits_only``: logits of the last position only (decoding).
        """
        if audio_mask is None:
            raise ValueError("audio_mask (B, L) is required")
        if media_kv is None:
            if audio_features is None:
                raise ValueError("pass audio_features or media_kv")
            media_kv = self.project_audio(self.encode_audio(audio_features))
        input_ids = input_ids.to(self.device)
        b, t = input_ids.shape
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        if attention_mask is None:
            attention_mask = torch.ones(b, past + t, dtype=torch.long, device=self.device)
        attention_mask = attention_mask.to(self.device)
        if attention_mask.shape[1] != past + t:
            raise ValueError(f"attention_mask covers {attention_mask.shape[1]} tokens, expected {past + t}")

        xmask, counts = self.compute_xattn_mask(input_ids, audio_mask, prior_counts)
        if xattn_mask_override is not None:
            xmask = xattn_mask_override.to(xmask.device)

        dec = self.decoder
        hidden = dec.embed_tokens(input_ids) + dec.embed_positions(attention_mask.long(), past).to(self.dtype)
        cmask = causal_mask(attention_mask, t, hidden.dtype)
        for layer, kv in zip(dec.layers, media_kv):
            hidden = layer(hidden, kv, xmask, cmask, past_key_values)
        if last_logits_only:
            hidden = hidden[:, -1:]
        logits = self.logits(dec.final_layer_norm(hidden))
        return AudioFlamingoOutput(logits, past_key_values if use_cache else None, counts[:, -1], xmask)

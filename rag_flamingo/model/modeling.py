"""Audio Flamingo v1 as a transformers model (AF1: https://github.com/NVIDIA/audio-flamingo/blob/5ea6f6d6dc50b35f24d0362ef0c24680b5199414/foundation/src/flamingo.py).

    window features (B, L, Da) ─ AudioTransformer ─► audio states ─► per-layer to_kv (once)
    input_ids ─ embed_tokens + embed_positions(offset 2, from the attention mask)
              ─► [GatedCrossAttentionBlock ─► OPTDecoderLayer] × N ─► final LN ─► logits (tied head)

`AudioFlamingoForConditionalGeneration` is a ``PreTrainedModel`` with ``GenerationMixin``:
``from_pretrained`` / ``save_pretrained`` and ``generate`` with every strategy, logits processor,
stopping criterion and streamer of transformers. The OPT building blocks (decoder layer, learned
positional embedding) come from ``transformers.models.opt.modeling_opt``; the stack runs here so
that each text position's cross-attention mask follows the ``<audio>`` tokens before it.

Media state through ``generate`` (transformers' Idefics carries its image states the same way,
through ``_update_model_kwargs_for_generation``): the per-layer audio keys/values (``media_kv``)
are computed at the prefill and carried in the model kwargs to every later step; the ``<audio>``
count before the fed tokens (``prior_counts``) is recounted from the full sequence at every step
(`prepare_inputs_for_generation`), so it is right for every row after a beam search reorders them.
``reference_cache_quirk=True`` reproduces the reference's cached decoding (`xattn.quirk_xattn_mask`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import Cache, DynamicCache, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import ModelOutput
from transformers.models.opt.modeling_opt import OPTDecoderLayer, OPTLearnedPositionalEmbedding

from ..errors import ConfigError
from .audio_transformer import AudioTransformer
from .config import AudioFlamingoConfig
from .xattn import GatedCrossAttentionBlock, media_counts, quirk_xattn_mask, xattn_mask

MediaKV = list[tuple[torch.Tensor, torch.Tensor] | None]


@dataclass
class AudioFlamingoOutput(ModelOutput):
    """``logits`` (B, T', V) (T' = T, or ``logits_to_keep``); ``cache``: the KV cache including these
    tokens (``use_cache``); ``media_counts`` (B,): ``<audio>`` tokens up to the last position;
    ``xattn_mask`` (B, T, L) bool: the windows each position could attend; ``media_kv``: the
    per-layer audio keys/values used (carried to the next decoding step)."""

    logits: torch.Tensor | None = None
    cache: Cache | None = None
    media_counts: torch.Tensor | None = None
    xattn_mask: torch.Tensor | None = None
    media_kv: MediaKV | None = None


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
        return self.decoder_layer(hidden, attention_mask=causal_mask, cache=cache)


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


class AudioFlamingoPreTrainedModel(PreTrainedModel):
    config: AudioFlamingoConfig
    config_class = AudioFlamingoConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    _no_split_modules = ["FlamingoDecoderLayer", "AudioTransformer"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Fresh weights (a model built from a config; loading overwrites them): OPT's normal(0.02)
        for linear and embedding weights, closed gates (AF1 starts from its language model's outputs)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.normal_(0.0, 0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
            module.weight.fill_(1.0)
            module.bias.zero_()
        elif isinstance(module, GatedCrossAttentionBlock):
            module.attn_gate.zero_()
            module.ff_gate.zero_()


class AudioFlamingoForConditionalGeneration(AudioFlamingoPreTrainedModel, GenerationMixin):
    """Audio Flamingo v1. Released checkpoints load with `loading.load_audio_flamingo`; a folder
    written by ``save_pretrained`` (or ``scripts/convert_checkpoint.py``) with ``from_pretrained``
    (strict: every key of the model and of the file accounted for). ``generate`` takes the audio as
    ``audio_features`` (B, L, Da) + ``audio_mask`` (B, L); `generation.generate` wraps it with our
    `GenerationSettings`."""

    def __init__(self, config: AudioFlamingoConfig):
        super().__init__(config)
        self.audio_transformer = AudioTransformer(config)
        self.decoder = FlamingoDecoder(config)
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any):
        """transformers' ``from_pretrained``, strict: a missing, unexpected or mis-shaped key is a
        CheckpointError naming it (transformers only logs them)."""
        from safetensors import SafetensorError

        from ..errors import CheckpointError

        want_info = kwargs.pop("output_loading_info", False)
        where = args[0] if args else kwargs.get("pretrained_model_name_or_path")
        try:
            loaded: Any = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        except SafetensorError as exc:
            raise CheckpointError(f"{where}: its safetensors file cannot be read ({exc}); convert it again") from None
        model, info = loaded
        problems = {k: sorted(map(str, v)) for k, v in info.items() if v and k != "error_msgs"}
        if problems or info.get("error_msgs"):
            raise CheckpointError(f"{args[0] if args else kwargs}: not the AF1 layout of its config.json: {problems}")
        return (model, info) if want_info else model

    # ------------------------------------------------------------------ pieces
    def get_input_embeddings(self) -> nn.Module:
        return self.decoder.embed_tokens

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
        cache: Cache | None = None,
        use_cache: bool | None = None,
        media_kv: MediaKV | None = None,
        prior_counts: torch.Tensor | None = None,
        xattn_mask_override: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> AudioFlamingoOutput:
        """Logits for ``input_ids`` (B, T).

        Audio: either ``audio_features`` (B, L, Da) (run through the audio transformer here) or
        precomputed ``media_kv`` from `project_audio`; ``audio_mask`` (B, L) 1 = real window.
        ``attention_mask`` (B, past+T) covers cached + new tokens (left padding: 0). When
        continuing from ``cache``, pass the ``prior_counts`` of the earlier tokens so the media mask
        stays correct; ``xattn_mask_override`` replaces the computed mask (``reference_cache_quirk``).
        ``logits_to_keep``: logits of the last that many positions only (0: all).
        """
        if audio_mask is None:
            raise ValueError("audio_mask (B, L) is required")
        if media_kv is None:
            if audio_features is None:
                raise ValueError("pass audio_features or media_kv")
            media_kv = self.project_audio(self.encode_audio(audio_features))
        input_ids = input_ids.to(self.device)
        b, t = input_ids.shape
        if use_cache and cache is None:
            cache = DynamicCache()
        past = cache.get_seq_length() if cache is not None else 0
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
            hidden = layer(hidden, kv, xmask, cmask, cache)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.logits(dec.final_layer_norm(hidden))
        return AudioFlamingoOutput(
            logits=logits,
            cache=cache if use_cache else None,
            media_counts=counts[:, -1],
            xattn_mask=xmask,
            media_kv=media_kv,
        )

    # ------------------------------------------------------------------ generate's hooks
    def prepare_inputs_for_generation(
        self,
        input_ids: torch.Tensor,
        next_sequence_length: int | None = None,
        cache: Cache | None = None,
        attention_mask: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None,
        media_kv: MediaKV | None = None,
        reference_cache_quirk: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """transformers' inputs plus the media state: the carried ``media_kv`` (the audio features
        are read at the prefill only), the ``<audio>`` count of the tokens before the fed ones, and
        the reference's mask for cached steps with ``reference_cache_quirk``."""
        inputs = super().prepare_inputs_for_generation(
            input_ids, next_sequence_length=next_sequence_length, cache=cache, attention_mask=attention_mask, **kwargs
        )
        fed = inputs["input_ids"].shape[1]
        earlier = input_ids[:, : input_ids.shape[1] - fed]
        inputs["prior_counts"] = (earlier == self.config.media_token_id).sum(dim=1)
        inputs["audio_mask"] = audio_mask
        if media_kv is not None:
            inputs["media_kv"] = media_kv
            inputs.pop("audio_features", None)
        if reference_cache_quirk and cache is not None and cache.get_seq_length() > 0:
            assert audio_mask is not None  # forward refuses a missing audio_mask at the prefill
            inputs["xattn_mask_override"] = quirk_xattn_mask(fed, audio_mask, self.config.windows_per_audio)
        return inputs

    def _update_model_kwargs_for_generation(
        self,
        outputs: ModelOutput,
        model_kwargs: dict[str, Any],
        is_encoder_decoder: bool = False,
        num_new_tokens: int = 1,
    ) -> dict[str, Any]:
        """Carry the audio keys/values of the prefill to every later step (computed once per prompt)."""
        model_kwargs = super()._update_model_kwargs_for_generation(
            outputs, model_kwargs, is_encoder_decoder=is_encoder_decoder, num_new_tokens=num_new_tokens
        )
        model_kwargs["media_kv"] = outputs["media_kv"]
        return model_kwargs

    def _expand_inputs_for_generation(  # type: ignore[override]
        self,
        expand_size: int = 1,
        is_encoder_decoder: bool = False,
        input_ids: torch.Tensor | None = None,
        **model_kwargs: Any,
    ) -> tuple[torch.Tensor | None, dict[str, Any]]:
        """transformers expands the tensors of the model kwargs per beam or sample; ``media_kv`` (a
        list of per-layer pairs) is expanded here, so the audio runs once per prompt."""
        media_kv = model_kwargs.pop("media_kv", None)
        mixin: Any = super()  # GenerationMixin types its methods' self as its own protocol
        input_ids, model_kwargs = mixin._expand_inputs_for_generation(
            expand_size, is_encoder_decoder, input_ids, **model_kwargs
        )
        if media_kv is not None:
            model_kwargs["media_kv"] = [
                None if kv is None else tuple(t.repeat_interleave(expand_size, dim=0) for t in kv) for kv in media_kv
            ]
        return input_ids, model_kwargs


# the name the rest of the package (and earlier releases of it) use for the model class
AudioFlamingo = AudioFlamingoForConditionalGeneration

"""`AudioFlamingoConfig`: every hyper-parameter of an Audio Flamingo v1 model, a transformers
``PreTrainedConfig`` (``model_type`` ``audio_flamingo``: ``save_pretrained`` writes it as ``config.json``).

`AudioFlamingoConfig.from_dict` also accepts the af1_tiny ``config.json`` layout (``opt_config`` + ``audio_embed_dim`` +
``audio_transformer_kwargs`` + ``windows_per_audio`` + ``cross_attn_every_n_layers`` + optional
``xattn_block`` / ``special_token_ids``) and has a ``foundation()`` preset with the released sizes
(AF1: https://github.com/NVIDIA/audio-flamingo/blob/5ea6f6d6dc50b35f24d0362ef0c24680b5199414/foundation/src/factory.py).
"""

from __future__ import annotations

import json
from dataclasses import field
from pathlib import Path
from typing import Any

from transformers import OPTConfig, PreTrainedConfig

from ..errors import ConfigError

# OPT-IML-MAX-1.3B (facebook/opt-iml-max-1.3b config.json) with AF1's vocabulary resize to 50268
# (AF1's factory.py adds <audio>, <|endofchunk|> and <SEP> to OPT's 50265). Kept here so the full-size
# architecture can be built offline; `foundation(lm=...)` reads the real config from the hub/cache instead.
_OPT_IML_MAX_1_3B = dict(
    vocab_size=50268,
    hidden_size=2048,
    num_hidden_layers=24,
    num_attention_heads=32,
    ffn_dim=8192,
    max_position_embeddings=2048,
    word_embed_proj_dim=2048,
    do_layer_norm_before=True,
    activation_function="relu",
    enable_bias=True,
    layer_norm_elementwise_affine=True,
    dropout=0.1,
    attention_dropout=0.0,
    activation_dropout=0.0,
    pad_token_id=1,
    bos_token_id=2,
    eos_token_id=2,
    tie_word_embeddings=True,
)

AF1_LM_ID = "facebook/opt-iml-max-1.3b"
AF1_VOCAB_SIZE = 50268


class AudioFlamingoConfig(PreTrainedConfig):
    """Hyper-parameters of the AF1 architecture (defaults = the released foundation/chat models).

    transformers makes every ``PreTrainedConfig`` subclass a keyword-only dataclass: the fields below
    are its constructor's arguments. The OPT layers' kernel is transformers' ``attn_implementation``
    (``sdpa`` by default, ``eager`` = the reference's math)."""

    model_type = "audio_flamingo"

    opt: dict[str, Any] = field(default_factory=lambda: dict(_OPT_IML_MAX_1_3B))
    audio_embed_dim: int = 1024
    windows_per_audio: int = 16  # AF1 max_num_window / max_window_per_audio
    # audio transformer (AF1 foundation/src/helpers.py TransformerEncoder, built in flamingo.py)
    at_n_head: int = 8
    at_n_layers: int = 3
    at_d_inner: int = 2048
    max_num_media: int = 128  # rows of the sinusoid table = max windows per sample
    # gated cross-attention (hard-coded in AF1's flamingo_lm.py / helpers.py)
    xattn_heads: int = 8
    xattn_dim_head: int = 64
    xattn_ff_mult: int = 4
    cross_attn_every_n_layers: int = 1
    # token ids (OPT's 50265 + AF1's added tokens); the tokenizer is checked against them when loading
    media_token_id: int = 50265
    eoc_token_id: int = 50266
    sep_token_id: int = 50267
    eos_token_id: int = 2
    pad_token_id: int = 1
    bos_token_id: int = 2

    # ---------------------------------------------------------------- derived
    @property
    def hidden_size(self) -> int:
        return int(self.opt["hidden_size"])

    @property
    def vocab_size(self) -> int:
        return int(self.opt["vocab_size"])

    @property
    def num_hidden_layers(self) -> int:  # read by transformers' caches
        return int(self.opt["num_hidden_layers"])

    num_layers = num_hidden_layers

    @property
    def num_attention_heads(self) -> int:
        return int(self.opt["num_attention_heads"])

    @property
    def max_position_embeddings(self) -> int:
        return int(self.opt["max_position_embeddings"])

    @property
    def max_audios(self) -> int:
        """Audio slots that fit in the sinusoid table (8 for the released models)."""
        return self.max_num_media // self.windows_per_audio

    def has_xattn(self, layer_idx: int) -> bool:
        """Reference rule (`flamingo_lm.py`): a block before layer i iff (i+1) % n == 0."""
        return (layer_idx + 1) % self.cross_attn_every_n_layers == 0

    def opt_config(self) -> OPTConfig:
        cfg = OPTConfig(**self.opt)
        cfg._attn_implementation = self._attn_implementation or "sdpa"
        return cfg

    # ---------------------------------------------------------------- constructors
    @classmethod
    def foundation(cls, lm: str | None = None, **overrides) -> AudioFlamingoConfig:
        """The released foundation/chat sizes. With ``lm`` (hub id or local dir) the OPT config is
        read from there (e.g. ``facebook/opt-iml-max-1.3b``) and resized to AF1's 50268 tokens."""
        cfg = cls(**overrides)
        if lm is not None:
            cfg.opt = _opt_dict_from_pretrained(lm)
        return cfg

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> AudioFlamingoConfig:
        """From our own ``to_dict()`` output (what ``from_pretrained`` reads) or the af1_tiny
        ``config.json`` layout."""
        if "opt_config" not in config_dict:
            return super().from_dict(config_dict, **kwargs)
        config = cls._from_af1_layout(config_dict)
        return super().from_dict(config.to_dict(), **kwargs) if kwargs else config

    @classmethod
    def _from_af1_layout(cls, d: dict[str, Any]) -> AudioFlamingoConfig:
        opt = {k: d["opt_config"][k] for k in _OPT_IML_MAX_1_3B if k in d["opt_config"]}
        at = d.get("audio_transformer_kwargs", {})
        xb = d.get("xattn_block", {})
        ids = d.get("special_token_ids", {})
        windows = int(d.get("windows_per_audio", at.get("max_window_per_audio", 16)))
        if at.get("max_window_per_audio", windows) != windows:
            raise ConfigError("config: windows_per_audio != audio_transformer_kwargs.max_window_per_audio")
        return cls(
            opt=opt,
            audio_embed_dim=int(d["audio_embed_dim"]),
            windows_per_audio=windows,
            at_n_head=int(at.get("n_head", 8)),
            at_n_layers=int(at.get("n_layers", 3)),
            at_d_inner=int(at.get("d_inner", 2048)),
            max_num_media=int(at.get("max_num_media", 128)),
            xattn_heads=int(xb.get("heads", 8)),
            xattn_dim_head=int(xb.get("dim_head", 64)),
            xattn_ff_mult=int(xb.get("ff_mult", 4)),
            cross_attn_every_n_layers=int(d.get("cross_attn_every_n_layers", 1)),
            media_token_id=int(ids.get("<audio>", 50265)),
            eoc_token_id=int(ids.get("<|endofchunk|>", 50266)),
            sep_token_id=int(ids.get("<SEP>", 50267)),
            eos_token_id=int(ids.get("eos_token_id", opt.get("eos_token_id", 2))),
            pad_token_id=int(ids.get("pad_token_id", opt.get("pad_token_id", 1))),
        )

    @classmethod
    def from_json(cls, path: str | Path) -> AudioFlamingoConfig:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: cannot read model config ({e})") from e
        if not isinstance(d, dict) or ("opt_config" not in d and d.get("model_type") != cls.model_type):
            raise ConfigError(
                f"{path}: not an AF1 model config (neither the af1_tiny layout with opt_config nor a config.json "
                f"with model_type {cls.model_type!r})"
            )
        try:
            return cls.from_dict(d)
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{path}: not an AF1 model config ({e!r})") from e


def _opt_dict_from_pretrained(lm: str) -> dict[str, Any]:
    """The OPT config of ``lm`` (hub id or dir) in our ``opt`` dict form, vocab resized for AF1."""
    from ..checkpoints import hf_download, load_pretrained

    if Path(lm).expanduser().is_dir():
        cfg = load_pretrained(lm, OPTConfig.from_pretrained, f"OPT config of {lm}", include=("config.json",))
    else:  # a hub id: the one file, from the cache or the hub
        cfg = OPTConfig.from_json_file(str(hf_download(lm, "config.json")))
    opt = {k: getattr(cfg, k) for k in _OPT_IML_MAX_1_3B if hasattr(cfg, k)}
    opt["vocab_size"] = AF1_VOCAB_SIZE
    return opt

"""Build model + tokenizer from a Hydra ``model`` group config (``rag_flamingo/conf/model/*.yaml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from ..encoders.base import best_device
from ..errors import ConfigError
from ..paths import source_root
from .config import AudioFlamingoConfig
from .loading import _DTYPES, load_audio_flamingo
from .modeling import AudioFlamingo
from .tokenizer import load_af1_tokenizer

# what a ``model.generation`` config may hold: the fields of `rag_flamingo.engine.GenerationConfig`
# except the engine's own ``num_samples`` (CLAP filter); ``seed`` becomes ``generate``'s ``generator``
GENERATION_KEYS = (
    "max_new_tokens", "num_beams", "do_sample", "top_k", "top_p", "temperature", "length_penalty",
    "early_stopping", "use_cache", "reference_cache_quirk", "seed",
)


def _local(p: str | None) -> str | None:
    """Relative paths in configs: from the working directory, else from the repository root."""
    if p is None:
        return None
    path = Path(str(p)).expanduser()
    if not path.is_absolute() and not path.exists() and (source_root() / path).exists():
        return str(source_root() / path)
    return str(path) if path.exists() else str(p)


def checkpoint_spec(cfg: Mapping[str, Any]) -> Any:
    ck = cfg.get("checkpoint") or {}
    if ck.get("path"):
        return _local(ck["path"])
    if ck.get("repo_id") and ck.get("filename"):
        return {"repo_id": ck["repo_id"], "filename": ck["filename"]}
    raise ConfigError("model.checkpoint needs `path` or `repo_id` + `filename`")


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    if name in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise ConfigError(f"model.dtype={name!r}; use auto, fp32, bf16 or fp16")
    return _DTYPES[name]


def load_model(cfg: Mapping[str, Any]) -> tuple[AudioFlamingo, Any]:
    """(model, tokenizer) for a ``model`` config; hub files go through the HF cache."""
    cfg = _plain(cfg)
    device = best_device(cfg.get("device"))
    cache_dir = cfg.get("cache_dir")
    tokenizer = load_af1_tokenizer(_local(cfg.get("tokenizer")) or "facebook/opt-iml-max-1.3b", cache_dir=cache_dir)
    spec = checkpoint_spec(cfg)
    config = cfg.get("config")
    if config is None:  # a converted file carries its config; a released .pt has the foundation sizes
        converted = isinstance(spec, str) and spec.endswith(".safetensors")
        config = None if converted else AudioFlamingoConfig.foundation(lm=cfg.get("lm"))
    else:
        config = _local(config)
    model = load_audio_flamingo(
        spec, config, tokenizer, dtype=resolve_dtype(cfg.get("dtype"), device), device=device, cache_dir=cache_dir,
    )
    return model, tokenizer


def generation_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``model.generation`` checked against `GENERATION_KEYS` (an unknown key is a ConfigError naming it)."""
    gen = dict(_plain(cfg).get("generation") or {})
    unknown = set(gen) - set(GENERATION_KEYS)
    if unknown:
        raise ConfigError(f"model.generation: unknown keys {sorted(unknown)}; known: {GENERATION_KEYS}")
    return gen


def generation_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``model.generation`` as keyword arguments of ``AudioFlamingo.generate`` (``seed`` -> ``generator``)."""
    gen = generation_settings(cfg)
    seed = gen.pop("seed", None)
    if seed is not None:
        gen["generator"] = torch.Generator().manual_seed(int(seed))
    return gen


def _plain(cfg) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return dict(cfg)

"""Build model + tokenizer from a Hydra ``model`` group config (``rag_flamingo/conf/model/*.yaml``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..devices import best_device, model_dtype, parse_dtype
from ..errors import ConfigError
from ..paths import config_path
from .config import AudioFlamingoConfig
from .generation_settings import GenerationSettings
from .loading import load_audio_flamingo, pretrained_folder
from .modeling import AudioFlamingo
from .tokenizer import load_af1_tokenizer

DEFAULT_TOKENIZER = "facebook/opt-iml-max-1.3b"  # AF1's (model.tokenizer unset)


def checkpoint_spec(cfg: Mapping[str, Any]) -> Any:
    ck = cfg.get("checkpoint") or {}
    if ck.get("path"):
        return config_path(ck["path"])
    if ck.get("repo_id") and ck.get("filename"):
        return {"repo_id": ck["repo_id"], "filename": ck["filename"]}
    raise ConfigError("model.checkpoint needs `path` or `repo_id` + `filename`")


def default_tokenizer(spec: Any) -> str:
    """``model.tokenizer`` unset: a converted folder's own tokenizer, else AF1's base tokenizer."""
    folder = pretrained_folder(spec)
    return str(folder) if folder is not None and (folder / "tokenizer_config.json").is_file() else DEFAULT_TOKENIZER


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """``model.dtype``: auto (bf16 on CUDA, fp32 on CPU) or a dtype name."""
    return parse_dtype(name, "model.dtype", model_dtype(device))


def load_model(cfg: Mapping[str, Any]) -> tuple[AudioFlamingo, Any]:
    """(model, tokenizer) for a ``model`` config; hub files go through the HF cache."""
    cfg = _plain(cfg)
    device = best_device(cfg.get("device"))
    cache_dir = cfg.get("cache_dir")
    spec = checkpoint_spec(cfg)
    folder = pretrained_folder(spec)
    tokenizer = load_af1_tokenizer(config_path(cfg.get("tokenizer")) or default_tokenizer(spec), cache_dir=cache_dir)
    config = cfg.get("config")
    if config is None:  # a converted folder or file carries its config; a released .pt has the foundation sizes
        converted = folder is not None or (isinstance(spec, str) and spec.endswith(".safetensors"))
        config = None if converted else AudioFlamingoConfig.foundation(lm=cfg.get("lm"))
    else:
        config = config_path(config)
    model = load_audio_flamingo(
        spec,
        config,
        tokenizer,
        dtype=resolve_dtype(cfg.get("dtype"), device),
        device=device,
        cache_dir=cache_dir,
    )
    return model, tokenizer


def generation_settings(cfg: Mapping[str, Any], clap_samples: int = 1) -> GenerationSettings:
    """The ``model.generation`` section as `GenerationSettings` (unknown keys and bad values are
    ConfigErrors naming the setting). ``clap_samples > 1``: sample that many answers per query for the
    CLAP filter (``do_sample`` on, one beam, ``num_return_sequences=clap_samples``), the other settings
    as configured."""
    section = _plain(cfg).get("generation") or {}
    extra = dict(do_sample=True, num_beams=1, num_return_sequences=int(clap_samples)) if clap_samples > 1 else {}
    return GenerationSettings.from_config(section, **extra)


MODEL_RANGES: dict[str, dict[str, Any]] = {  # the model group's numeric settings (open group: no schema)
    "num_slots": {"whole": True, "ge": 1},  # AF1: audios per prompt, the query included
    "max_audios": {"whole": True, "ge": 1},  # transformers audio-LMs
    "max_context": {"whole": True, "ge": 1},
    "max_seconds": {"gt": 0},
}


def check_model_settings(cfg: Mapping[str, Any]) -> None:
    """A ``model`` section's decoding (`GenerationSettings`) and sizes checked before any work: one
    ConfigError naming the setting (``model.generation.num_beams=0``, ``model.num_slots=0``)."""
    from ..config import Range

    generation_settings(cfg)
    for key, rule in MODEL_RANGES.items():
        value = cfg.get(key)
        problem = Range(**rule).problem(value) if value is not None else None
        if problem:
            raise ConfigError(f"model.{key}={value}: {problem}")


def _plain(cfg) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            plain = OmegaConf.to_container(cfg, resolve=True)
            assert isinstance(plain, dict)  # a DictConfig becomes a dict
            return plain
    except ImportError:  # pragma: no cover
        pass
    return dict(cfg)

"""The engines of ``model.backend: transformers`` from a ``model`` config (conf/model/af3.yaml and the
others): the model class by name, the model and its processor loaded from a hub id or a local
``save_pretrained`` directory, and the engine for that processor (`TransformersAudioEngine`, or
`VoxtralEngine` for Voxtral's)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from ..checkpoints import pretrained_dir
from ..config import FlamingoConfig
from ..engine import ClapReranker
from ..errors import CheckpointError, ConfigError
from ..retrieval import Retriever
from .chat_icl import check_icl_format
from .transformers_audio import TransformersAudioEngine
from .voxtral import VoxtralEngine, load_voxtral_processor

# what from_pretrained reads from a hub repo (the tokenizer, processor, chat template, configs, weights:
# transformers' own weight names, not a repository's other copies such as Voxtral's consolidated.safetensors)
MODEL_FILES = ("*.json", "*.txt", "*.jinja", "*.model", "model*.safetensors", "*.tiktoken")


def model_class(name: str | None):
    """A transformers class by name (``model.model_class``), e.g. ``Qwen2AudioForConditionalGeneration``."""
    import transformers

    if not name:
        raise ConfigError("model.model_class is not set (e.g. AudioFlamingo3ForConditionalGeneration)")
    cls = getattr(transformers, str(name), None)
    if cls is None:
        raise ConfigError(
            f"model.model_class={name!r} is not a class of transformers {transformers.__version__}; "
            f"upgrade transformers or check the name"
        )
    return cls


def check_model_type(folder: Path, cls: type, source: str) -> None:
    """The folder's ``config.json`` holds the model ``cls`` is (transformers would build a default-sized
    model of ``cls`` around other weights, or random ones): one line naming both."""
    try:
        found = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"model {source}: {folder / 'config.json'} cannot be read ({exc})") from None
    want = getattr(getattr(cls, "config_class", None), "model_type", None)
    if want and found != want:
        raise CheckpointError(
            f"model {source}: {folder} holds a {found!r} model, not {want!r} ({cls.__name__}); "
            f"pick the model= that matches it (its model.model_class) or another checkpoint"
        )


def load_transformers_audio(mc: Mapping[str, Any]) -> tuple[Any, Any]:
    """(model, processor) of a ``model`` config with ``backend: transformers``: ``checkpoint`` a hub id
    (through the Hugging Face cache) or a local ``save_pretrained`` directory."""
    from transformers import AutoProcessor

    from ..devices import best_device
    from ..model.factory import resolve_dtype

    source = mc.get("checkpoint")
    if not source or not isinstance(source, str):
        raise ConfigError(
            f"model.checkpoint={source!r}: give a hub id (e.g. nvidia/audio-flamingo-3-hf) or a local directory"
        )
    cls = model_class(mc.get("model_class"))
    device = best_device(mc.get("device"))
    dtype = resolve_dtype(mc.get("dtype"), device)
    folder = pretrained_dir(source, f"model {source}", MODEL_FILES, mc.get("cache_dir"))
    device_map = mc.get("device_map") or None
    extra = {"offload_folder": mc["offload_folder"]} if mc.get("offload_folder") else {}
    check_model_type(folder, cls, source)
    try:
        if cls.__name__ == "VoxtralForConditionalGeneration":
            processor = load_voxtral_processor(str(folder))
        else:
            processor = AutoProcessor.from_pretrained(str(folder))
        model = cls.from_pretrained(str(folder), dtype=dtype, device_map=device_map, **extra)
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"model {source}: cannot load {cls.__name__} and its processor from {folder} ({first})"
        ) from exc
    if device_map is None:
        model.to(device)
    return model.eval(), processor


def engine_class(processor) -> type[TransformersAudioEngine]:
    """The engine for a model's processor: Voxtral's renders and expands its prompts itself."""
    if type(processor).__name__ == "VoxtralProcessor":
        return VoxtralEngine
    return TransformersAudioEngine


def build_transformers_engine(
    mc: dict,
    fc: FlamingoConfig,
    store,
    encoder,
    retriever: Retriever,
    model_parts: tuple | None = None,
    reranker: ClapReranker | None = None,
) -> TransformersAudioEngine:
    """The engine of a ``model`` group with ``backend: transformers`` (``mc``, see conf/model/af3.yaml)
    and the ``flamingo`` section; ``model_parts``: (model, processor) already loaded from it;
    ``reranker``: the CLAP filter (`rag_flamingo.components.clap_reranker`)."""
    from ..model.factory import generation_settings

    generation = generation_settings(mc, clap_samples=fc.clap_filter.samples)  # checked before any weights load
    icl_format = check_icl_format(str(mc.get("icl_format") or "single_turn"))
    if model_parts is None:
        model_parts = load_transformers_audio(mc)
    model, processor = model_parts[0], model_parts[1]
    return engine_class(processor)(
        store,
        model,
        processor,
        encoder,
        retriever=retriever,
        generation=generation,
        icl_format=icl_format,
        max_audios=int(fc.audio_slots or mc.get("max_audios") or 8),
        max_seconds=mc.get("max_seconds"),
        max_context=mc.get("max_context"),
        name=str(mc.get("name") or ""),
        reranker=reranker,
        decode=fc.decode,
    )

"""Loading released AF1 checkpoints strictly, and our converted safetensors files.

Key map (one function, `af1_key_layout`): every key of our module has one *primary* key in the
released layout, and some have aliases that the reference saves twice
(the released foundation.pt / chat.pt: ``old_decoder_blocks`` and ``gated_cross_attn_layers``, ``lm_head``):

  ours -> released primary [aliases] (``LE`` = ``lang_encoder``, ``LMD`` = ``lang_encoder.model.decoder``)
  audio_transformer.*                         -> audio_transformer.*
  decoder.embed_tokens.weight                 -> LMD.embed_tokens.weight [LE.lm_head.weight: the tied head]
  decoder.embed_positions.weight              -> LMD.embed_positions.weight
  decoder.final_layer_norm.*                  -> LMD.final_layer_norm.*
  decoder.layers.{i}.gated_cross_attn_layer.* -> LMD.layers.{i}.gated_cross_attn_layer.*
                                                 [LE.gated_cross_attn_layers.{i}.*]
  decoder.layers.{i}.decoder_layer.*          -> LMD.layers.{i}.decoder_layer.* [LE.old_decoder_blocks.{i}.*]

Rules: the checkpoint must hold exactly these keys with these shapes (missing / unexpected /
mis-shaped keys are reported by name as a CheckpointError). Aliases must be ``torch.equal`` to
their primary, else CheckpointError naming both; the one exception is the tied head: if
``lm_head.weight`` differs from ``embed_tokens.weight`` the reference's load order lets
``lm_head.weight`` win (it is loaded last into the shared parameter), so we use it for both and
log a warning. A ``module.`` prefix is accepted only as an exact prefix on every key.

Sources: a local ``.pt`` (``{'model_state_dict': ...}`` or a flat dict), the five
``*_part{1..5}.pt`` files (a directory or a list), a hub file (``hf://nvidia/audio-flamingo/foundation.pt``,
``{"repo_id":..., "filename":...}`` or the names ``foundation`` / ``chat``), a converted folder
(``save_pretrained``'s layout, written by ``scripts/convert_checkpoint.py``: ``config.json``,
``model.safetensors``, ``generation_config.json`` and the tokenizer's files; read with
``AudioFlamingoForConditionalGeneration.from_pretrained``, strictly), or a single ``.safetensors`` of
our keys with the config in its metadata (what the converter wrote before the folder layout).
``.pt`` files are always read with ``torch.load(weights_only=True, mmap=True)``; the model is built
on the meta device and the tensors are assigned, so loading costs about one model's worth of memory.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoints import CheckpointSource, key_mismatch, read_state_dict, resolve_checkpoint
from ..devices import parse_dtype
from ..errors import CheckpointError
from ..paths import check_writable_folder
from .config import AF1_LM_ID, AudioFlamingoConfig
from .modeling import AudioFlamingo, AudioFlamingoForConditionalGeneration

log = logging.getLogger(__name__)

AF1_HUB_REPO = "nvidia/audio-flamingo"
AF1_HUB_FILES = {"foundation": "foundation.pt", "chat": "chat.pt"}
CONVERTED_FORMAT = "rag_flamingo.af1.v1"
_LM = "lang_encoder."
_DEC = "lang_encoder.model.decoder."
_PART_RE = re.compile(r"_part(\d+)\.pt$")


@dataclass(frozen=True)
class KeySpec:
    checkpoint_key: str
    our_key: str
    shape: tuple[int, ...]
    role: str  # "primary" | "alias" | "tied_head"


def af1_key_layout(model: AudioFlamingo) -> list[KeySpec]:
    """Every released-checkpoint key with our key, expected shape and role (works on meta)."""
    specs: list[KeySpec] = []
    for our, t in model.state_dict(keep_vars=True).items():
        shape = tuple(t.shape)
        if our.startswith("audio_transformer."):
            specs.append(KeySpec(our, our, shape, "primary"))
            continue
        rest = our.removeprefix("decoder.")
        specs.append(KeySpec(_DEC + rest, our, shape, "primary"))
        if rest == "embed_tokens.weight":
            specs.append(KeySpec(_LM + "lm_head.weight", our, shape, "tied_head"))
        elif m := re.match(r"layers\.(\d+)\.(gated_cross_attn_layer|decoder_layer)\.(.+)$", rest):
            i, part, suffix = m.groups()
            group = "gated_cross_attn_layers" if part == "gated_cross_attn_layer" else "old_decoder_blocks"
            specs.append(KeySpec(f"{_LM}{group}.{i}.{suffix}", our, shape, "alias"))
    return specs


# ---------------------------------------------------------------------- sources
def pretrained_folder(checkpoint: Any) -> Path | None:
    """The folder of a ``save_pretrained`` checkpoint (one holding ``config.json``), else None."""
    if isinstance(checkpoint, (str, Path)):
        path = Path(str(checkpoint)).expanduser()
        if path.is_dir() and (path / "config.json").is_file():
            return path
    return None


def checkpoint_files(checkpoint: Any, cache_dir: str | None = None) -> list[Path]:
    """Local file(s) for a checkpoint spec (see module docstring); hub files come through the cache."""
    if isinstance(checkpoint, (list, tuple)):
        return _ordered_parts([Path(p) for p in checkpoint])
    if isinstance(checkpoint, str) and checkpoint in AF1_HUB_FILES:
        checkpoint = CheckpointSource(repo_id=AF1_HUB_REPO, filename=AF1_HUB_FILES[checkpoint])
    source = CheckpointSource.parse(checkpoint)
    if source.repo_id:
        return [resolve_checkpoint(source, "AF1 checkpoint", cache_dir, local_option="model.checkpoint.path")]
    path = Path(str(source.path)).expanduser()
    if path.is_dir():
        parts = sorted(path.glob("*_part*.pt"))
        if not parts:
            raise CheckpointError(f"{path}: directory holds no *_partN.pt files; pass the checkpoint file itself")
        return _ordered_parts(parts)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: checkpoint not found. Pass a local .pt/.safetensors path, a directory with the "
            f"five *_partN.pt files, or 'foundation'/'chat' to download from {AF1_HUB_REPO}."
        )
    return [path]


def _ordered_parts(paths: list[Path]) -> list[Path]:
    numbered = []
    for p in paths:
        m = _PART_RE.search(p.name)
        if not m:
            raise CheckpointError(f"{p}: not a *_partN.pt file")
        if not p.is_file():
            raise CheckpointError(f"{p}: checkpoint part not found")
        numbered.append((int(m.group(1)), p))
    numbered.sort()
    if [n for n, _ in numbered] != list(range(1, len(numbered) + 1)):
        raise CheckpointError(
            f"checkpoint parts must be numbered 1..N without gaps, got {[str(p) for _, p in numbered]}"
        )
    return [p for _, p in numbered]


def read_released_state_dict(paths: Iterable[Path]) -> dict[str, torch.Tensor]:
    """Merged (mmap-backed) state dict of one released file or its parts; duplicate keys across parts fail."""
    merged: dict[str, torch.Tensor] = {}
    for p in paths:
        sd = read_state_dict(p, inner_key="model_state_dict", mmap=True)
        if dup := sorted(set(sd) & set(merged)):
            raise CheckpointError(f"{p}: keys already present in an earlier part: {dup[:5]}")
        merged.update(sd)
    return strip_module_prefix(merged)


def strip_module_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a DDP/FSDP ``module.`` prefix only when every key starts with exactly that."""
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module.") :]: v for k, v in sd.items()}
    return sd


# ---------------------------------------------------------------------- mapping
def map_released_state_dict(
    sd: Mapping[str, torch.Tensor], layout: list[KeySpec], source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Released keys -> our keys, strictly (see module docstring for the rules)."""
    check_keys(sd, {s.checkpoint_key: s.shape for s in layout}, source)
    primary_of = {s.our_key: s.checkpoint_key for s in layout if s.role == "primary"}
    ours: dict[str, torch.Tensor] = {our: sd[key] for our, key in primary_of.items()}
    unequal = []
    for s in layout:
        if s.role == "primary":
            continue
        primary_key = primary_of[s.our_key]
        if torch.equal(sd[s.checkpoint_key], sd[primary_key]):
            continue
        if s.role == "tied_head":
            log.warning(
                "%s: %s differs from %s; using %s for the tied embedding (the reference loads it last)",
                source,
                s.checkpoint_key,
                primary_key,
                s.checkpoint_key,
            )
            ours[s.our_key] = sd[s.checkpoint_key]
        else:
            unequal.append(f"{s.checkpoint_key} != {primary_key}")
    if unequal:
        raise CheckpointError(
            f"{source}: {len(unequal)} alias keys differ from the keys they duplicate (a corrupted or "
            f"hand-edited checkpoint; re-download it): " + "; ".join(unequal[:10])
        )
    return ours


def check_keys(sd: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], source: str) -> None:
    """CheckpointError listing missing, unexpected and mis-shaped keys unless ``sd`` has exactly ``expected``."""
    missing, unexpected, bad_shape = key_mismatch(sd, expected)
    if missing or unexpected or bad_shape:
        raise CheckpointError(_mismatch_message(source, missing, unexpected, bad_shape, len(expected)))


def _mismatch_message(source, missing, unexpected, bad_shape, n_expected) -> str:
    lines = [f"{source}: does not match the AF1 layout for this config ({n_expected} keys expected)."]
    for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", bad_shape)):
        if items:
            shown = ", ".join(items[:8]) + (f", ... ({len(items) - 8} more)" if len(items) > 8 else "")
            lines.append(f"  {len(items)} {title}: {shown}")
    lines.append(
        "  Fix: pass the model config that matches this checkpoint (e.g. AudioFlamingoConfig.foundation()), "
        "or the released foundation.pt / chat.pt."
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------- converted (safetensors)
def read_converted(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format_name") != CONVERTED_FORMAT:
                raise CheckpointError(
                    f"{path}: not written by scripts/convert_checkpoint.py (metadata format_name="
                    f"{meta.get('format_name')!r}); convert the released .pt with that script"
                )
            return {k: f.get_tensor(k) for k in f.keys()}, meta  # noqa: SIM118 (a safetensors handle, not a dict)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read safetensors file ({e})") from e


# ---------------------------------------------------------------------- entry point
def build_meta_model(config: AudioFlamingoConfig) -> AudioFlamingo:
    with torch.device("meta"):
        return AudioFlamingo(config)


def load_audio_flamingo(
    checkpoint: Any,
    config: AudioFlamingoConfig | str | Path | Mapping | None = None,
    tokenizer=None,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    cache_dir: str | None = None,
) -> AudioFlamingo:
    """An `AudioFlamingo` from a checkpoint: resolve, read, map strictly, assign into a meta-built model.

    ``config``: an `AudioFlamingoConfig`, a JSON path (af1_tiny format or ours), a dict, or None
    (the config stored in a converted file, else the foundation preset with the OPT config read
    from ``facebook/opt-iml-max-1.3b``). ``tokenizer``: if given, its special-token ids and size
    are checked against the config. ``dtype``/``device``: cast/move after loading (e.g. bf16 on GPU; a
    converted folder keeps its saved dtype when ``dtype`` is None).
    """
    folder = pretrained_folder(checkpoint)
    if folder is not None:
        model = AudioFlamingoForConditionalGeneration.from_pretrained(
            folder, **({"config": _as_config(config)} if config is not None else {}), dtype=dtype or "auto"
        )
        if tokenizer is not None:
            from .tokenizer import check_tokenizer

            check_tokenizer(tokenizer, model.config)
        return model.to(device) if device is not None else model
    paths = checkpoint_files(checkpoint, cache_dir)
    source = ", ".join(str(p) for p in paths)
    converted = len(paths) == 1 and paths[0].suffix == ".safetensors"
    if converted:
        sd, meta = read_converted(paths[0])
        if config is None and "config" in meta:
            config = AudioFlamingoConfig.from_dict(json.loads(meta["config"]))
    config = _as_config(config)
    if tokenizer is not None:
        from .tokenizer import check_tokenizer

        check_tokenizer(tokenizer, config)
    model = build_meta_model(config)
    if converted:  # our keys, no aliases
        check_keys(sd, {k: tuple(v.shape) for k, v in model.state_dict(keep_vars=True).items()}, source)
    else:
        sd = map_released_state_dict(read_released_state_dict(paths), af1_key_layout(model), source)
    model.load_state_dict(sd, strict=True, assign=True)
    model.eval()
    if dtype is not None or device is not None:
        model.to(device=device, dtype=dtype)  # type: ignore[call-arg]  # PreTrainedModel.to's wrapper hides its signature
    return model


def _as_config(config) -> AudioFlamingoConfig:
    if config is None:
        return AudioFlamingoConfig.foundation(lm=AF1_LM_ID)
    if isinstance(config, AudioFlamingoConfig):
        return config
    if isinstance(config, Mapping):
        return AudioFlamingoConfig.from_dict(dict(config))
    return AudioFlamingoConfig.from_json(config)


# ---------------------------------------------------------------------- conversion


def convert_released_checkpoint(
    checkpoint: Any,
    out: str | Path,
    config: AudioFlamingoConfig | str | Path | Mapping | None = None,
    dtype: str | torch.dtype | None = None,
    cache_dir: str | None = None,
    tokenizer: Any = AF1_LM_ID,
) -> Path:
    """Released AF1 ``.pt`` (or parts, or a hub name) -> a ``save_pretrained`` folder: ``config.json``,
    ``model.safetensors`` (our keys, no aliases), ``generation_config.json`` and the AF1 tokenizer's
    files, so ``AudioFlamingoForConditionalGeneration.from_pretrained(out)`` (or
    ``load_audio_flamingo(out)``) needs nothing else.

    The same strict mapping as loading (aliases checked, ``lm_head`` wins). ``dtype``: keep
    (None/fp32) or cast to bf16/fp16 (halves the folder). ``tokenizer``: the base tokenizer (hub id or
    folder) or an AF1 tokenizer object; it is checked against the config before anything is written
    (None: the weights alone, for benchmarks of random models without a tokenizer of their size).
    """
    from .tokenizer import check_tokenizer, load_af1_tokenizer

    config = _as_config(config) if config is not None else AudioFlamingoConfig.foundation()
    checkpoint_files(checkpoint, cache_dir)  # a missing checkpoint is named before the tokenizer is fetched
    if isinstance(tokenizer, (str, Path)):
        tokenizer = load_af1_tokenizer(str(tokenizer), cache_dir=cache_dir)
    if tokenizer is not None:
        check_tokenizer(tokenizer, config)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out}: exists and is not a folder; the converted checkpoint is a folder")
    check_writable_folder(out, "")  # before the weights load: a folder that cannot be made is one line
    model = load_audio_flamingo(checkpoint, config, dtype=parse_dtype(dtype, "dtype"), cache_dir=cache_dir)
    model.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def released_state_dict(model: AudioFlamingo) -> dict[str, torch.Tensor]:
    """Our weights in the released AF1 layout, aliases included as separate copies (as the
    reference saves them). For tests and benchmarks that need a file in the original format."""
    ours = model.state_dict()
    return {s.checkpoint_key: ours[s.our_key].detach().clone() for s in af1_key_layout(model)}

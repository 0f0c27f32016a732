"""One entry point from a ``dataset`` config to a split's manifest: ``resolve_split``.

``build_index`` asks for the index split, ``evaluate`` for the query split; both get
``(manifest_path, audio_root)``: a JSONL manifest (see ``manifest.py``) whose relative ``path``
values are relative to ``audio_root``.

Where the manifest comes from, in order:
1. ``dataset.manifest`` set: the user's own JSONL. A string (``{split}`` in it is replaced by the
   split name; without it the one file serves every split) or a mapping ``split -> path``.
   Audio root: ``dataset.root`` when set, else the manifest's folder.
2. source ``demo``: generated once (deterministic) into ``paths.cache_root()/datasets/demo``.
3. source ``folder``: ``dataset.root`` is scanned (see ``folder.py``); the manifest is written to
   ``paths.cache_root()/datasets/folder/<hash of the folder path>/<split>.jsonl``.
4. an official dataset: ``<root>/manifests/<split>.jsonl``; when it does not exist, a ManifestError
   gives the ``python -m index_builder.manifests`` command that makes it. (The repository's
   ``data_manifests/`` holds only the datasets' READMEs; nothing is looked up there, so an installed
   package finds the same manifests as a checkout.)

The source is ``dataset.source`` when set, else ``demo``/``folder`` by name, else ``official``.
``split`` may be a split name or a role, ``index`` / ``query``, looked up in ``dataset.splits``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path

from .. import paths
from ..config import DatasetConfig
from ..errors import ConfigError, ManifestError
from ..jsonl import dumps
from . import demo, folder
from .manifest import write_manifest

logger = logging.getLogger(__name__)

OFFICIAL_DATASETS = (
    "clotho",
    "audiocaps",
    "esc50",
    "us8k",
    "gtzan",
    "medley_solos_db",
    "nsynth",
    "fsd50k",
    "cochlscene",
    "clotho_aqa",
    "music_avqa",
    "nonspeech7k",
    "crema_d",
    "ravdess",
)
ROLES = ("index", "query")


def resolve_split(dataset_cfg: DatasetConfig, split: str) -> tuple[Path, Path]:
    """``(manifest_path, audio_root)`` for one split of a dataset config."""
    name = dataset_cfg.name
    if not name:
        raise ConfigError("dataset.name is not set (pick a dataset, e.g. dataset=demo or dataset=folder)")
    split = split_name(dataset_cfg, split)
    if dataset_cfg.manifest:
        return _user_manifest(dataset_cfg, split)
    source = source_of(dataset_cfg)
    if source == "demo":
        return _demo(dataset_cfg, split)
    if source == "folder":
        return _folder(dataset_cfg, split)
    if source == "official":
        return _official(dataset_cfg, split)
    raise ConfigError(f"dataset.source={source!r} is unknown; use demo, folder or official")


def peek_split(dataset_cfg: DatasetConfig, split: str) -> tuple[list[dict], Path, bool]:
    """``(rows, audio_root, audio_exists)`` of one split, writing nothing (a dry run's view): a folder
    is scanned in memory, the demo's rows are known before it is generated (``audio_exists`` False:
    generated on first use). Errors as `resolve_split`."""
    from .manifest import read_manifest

    if not dataset_cfg.name:
        raise ConfigError("dataset.name is not set (pick a dataset, e.g. dataset=demo or dataset=folder)")
    split = split_name(dataset_cfg, split)
    source = source_of(dataset_cfg)
    if not dataset_cfg.manifest and source == "demo":
        _check_split(dataset_cfg, split, list(demo.SPLIT_SIZES))
        root = Path(dataset_cfg.root or demo.demo_root())
        if not demo.is_complete(root):
            return demo.demo_rows(split), root, False
    elif not dataset_cfg.manifest and source == "folder":
        root = _folder_root(dataset_cfg)
        splits = folder.scan_folder(root)
        _check_split(dataset_cfg, split, list(splits))
        return splits[split], root, True
    manifest, root = resolve_split(dataset_cfg, split)
    return read_manifest(manifest, allow_outside_root=bool(dataset_cfg.allow_outside_root)), root, True


def store_stem(dataset_cfg: DatasetConfig) -> str:
    """The dataset's part of a default store name (`paths.default_store`): its name; for a folder of
    your own, or a manifest of your own, also that folder's (manifest's) name and a short hash of its
    resolved path, so that two folders never share a default store."""
    name = str(dataset_cfg.name)
    manifest = dataset_cfg.manifest
    if manifest:  # the resolved manifest path(s) and audio root: however they are spelt, one store
        specs = dict(manifest) if isinstance(manifest, Mapping) else {"": manifest}
        paths_ = {str(k): str(Path(str(v)).expanduser().resolve()) for k, v in sorted(specs.items())}
        root = dataset_cfg.root
        where = json.dumps([paths_, str(Path(str(root)).expanduser().resolve()) if root else ""])
        label = "manifest"
        if not isinstance(manifest, Mapping):
            named = Path(paths_[""].replace("{split}", ""))
            label = named.name.removesuffix(".jsonl").strip("._-") or named.parent.name
    elif source_of(dataset_cfg) == "folder" and dataset_cfg.root:
        folder_root = dataset_root(dataset_cfg).resolve()
        label, where = folder_root.name, str(folder_root)
    else:
        return name
    slug = "".join(c if c.isalnum() or c in "._" else "_" for c in label).strip("._") or "data"
    return f"{name}-{slug}-{hashlib.sha1(where.encode()).hexdigest()[:8]}"


def check_split_exists(dataset_cfg: DatasetConfig, split: str, setting: str = "split") -> None:
    """Refuse a split the dataset does not have (``index_split=bar``), where its splits are known
    without writing anything: the demo's, an official dataset's ``splits.available``, a folder's."""
    if dataset_cfg.manifest:
        return  # a manifest of your own: any split its path names
    name = split_name(dataset_cfg, split)
    source = source_of(dataset_cfg)
    known: list[str] | None = None
    if source == "demo":
        known = list(demo.SPLIT_SIZES)
    elif source == "folder" and dataset_cfg.root and dataset_root(dataset_cfg).is_dir():
        known = list(folder.scan_folder(dataset_root(dataset_cfg).resolve()))
    elif source == "official":
        available = dataset_cfg.splits.available
        known = [str(s) for s in available] if available else None
    if known is not None and name not in known:
        dataset = dataset_cfg.name
        raise ConfigError(
            f"{setting}={split}: dataset {dataset!r} has no split {name!r}; available: {', '.join(known)}"
        )


def source_of(dataset_cfg: DatasetConfig) -> str:
    name = dataset_cfg.name
    return dataset_cfg.source or (name if name in ("demo", "folder") else "official")


def split_name(dataset_cfg: DatasetConfig, split: str) -> str:
    """A split name; the roles ``index``/``query`` map through ``dataset.splits``. A folder's ``auto``
    is ``train`` / ``test`` when the folder has both split folders, else ``all``."""
    if split not in ROLES:
        return split
    name = getattr(dataset_cfg.splits, split)
    if not name:
        raise ConfigError(
            f"dataset {dataset_cfg.name!r}: dataset.splits.{split} is not set "
            f"(name the split that serves as the {split} split)"
        )
    if name == "auto":
        return _auto_split(dataset_cfg, split)
    return str(name)


def _auto_split(dataset_cfg: DatasetConfig, role: str) -> str:
    manifest = dataset_cfg.manifest
    if manifest:  # a manifest of your own: per split (a {split} path, or {split: path}) -> train/test, else all
        per_split = isinstance(manifest, Mapping) or "{split}" in str(manifest)
        return ("train" if role == "index" else "test") if per_split else folder.ALL_SPLIT
    if source_of(dataset_cfg) != "folder" or not dataset_cfg.root:
        return folder.ALL_SPLIT
    found = folder.folder_splits(folder.list_audio_files(dataset_root(dataset_cfg)))
    if {"train", "test"} <= set(found):
        return "train" if role == "index" else "test"
    return folder.ALL_SPLIT


def dataset_root(dataset_cfg: DatasetConfig) -> Path:
    """``dataset.root``, defaulting to ``paths.data_root()/<name>``."""
    root = dataset_cfg.root
    return Path(root).expanduser() if root else paths.data_root() / str(dataset_cfg.name)


def collapse_groups(rows: list[dict]) -> list[dict]:
    """One row per ``group`` (first row's fields), captions of all its rows merged in order.

    For query splits whose captions are spread over several rows of one recording (AudioCaps):
    evaluate each recording once against all its reference captions.
    """
    merged: dict[str, dict] = {}
    for row in rows:
        group = row.get("group", row["path"])
        if group not in merged:
            merged[group] = dict(row, captions=list(row.get("captions") or []))
        else:
            merged[group]["captions"].extend(row.get("captions") or [])
    out = list(merged.values())
    for row in out:
        if not row["captions"]:
            del row["captions"]
    return out


# ---------------------------------------------------------------------------------------------


def _check_split(dataset_cfg: DatasetConfig, split: str, available: list[str]) -> None:
    if split not in available:
        raise ConfigError(f"dataset {dataset_cfg.name!r} has no split {split!r}; available: {', '.join(available)}")


def _user_manifest(dataset_cfg: DatasetConfig, split: str) -> tuple[Path, Path]:
    spec = dataset_cfg.manifest
    if isinstance(spec, Mapping):
        if split not in spec:
            raise ConfigError(f"dataset.manifest has no entry for split {split!r} (has: {', '.join(map(str, spec))})")
        spec = spec[split]
    path = Path(str(spec).replace("{split}", split)).expanduser()
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found (dataset.manifest={spec})")
    root = dataset_cfg.root
    return path, Path(root).expanduser() if root else path.parent


def _demo(dataset_cfg: DatasetConfig, split: str) -> tuple[Path, Path]:
    _check_split(dataset_cfg, split, list(demo.SPLIT_SIZES))
    root = demo.ensure_demo(dataset_cfg.root or None)
    return root / f"{split}.jsonl", root


def _folder_root(dataset_cfg: DatasetConfig) -> Path:
    if not dataset_cfg.root:
        raise ConfigError(
            "dataset.root is not set: point it at a folder of audio files "
            "(dataset=folder dataset.root=/path/to/audio), or set dataset.manifest"
        )
    return dataset_root(dataset_cfg).resolve()


def _folder(dataset_cfg: DatasetConfig, split: str) -> tuple[Path, Path]:
    root = _folder_root(dataset_cfg)
    splits = folder.scan_folder(root)
    _check_split(dataset_cfg, split, list(splits))
    key = hashlib.sha1(str(root).encode()).hexdigest()[:16]
    out = paths.cache_root() / "datasets" / "folder" / key
    manifest = out / f"{split}.jsonl"
    text = "".join(dumps(r) for r in splits[split])
    if not manifest.is_file() or manifest.read_text(encoding="utf-8") != text:
        write_manifest(splits[split], manifest)  # rewritten only when the folder changed
        (out / "source.json").write_text(json.dumps({"root": str(root)}) + "\n")
    logger.info("folder %s: split %s has %d files", root, split, len(splits[split]))
    return manifest, root


def manifest_maker(name: str, root: Path) -> str:
    """The command that turns an official dataset's metadata (downloaded as its data_manifests README
    says) into our manifests."""
    return f"python -m index_builder.manifests {name} --metadata {root} --out {root / 'manifests'} --check-audio"


def _official(dataset_cfg: DatasetConfig, split: str) -> tuple[Path, Path]:
    name = dataset_cfg.name
    root = dataset_root(dataset_cfg)
    available = dataset_cfg.splits.available
    if available:
        _check_split(dataset_cfg, split, [str(s) for s in available])
    path = root / "manifests" / f"{split}.jsonl"
    if path.is_file():
        return path, root
    maker = ""
    if name in OFFICIAL_DATASETS:
        maker = (
            f"\nMake it from the official metadata (see data_manifests/{name}/README.md in the "
            f"rag-flamingo repository):\n  {manifest_maker(name, root)}"
        )
    raise ManifestError(f"dataset {name!r}: no manifest for split {split!r}; looked for:\n  {path}{maker}")

"""Manifest makers: each dataset's official metadata -> our JSONL manifests, one file per split.

``make_manifests(name, metadata_dir, out_dir)`` runs one maker and writes ``<out>/<split>.jsonl``;
``python -m index_builder.manifests <dataset> --metadata DIR --out DIR`` is the command line.
``metadata_dir`` is the dataset root as extracted (see ``data_manifests/<name>/README.md``): the
rows' ``path`` values are relative to it, so the same folder is the dataset's ``root`` later.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from rag_flamingo.datasets.manifest import write_manifest
from rag_flamingo.datasets.sources import OFFICIAL_DATASETS
from rag_flamingo.errors import ConfigError, ManifestError, did_you_mean
from rag_flamingo.paths import check_writable_folder

logger = logging.getLogger(__name__)

DATASETS = OFFICIAL_DATASETS  # one list: the sources know which datasets have a maker


@dataclass
class MakerResult:
    """What a maker wrote: split -> manifest path and row count, and rows left out (missing audio)."""

    manifests: dict[str, Path] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)


def maker(name: str):
    """The ``make(metadata, **options) -> {split: rows}`` function of a dataset."""
    if name not in DATASETS:
        raise ConfigError(f"no manifest maker for {name!r}; available: {', '.join(DATASETS)}")
    return importlib.import_module(f"{__name__}.{name}").make


def make_manifests(
    name: str, metadata: str | Path, out: str | Path, check_audio: bool = False, **options
) -> MakerResult:
    """Run ``name``'s maker on ``metadata`` and write ``out/<split>.jsonl`` for every split.

    ``check_audio``: rows whose audio file is not under ``metadata`` are left out of the manifest
    and listed, with the reason, in ``out/<split>.missing.jsonl`` (e.g. AudioCaps clips whose
    YouTube video is gone). ``options`` are the maker's keyword options (strings are fine).
    """
    metadata, out = Path(metadata), Path(out)
    if not metadata.is_dir():
        raise ManifestError(f"{metadata}: metadata folder not found")
    make = maker(name)
    known = set(inspect.signature(make).parameters) - {"metadata"}
    unknown = sorted(set(options) - known)
    if unknown:
        named = ", ".join(f"{u}{did_you_mean(u, known)}" for u in unknown)
        raise ConfigError(f"{name}: unknown option(s) {named}; known: {', '.join(sorted(known)) or '(none)'}")
    check_out(out)
    result = MakerResult()
    try:
        splits = make(metadata, **options)
    except ConfigError as exc:  # a maker option's value (query_fold=9): say which dataset it was for
        raise ConfigError(f"{name}: {exc}") from None
    except UnicodeDecodeError as exc:  # a maker reading a file without `common`'s readers
        raise ManifestError(
            f"{name}: a metadata file under {metadata} is not UTF-8 text ({exc.reason}); "
            f"the official files are UTF-8: re-extract the dataset"
        ) from None
    for split, rows in splits.items():
        _check_unique(name, split, rows)
        if check_audio:
            rows = _drop_missing(metadata, rows, out / f"{split}.missing.jsonl", result, split, out)
        if not rows:
            logger.warning("%s/%s: no rows, no manifest written", name, split)
            continue
        result.manifests[split] = _write(rows, out / f"{split}.jsonl", out)
        result.counts[split] = len(rows)
        logger.info("%s/%s: %d rows -> %s", name, split, len(rows), result.manifests[split])
    return result


def check_out(out: Path) -> None:
    """The output folder, before any work: a folder or one that can be created there, not a file;
    ConfigError naming ``--out``. Nothing is created until a manifest is written."""
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"--out {out}: is a file, not a folder; give the folder for <split>.jsonl (e.g. {out.parent / 'manifests'})"
        )
    existing = next(p for p in [out, *out.parents] if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"--out {out}: {existing} is a file, so no folder can be made there; give another folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: {existing} is not writable; give a writable folder")
    check_writable_folder(out, "--out ")


def _check_unique(name: str, split: str, rows: list[dict]) -> None:
    seen: dict[str, str] = {}
    for row in rows:
        if row["id"] in seen:
            raise ManifestError(
                f"{name}/{split}: id {row['id']!r} is used by {seen[row['id']]} and "
                f"{row['path']}; remove the duplicate file or metadata row"
            )
        seen[row["id"]] = row["path"]


def _write(rows: list[dict], path: Path, out: Path) -> Path:
    """``write_manifest``, a failure to write (disk full, a folder that refuses files) one line naming ``--out``."""
    try:
        return write_manifest(rows, path)
    except OSError as exc:
        raise ConfigError(
            f"--out {out}: {path} cannot be written ({exc.strerror or exc}); give a writable folder"
        ) from None


def _drop_missing(
    metadata: Path, rows: list[dict], report: Path, result: MakerResult, split: str, out: Path
) -> list[dict]:
    present: list[dict] = []
    absent: list[dict] = []
    for row in rows:
        (present if (metadata / row["path"]).is_file() else absent).append(row)
    if absent:
        _write([dict(r, reason="audio file not found") for r in absent], report, out)
        result.missing[split] = len(absent)
        logger.warning("%s: %d of %d rows have no audio file; listed in %s", split, len(absent), len(rows), report)
    elif report.exists():
        report.unlink()
    return present

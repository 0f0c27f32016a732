"""A store's items: a manifest row as a row of the items table, and its identity.

``content`` is a digest of the item's audio bytes (``content_key``); ``recording_key`` names the
recording an item is across sources; a store row is one manifest row of one source: its recording
and its id (``row_key``).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..errors import AudioError
from ..hashing import file_sha256
from .records import StoreInfo

# Manifest fields kept as typed columns; any other manifest key goes into the JSON column `meta`.
ITEM_COLUMNS = {
    "id": pa.string(),
    "path": pa.string(),
    "group": pa.string(),
    "split": pa.string(),
    "start": pa.float64(),
    "end": pa.float64(),
    "label": pa.string(),
    "labels": pa.list_(pa.string()),
    "captions": pa.list_(pa.string()),
    "question": pa.string(),
    "answer": pa.string(),
    "content": pa.string(),  # content_key of the item's audio (segment), computed when indexed
    "meta": pa.string(),
}
ITEM_SCHEMA = pa.schema([(name, kind) for name, kind in ITEM_COLUMNS.items()])


def item_record(row: dict, split: str | None = None) -> dict:
    """A manifest row as an items-table record (typed columns + JSON `meta` for the rest)."""
    rec: dict[str, Any] = dict.fromkeys(ITEM_COLUMNS)
    extra: dict[str, Any] = {}
    for key, value in row.items():
        if key in ITEM_COLUMNS and key != "meta":
            rec[key] = value
        else:
            extra[key] = value
    for key in ("id", "path", "group", "split", "question", "answer"):
        if rec[key] is not None:
            rec[key] = str(rec[key])
    if rec["label"] is not None:
        rec["label"] = str(rec["label"])
    for key in ("labels", "captions"):
        if rec[key] is not None:
            value = rec[key]
            rec[key] = [str(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    for key in ("start", "end"):
        if rec[key] is not None:
            rec[key] = float(rec[key])
    if rec["group"] is None:
        rec["group"] = rec["path"]
    if split is not None and rec["split"] is None:
        rec["split"] = split
    rec["meta"] = json.dumps(extra, sort_keys=True, ensure_ascii=False) if extra else None
    return rec


def items_table(records: Iterable[dict]) -> pa.Table:
    return pa.Table.from_pylist(list(records), schema=ITEM_SCHEMA)


def item_from_record(rec: dict) -> dict:
    """Inverse of item_record: a plain dict with the manifest's keys (None fields dropped)."""
    out = {k: v for k, v in rec.items() if k != "meta" and v is not None}
    if rec.get("meta"):
        out.update(json.loads(rec["meta"]))
    return out


def item_group(item: dict) -> str:
    """The recording an item belongs to (its ``group``, else its file): retrieval returns one row
    per group and never the query's own group."""
    return str(item.get("group") or item.get("path") or item.get("id"))


def content_key(path: str | Path, start: float | None = None, end: float | None = None) -> str:
    """The identity of an audio file's content: 32 hex digits of the sha256 of its bytes, with
    ``@start-end`` (seconds) appended when a segment is given, so two segments of one file differ
    and a copy of a file under another name is the same content."""
    try:
        digest = file_sha256(path)[:32]
    except OSError as exc:
        raise AudioError(path, f"cannot be read ({exc.strerror or exc})") from exc
    if start is None and end is None:
        return digest
    return f"{digest}@{_seconds(start)}-{_seconds(end)}"


def _seconds(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def recording_key(item: dict, audio_root: str | Path) -> str:
    """The recording an item is, across sources (datasets, folders, manifests).

    An item without an explicit ``group`` (a stored item's group defaults to its path) is its
    file, ``audio_root / path`` (the root resolved, the path below it normalised): the same relative
    path under the same root is the same file whichever manifest lists it (and a query given as that
    file's absolute path matches it), while ``dog/1.wav`` under ``train/`` and under ``test/`` are two
    recordings. An item with an
    explicit group is ``"<resolved audio_root>::<group>"``: groups name recordings within a source.
    """
    path = item.get("path")
    explicit_group = item.get("group") not in (None, "", path)
    root = _resolved_root(str(audio_root))
    if path is not None and not explicit_group:
        # the root is resolved (once per root); the path below it only normalised: resolving every
        # row's file costs a system call per row (seconds per 100k rows) at every store open
        return os.path.normpath(os.path.join(root, os.path.expanduser(str(path))))
    return f"{root}::{item_group(item)}"


def _resolved_root(audio_root: str) -> str:
    root = Path(audio_root).expanduser()
    return _resolved_absolute(str(root)) if root.is_absolute() else str(root.resolve())  # relative: cwd-bound


@functools.lru_cache(maxsize=64)
def _resolved_absolute(root: str) -> str:
    return str(Path(root).resolve())


def row_recording_keys(info: StoreInfo, items: list[dict]) -> list[str]:
    """The recording key of each store row, under the audio root of the source that holds it."""
    return [recording_key(item, info.source_of_row(row).audio_root) for row, item in enumerate(items)]


def row_key(row: dict, audio_root: str | Path) -> tuple[str, str]:
    """Which store row a manifest row is: its recording (``recording_key``) and its id.

    The recording alone does not name a row (the segments of one file, or several questions about
    one clip, are rows of one recording); the id alone does not either (``dog/1`` of two folders).
    An append finds a row already stored by this key and compares its ``content`` and fields
    (``row_fields``): equal is unchanged, different is replaced.
    """
    return recording_key(row, audio_root), str(row["id"])


def namespaced_id(audio_root: str | Path, row_id: str) -> str:
    """The id an appended row gets when another recording already holds its own id:
    ``<audio root's folder name>:<id>`` (``new_clips:dog/1``)."""
    return f"{Path(_resolved_root(str(audio_root))).name or 'root'}:{row_id}"


def row_fields(row: dict) -> dict:
    """A manifest row's fields as the store keeps them (``item_record``), without what the build
    adds (``content``, ``split``): two rows with equal fields describe the same item."""
    return {k: v for k, v in item_record(row).items() if k not in ("content", "split")}

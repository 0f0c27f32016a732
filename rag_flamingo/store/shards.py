"""Embedding shards (``shards/``): writing one with its ``.done`` marker, reading markers, vectors
and items, finding a damaged shard and dropping it, and the rejected items of a shard and of the store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import StoreError
from ..jsonl import read_jsonl, write_jsonl
from .items import items_table
from .layout import REJECTED_FILE, SHARDS_DIR, read_parquet, relative_path, repair_hint, write_atomic
from .records import FileRecord, ShardMarker, file_problems


def shard_stem(root: Path, shard: int) -> Path:
    return Path(root) / SHARDS_DIR / f"{shard:06d}"


def write_shard(
    root: Path,
    shard: int,
    embeddings: np.ndarray,
    records: list[dict],
    rejected: list[dict] | None = None,
    key: str = "",
    source: dict | None = None,
    rows: list[dict] | None = None,
) -> None:
    """Write one shard atomically; the `.done` marker is written last.

    ``rejected`` (items skipped in this shard, each with a ``reason``) is kept with the shard, so
    a resumed build neither retries nor duplicates them. The marker records the size and sha256 of
    each file and ``key`` (what the shard was built from), so a damaged shard is found and redone,
    and the shard's plan (``source``: its plan header, ``rows``: its planned rows) when given.
    """
    stem = shard_stem(root, shard)
    stem.parent.mkdir(parents=True, exist_ok=True)
    if len(records) != embeddings.shape[0]:
        raise ValueError(f"shard {shard}: {len(records)} items but {embeddings.shape[0]} vectors")
    paths = [stem.with_suffix(".npy"), stem.with_suffix(".parquet")]
    write_atomic(paths[0], lambda p: np.save(p, np.ascontiguousarray(embeddings, np.float32)))
    write_atomic(paths[1], lambda p: pq.write_table(items_table(records), p))
    if rejected:
        paths.append(shard_rejected_path(root, shard))
        write_jsonl(paths[-1], rejected, sort_keys=True)
    else:
        shard_rejected_path(root, shard).unlink(missing_ok=True)
    marker = ShardMarker(len(records), key, {relative_path(root, p): FileRecord.of(p) for p in paths})
    marker.source, marker.rows = dict(source or {}), list(rows or [])
    write_marker(root, shard, marker)


def write_marker(root: Path, shard: int, marker: ShardMarker) -> None:
    """(Re)write a shard's `.done` marker (after its files)."""
    text = json.dumps(marker.to_dict(), sort_keys=True, ensure_ascii=False)
    write_atomic(shard_stem(root, shard).with_suffix(".done"), lambda p: Path(p).write_text(text, encoding="utf-8"))


def shard_marker(root: Path, shard: int) -> ShardMarker | None:
    """The `.done` record of a complete shard (None when it is missing or unreadable)."""
    try:
        return ShardMarker.from_dict(json.loads(shard_stem(root, shard).with_suffix(".done").read_text("utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def shard_problem(root: Path, shard: int, verify: bool = True) -> str | None:
    """Why complete shard ``shard`` cannot be trusted (None when it is intact)."""
    marker = shard_marker(root, shard)
    if marker is None:
        return f"{SHARDS_DIR}/{shard:06d}.done is unreadable"
    problem = next(iter(file_problems(root, marker.files, verify)), None)
    if problem is None:
        try:
            read_shard_vectors(root, shard)
        except StoreError as exc:
            problem = str(exc)
    return problem


def drop_shard(root: Path, shard: int) -> None:
    """Forget a shard (its marker first), so the resume path embeds it again."""
    stem = shard_stem(root, shard)
    for path in (
        stem.with_suffix(".done"),
        stem.with_suffix(".npy"),
        stem.with_suffix(".parquet"),
        shard_rejected_path(root, shard),
    ):
        path.unlink(missing_ok=True)


def shard_rejected_path(root: Path, shard: int) -> Path:
    return shard_stem(root, shard).with_suffix(".rejected.jsonl")


def read_shard_rejected(root: Path, shard: int) -> list[dict]:
    """The rejected items recorded with a complete shard ([] when it had none)."""
    return read_jsonl(shard_rejected_path(root, shard))


def write_rejected(root: Path, rejected: list[dict]) -> None:
    """``rejected.jsonl``: the items skipped by the whole build, with their reasons."""
    write_jsonl(Path(root) / REJECTED_FILE, rejected, sort_keys=True)


def read_rejected(root: Path) -> list[dict]:
    """The items of ``rejected.jsonl`` ([] when there is none)."""
    return read_jsonl(Path(root) / REJECTED_FILE)


def done_shards(root: Path) -> list[int]:
    folder = Path(root) / SHARDS_DIR
    if not folder.is_dir():
        return []
    return sorted(int(p.stem) for p in folder.glob("*.done") if p.stem.isdigit())  # not a cut write's .tmp


def read_shard_vectors(root: Path, shard: int) -> np.ndarray:
    """The embeddings of one shard (without reading its items); never unpickles anything."""
    path = shard_stem(root, shard).with_suffix(".npy")
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise StoreError(f"{path}: not a plain float array ({exc}); {repair_hint(root)}") from exc
    if vectors.ndim != 2 or vectors.dtype != np.float32:
        raise StoreError(f"{path}: holds {vectors.dtype} {vectors.shape}, not float32 [n, dim]; {repair_hint(root)}")
    return vectors


def read_shard_items(root: Path, shard: int) -> pa.Table:
    """The items table of one shard (without reading its vectors)."""
    return read_parquet(shard_stem(root, shard).with_suffix(".parquet"))


def read_all_shards(root: Path) -> tuple[np.ndarray, pa.Table]:
    """All complete shards in order: (embeddings [N, dim], items table)."""
    shards = _complete_shards(root)
    return (
        np.concatenate([read_shard_vectors(root, s) for s in shards]),
        pa.concat_tables([read_shard_items(root, s) for s in shards]),
    )


def read_all_vectors(root: Path) -> np.ndarray:
    """The embeddings [N, dim] of all complete shards in order (their items are not read)."""
    return np.concatenate([read_shard_vectors(root, s) for s in _complete_shards(root)])


def _complete_shards(root: Path) -> list[int]:
    shards = done_shards(root)
    if not shards:
        raise StoreError(f"{root}: no complete embedding shards under {SHARDS_DIR}/")
    return shards

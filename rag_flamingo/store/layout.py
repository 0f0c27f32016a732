"""The store's layout: its file and folder names, its format version, what marks a folder as a store,
the repair hint every damage report ends with, and the atomic write every store file goes through."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import StoreError

FORMAT_VERSION = 2  # 2: items carry a ``content`` digest; store.json records file sizes/checksums
INFO_FILE = "store.json"
INDEX_FILE = "index.faiss"
ITEMS_FILE = "items.parquet"
SHARDS_DIR = "shards"
FEATURES_DIR = "features"
REJECTED_FILE = "rejected.jsonl"
LOCK_FILE = "build.lock"
PLANS_DIR = "plans"
# what marks a folder as a store, or a build of one under way (build_plan.json: plans of older builds)
STORE_MARKERS = (INFO_FILE, INDEX_FILE, ITEMS_FILE, SHARDS_DIR, PLANS_DIR, LOCK_FILE, "build_plan.json")


def holds_other_files(folder: Path) -> bool:
    """``folder`` exists with files in it and none of a store's: the user's files, never a store's place."""
    folder = Path(folder)
    return folder.is_dir() and any(folder.iterdir()) and not any((folder / m).exists() for m in STORE_MARKERS)


REPAIR_HINT = (
    "repair it with `build_index store=<the store folder> mode=repair` (or rerun the same build_index command)"
)


def repair_hint(root: str | Path) -> str:
    """The one repair instruction of every error about a damaged store file."""
    return f"repair it with `build_index store={root} mode=repair` (or rerun the same build_index command)"


def relative_path(root: Path, path: Path) -> str:
    """``path`` relative to the store ``root``, as store.json and the shard markers name files."""
    return Path(path).relative_to(root).as_posix()


def write_atomic(path: Path, write) -> None:
    """Write ``path`` through ``write(temporary path)`` and move it in place: a cut write leaves no partial file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp" + path.suffix)  # keep the suffix: np.save appends .npy
    write(str(tmp))
    os.replace(tmp, path)


def read_parquet(path: Path) -> pa.Table:
    """A store's parquet table, or StoreError naming the file when it cannot be read."""
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise StoreError(f"{path}: unreadable ({exc}); {REPAIR_HINT}") from exc

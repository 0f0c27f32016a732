"""The index store: one directory, written by `build_index`, read by retrieval. Its one owner.

Layout::

    <store>/
      store.json          StoreInfo (written last: its presence marks a complete store), with typed
                          sub-records: IndexRecord, DatasetRecord, BuildRecord (its SourceRecords),
                          FeatureRecord per feature set, FileRecord per file
      index.faiss         FAISS index, CPU-readable; row i <-> items row i
      items.parquet       one row per indexed item (manifest fields + ``content``, see ITEM_COLUMNS)
      shards/             embedding shards, the authoritative vectors, in row order:
        000000.npy          float32 [n, dim] (a plain array: object arrays are refused)
        000000.parquet      the n items of the shard (same columns as items.parquet)
        000000.rejected.jsonl  the shard's skipped items with reasons (optional)
        000000.done         written after the files above: the shard is complete (ShardMarker:
                            item count, the size and sha256 of each file above, and the shard's key,
                            a digest of the encoder and the shard's item ids)
      features/<name>/    optional per-item model features aligned with the shards,
        000000.safetensors  e.g. clapcap windows: "features" [n, W, D], "mask" [n, W]
      plans/              what each source (the build, then each append) asked for, written before
        000000.jsonl        its shards and never changed: a header (the source: manifest, audio root,
                            shard range; the encoder; shard size; the counts of its manifest rows)
                            and one line per shard with the manifest rows planned into it
      rejected.jsonl      items skipped while building, with the reason
      build.lock          held (fcntl.flock) by the one build_index writing the store

Integrity: store.json records the size and sha256 of every other file (``StoreInfo.files``).
``IndexStore.open`` checks that each is present with its size (and its checksum with
``verify=True``); a corrupted store.json, a missing, truncated or unreadable file is a StoreError
naming the file, never a traceback. The plans are the store's authority: every other file can be
made again from them (a shard by embedding its planned rows from its source's audio; items, index,
rejected.jsonl and store.json from the shards), and each shard's marker keeps its own plan rows
and source, so a lost plan file is written again from its shards. ``build_index store=<store>
mode=repair`` (or rerunning a command that built the store) does that. A store of another format
version is refused (format 1 predates the ``content`` column: rebuild it).

Identity: ``content`` is a digest of the item's audio bytes (``content_key``); ``recording_key``
names the recording an item is across sources (see there); a store row is one manifest row of one
source: its recording and its id (``row_key``). The store refuses to be queried with an encoder
other than the one it was built with.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import AudioError, StoreError
from .hashing import file_sha256
from .jsonl import read_jsonl, write_jsonl

logger = logging.getLogger(__name__)

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


R = TypeVar("R", bound="Record")


class Record:
    """A dataclass record of store.json: read from a JSON object, written back as one.

    ``from_dict`` leaves out keys the record does not know (a newer writer's additions); a key it
    needs and lacks is a TypeError, which ``read_info`` reports as a corrupted store.json.
    """

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        if not isinstance(data, Mapping):
            raise TypeError(f"{cls.__name__} needs a JSON object, not {type(data).__name__}")
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            logger.debug("%s: leaving out unknown keys %s", cls.__name__, unknown)
        return cls(**{key: value for key, value in data.items() if key in names})

    @classmethod
    def coerce(cls: type[R], value: R | Mapping[str, Any]) -> R:
        """``value`` itself when it is already this record, else the record read from the mapping."""
        return value if isinstance(value, cls) else cls.from_dict(value)  # type: ignore[arg-type]

    def to_dict(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]


@dataclass
class FileRecord(Record):
    """Size and checksum of one store file (recorded in store.json and in each shard's done marker)."""

    size: int
    sha256: str

    @classmethod
    def of(cls, path: str | Path) -> FileRecord:
        return cls(size=Path(path).stat().st_size, sha256=file_sha256(path))


@dataclass
class IndexRecord(Record):
    """The FAISS index: what was built and the search parameters its recall was tuned to."""

    type: str  # flat | hnsw | ivf_flat | ivf_pq
    factory: str = ""  # the faiss index_factory string
    metric: str = "cosine"
    search_params: dict = field(default_factory=dict)  # efSearch / nprobe, set after every read_index
    recall_at_10: float = 1.0
    recall_queries: int = 0
    recall_target: float = 0.99
    reached_target: bool = True
    gpu: bool = False
    memory_budget: str = ""


@dataclass
class DatasetRecord(Record):
    """A manifest: which dataset split it is, its bytes' sha256 and where its audio lives."""

    name: str = ""
    split: str = ""
    manifest: str = ""  # resolved path of the manifest file
    manifest_sha256: str = ""
    audio_root: str = "."  # manifest paths are relative to it

    @classmethod
    def from_manifest(cls: type[R], name: str, split: str, manifest: Path, audio_root: Path) -> R:
        return cls(
            name=name,
            split=split,
            manifest=str(Path(manifest).resolve()),  # type: ignore[call-arg]
            manifest_sha256=file_sha256(manifest),
            audio_root=str(Path(audio_root).resolve()),
        )


@dataclass
class SourceRecord(DatasetRecord):
    """One manifest that contributed to the store and the shards and rows it owns (a build has
    one source, each append adds one)."""

    rows: int = 0  # manifest rows planned in its run (before rejection)
    first_shard: int = 0
    end_shard: int = 0
    first_row: int = 0
    end_row: int | None = None  # None until the shards are merged (then: the store's row count)

    @property
    def dataset(self) -> DatasetRecord:
        """The manifest part of this source (the store's ``dataset`` record is its first source's)."""
        return DatasetRecord(**{f.name: getattr(self, f.name) for f in fields(DatasetRecord)})

    def holds_row(self, row: int, count: int) -> bool:
        return self.first_row <= row < (count if self.end_row is None else self.end_row)


@dataclass
class BuildRecord(Record):
    """How the store was built: shards, the sources in row order, rejections, a quality figure."""

    shard_size: int = 0
    shards: int = 0  # shards 0 .. shards-1 are the store's
    sources: list[SourceRecord] = field(default_factory=list)
    rejected: int = 0
    label_precision: dict | None = None  # index_builder.quality.label_precision (None: no labels)

    def __post_init__(self) -> None:
        if not isinstance(self.sources, list):
            raise TypeError(f"build.sources needs a list, not {type(self.sources).__name__}")
        self.sources = [SourceRecord.coerce(src) for src in self.sources]


@dataclass
class FeatureRecord(Record):
    """A cached per-item feature set (``features/<name>/``): window count, size and its encoder."""

    windows: int
    dim: int
    dtype: str = "float32"
    fingerprint: dict = field(default_factory=dict)  # the window encoder's fingerprint ({}: unknown)


@dataclass
class StoreInfo(Record):
    """Everything needed to trust and query a store (serialised as store.json).

    The sub-records may be given as plain mappings (as store.json holds them); they are typed here.
    """

    encoder: dict  # the encoder fingerprint (name, checkpoint hash, preprocessing, crop policy)
    dim: int
    count: int
    metric: str = "cosine"  # "cosine" (inner product on L2-normalised vectors) or "l2"
    index: IndexRecord = field(default_factory=lambda: IndexRecord(type=""))
    dataset: DatasetRecord = field(default_factory=DatasetRecord)  # the first source's manifest
    features: dict[str, FeatureRecord] = field(default_factory=dict)  # by name
    build: BuildRecord = field(default_factory=BuildRecord)
    files: dict[str, FileRecord] = field(default_factory=dict)  # every store file by relative path
    versions: dict = field(default_factory=dict)
    created: str = ""
    format: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.encoder, dict):
            raise TypeError(f"encoder needs a JSON object, not {type(self.encoder).__name__}")
        self.index = IndexRecord.coerce(self.index)
        self.dataset = DatasetRecord.coerce(self.dataset)
        self.build = BuildRecord.coerce(self.build)
        self.features = _records(FeatureRecord, self.features, "features")
        self.files = _records(FileRecord, self.files, "files")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def source_of_row(self, row: int) -> SourceRecord:
        """The source (manifest, ``audio_root``, row range) that holds store row ``row``."""
        for src in self.build.sources:
            if src.holds_row(row, self.count):
                return src
        return SourceRecord(**self.dataset.to_dict())


def _records(cls: type[R], value: Mapping[str, Any], what: str) -> dict[str, R]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} needs a JSON object, not {type(value).__name__}")
    return {str(name): cls.coerce(rec) for name, rec in value.items()}


def library_versions() -> dict:
    import torch

    from . import __version__

    return {
        "rag_flamingo": __version__,
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
        "torch": torch.__version__,
    }


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- items


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


def item_labels(item: dict) -> list[str]:
    """The labels of an item: ``labels`` if present, else ``[label]``, else []."""
    if item.get("labels"):
        return list(item["labels"])
    return [item["label"]] if item.get("label") not in (None, "") else []


# ----------------------------------------------------------------------------- shards


@dataclass
class ShardMarker(Record):
    """A shard's ``.done`` file: its item count, the size and sha256 of each of its files, and its
    ``key`` (what the shard was built from: a digest of the encoder and the shard's item ids).

    A shard written by ``build_index`` also keeps its plan: ``source`` (the header of its source's
    plan file) and ``rows`` (the manifest rows planned into it), so a lost plan file is written
    again from its shards."""

    count: int
    key: str = ""
    files: dict[str, FileRecord] = field(default_factory=dict)
    source: dict = field(default_factory=dict)
    rows: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.files = _records(FileRecord, self.files, "files")
        if not isinstance(self.source, dict) or not isinstance(self.rows, list):
            raise TypeError("a shard marker's source is an object and its rows a list")

    def to_dict(self) -> dict:
        out = asdict(self)
        return {k: v for k, v in out.items() if k not in ("source", "rows") or v}


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
    _atomic(paths[0], lambda p: np.save(p, np.ascontiguousarray(embeddings, np.float32)))
    _atomic(paths[1], lambda p: pq.write_table(items_table(records), p))
    if rejected:
        paths.append(shard_rejected_path(root, shard))
        write_jsonl(paths[-1], rejected, sort_keys=True)
    else:
        shard_rejected_path(root, shard).unlink(missing_ok=True)
    marker = ShardMarker(len(records), key, {_relative(root, p): FileRecord.of(p) for p in paths})
    marker.source, marker.rows = dict(source or {}), list(rows or [])
    write_marker(root, shard, marker)


def write_marker(root: Path, shard: int, marker: ShardMarker) -> None:
    """(Re)write a shard's `.done` marker (after its files)."""
    text = json.dumps(marker.to_dict(), sort_keys=True, ensure_ascii=False)
    _atomic(shard_stem(root, shard).with_suffix(".done"), lambda p: Path(p).write_text(text, encoding="utf-8"))


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


# ----------------------------------------------------------------------------- plans


def plan_path(root: Path, first_shard: int) -> Path:
    return Path(root) / PLANS_DIR / f"{first_shard:06d}.jsonl"


def plan_files(root: Path) -> list[Path]:
    """The plan files of a store, in shard order."""
    folder = Path(root) / PLANS_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.jsonl") if p.stem.isdigit())


def write_plan_file(root: Path, first_shard: int, header: dict, shards: list[tuple[int, list[dict]]]) -> Path:
    """``plans/<first_shard>.jsonl``: ``header`` (with the sha256 of the lines below it) and one line
    per shard with its planned rows; written atomically."""
    body = "".join(
        json.dumps({"shard": shard, "rows": rows}, sort_keys=True, ensure_ascii=False) + "\n" for shard, rows in shards
    )
    head = dict(header, rows_sha256=hashlib.sha256(body.encode("utf-8")).hexdigest())
    text = json.dumps(head, sort_keys=True, ensure_ascii=False) + "\n" + body
    path = plan_path(root, first_shard)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic(path, lambda p: Path(p).write_text(text, encoding="utf-8"))
    return path


def read_plan_file(path: Path) -> tuple[dict, dict[int, list[dict]]]:
    """(header, rows by shard) of a plan file; StoreError naming it when it is missing or damaged."""
    try:
        head, _, body = Path(path).read_bytes().partition(b"\n")
        header = json.loads(head)
        if not isinstance(header, dict) or header.get("rows_sha256") != hashlib.sha256(body).hexdigest():
            raise ValueError("its rows do not match the checksum in its header")
        shards: dict[int, list[dict]] = {}
        for line in body.decode("utf-8").splitlines():
            entry = json.loads(line)
            shards[int(entry["shard"])] = list(entry["rows"])
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise StoreError(f"{path}: damaged ({str(exc)[:120]})") from exc
    return header, shards


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


def read_parquet(path: Path) -> pa.Table:
    """A store's parquet table, or StoreError naming the file when it cannot be read."""
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise StoreError(f"{path}: unreadable ({exc}); {REPAIR_HINT}") from exc


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


def features_path(root: Path, name: str, shard: int) -> Path:
    return Path(root) / FEATURES_DIR / name / f"{shard:06d}.safetensors"


def write_features(root: Path, name: str, shard: int, features: np.ndarray, mask: np.ndarray) -> None:
    """Per-item model features of one shard (e.g. clapcap windows [n, W, D] + mask [n, W])."""
    from safetensors.numpy import save_file

    path = features_path(root, name, shard)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"features": np.ascontiguousarray(features), "mask": np.ascontiguousarray(mask, np.float32)}
    _atomic(path, lambda p: save_file(tensors, p))


class FeatureCache:
    """Read-only access to ``features/<name>/`` by store row, memory-mapped per shard."""

    def __init__(self, root: Path, name: str):
        from safetensors import safe_open

        self.name = name
        shards = done_shards(root)
        self._files, self._starts, start = [], [], 0
        for shard in shards:
            path = features_path(root, name, shard)
            if not path.is_file():
                raise StoreError(
                    f"{root}: no '{name}' features for shard {shard}; rebuild with "
                    f"`build_index ... features={name}` (existing embeddings are reused)"
                )
            try:
                handle = safe_open(str(path), framework="numpy")
            except Exception as exc:  # safetensors raises its own SafetensorError
                raise StoreError(f"{path}: unreadable ({exc}); {repair_hint(root)} (with features={name})") from exc
            self._files.append(handle)
            self._starts.append(start)
            start += handle.get_slice("mask").get_shape()[0]
        self.count = start

    def get(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """(features [n, W, D], mask [n, W]) for store rows ``rows``."""
        feats, masks = [], []
        for row in rows:
            shard = int(np.searchsorted(self._starts, row, side="right") - 1)
            off = int(row) - self._starts[shard]
            handle = self._files[shard]
            feats.append(handle.get_slice("features")[off : off + 1])
            masks.append(handle.get_slice("mask")[off : off + 1])
        return np.concatenate(feats), np.concatenate(masks)


def file_problems(root: Path, files: Mapping[str, FileRecord], verify: bool = False) -> list[str]:
    """What is wrong with recorded files under ``root``: missing, another size, or (``verify``)
    another checksum. Empty when all are intact."""
    problems = []
    for rel, want in sorted(files.items()):
        path = Path(root) / rel
        if not path.is_file():
            problems.append(f"{rel} is missing")
        elif path.stat().st_size != want.size:
            problems.append(
                f"{rel} has {path.stat().st_size} bytes, store.json records {want.size} (truncated or overwritten)"
            )
        elif verify and file_sha256(path) != want.sha256:
            problems.append(f"{rel} is damaged (its sha256 differs from the one store.json records)")
    return problems


def store_files(root: Path) -> dict[str, FileRecord]:
    """Size and sha256 of every file of the store (shards from their markers, the rest hashed)."""
    root = Path(root)
    files: dict[str, FileRecord] = {}
    for shard in done_shards(root):
        marker = shard_marker(root, shard)
        if marker is None:
            raise StoreError(f"{root}: {SHARDS_DIR}/{shard:06d}.done is unreadable; {repair_hint(root)}")
        files.update(marker.files)
    for name in (INDEX_FILE, ITEMS_FILE, REJECTED_FILE):
        if (root / name).is_file():
            files[name] = FileRecord.of(root / name)
    for path in plan_files(root):
        files[_relative(root, path)] = FileRecord.of(path)
    for path in sorted((root / FEATURES_DIR).glob("*/*.safetensors")):
        files[_relative(root, path)] = FileRecord.of(path)
    return files


def _relative(root: Path, path: Path) -> str:
    return Path(path).relative_to(root).as_posix()


def _atomic(path: Path, write) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp" + path.suffix)  # keep the suffix: np.save appends .npy
    write(str(tmp))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- the store


def normalize_rows(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def apply_search_params(index: faiss.Index, params: dict) -> None:
    """Set nprobe / efSearch (must be set again after every read_index)."""
    if params:
        space = faiss.ParameterSpace()
        for name, value in params.items():
            space.set_index_parameter(index, name, value)


def write_store(root: Path, info: StoreInfo, index: faiss.Index, records: list[dict]) -> None:
    """Write index, items and store.json (last) into ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if index.ntotal != len(records) or info.count != len(records):
        raise StoreError(
            f"{root}: index has {index.ntotal} vectors, items {len(records)}, info.count {info.count}; they must agree"
        )
    info.created = info.created or now_utc()
    info.versions = info.versions or library_versions()
    _atomic(root / INDEX_FILE, lambda p: faiss.write_index(index, p))
    _atomic(root / ITEMS_FILE, lambda p: pq.write_table(items_table(records), p))
    write_info(root, info)


def write_info(root: Path, info: StoreInfo) -> None:
    """Rewrite store.json (e.g. after adding a feature cache), recording every store file."""
    info.files = store_files(root)
    _atomic(Path(root) / INFO_FILE, lambda p: Path(p).write_text(info.to_json()))


def read_info(root: Path) -> StoreInfo | None:
    """store.json of a complete store, or None when ``root`` holds none; StoreError when corrupted."""
    path = Path(root) / INFO_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        info = StoreInfo.from_dict(data) if isinstance(data, dict) else None
    except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise StoreError(f"{path}: corrupted ({str(exc)[:120]}); {repair_hint(root)}") from exc
    if info is None:
        raise StoreError(f"{path}: corrupted (a JSON {type(data).__name__}, not an object); {repair_hint(root)}")
    return info


def check_format(root: Path, info: StoreInfo) -> None:
    """StoreError unless the store has the format this version reads."""
    if info.format == FORMAT_VERSION:
        return
    if isinstance(info.format, int) and info.format < FORMAT_VERSION:
        raise StoreError(
            f"{root}: store format {info.format} predates content hashes of the audio; delete "
            f"the folder and rerun the same build_index command"
        )
    raise StoreError(
        f"{root}: store format {info.format} is newer than this rag_flamingo reads "
        f"({FORMAT_VERSION}); upgrade rag_flamingo"
    )


@contextlib.contextmanager
def build_lock(root: Path) -> Iterator[None]:
    """Hold the store's write lock (fcntl.flock: a killed holder leaves no stale lock) or refuse."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(
                f"{root}: another build_index is writing this store ({LOCK_FILE} is locked); "
                f"wait for it to finish or pick another store="
            ) from None
        yield
    finally:
        os.close(fd)


def _read_index(path: Path) -> faiss.Index:
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:  # faiss reports every read failure as RuntimeError
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else "unreadable"
        raise StoreError(f"{path}: unreadable FAISS index ({first}); {repair_hint(Path(path).parent)}") from exc


class IndexStore:
    """A complete store opened for querying."""

    def __init__(self, root: Path, info: StoreInfo, index: faiss.Index, items: pa.Table):
        self.root, self.info, self.index, self._table = Path(root), info, index, items
        self._items = [item_from_record(r) for r in items.to_pylist()]
        apply_search_params(self.index, info.index.search_params)

    @classmethod
    def open(cls, root: str | Path, verify: bool = False) -> IndexStore:
        """Open a complete store. Presence and size of every recorded file are always checked, their
        sha256 too with ``verify=True``; anything broken is a StoreError naming the file."""
        root = Path(root)
        info = read_info(root)
        if info is None:
            raise StoreError(
                f"{root}: not a complete index store (no {INFO_FILE}); build it with "
                f"`build_index ... store={root}` (an interrupted build resumes)"
            )
        check_format(root, info)
        problems = [
            f"{name} is missing"
            for name in (INDEX_FILE, ITEMS_FILE)
            if name not in info.files and not (root / name).is_file()
        ] + file_problems(root, info.files, verify)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise StoreError(f"{root}: {problems[0]}{more}; {repair_hint(root)}")
        index = _read_index(root / INDEX_FILE)
        items = read_parquet(root / ITEMS_FILE)
        if index.ntotal != items.num_rows or index.ntotal != info.count:
            raise StoreError(
                f"{root}: index ({index.ntotal}), items ({items.num_rows}) and store.json "
                f"({info.count}) disagree; {repair_hint(root)}"
            )
        if "content" not in items.column_names:
            raise StoreError(f"{root / ITEMS_FILE}: has no content column; {repair_hint(root)}")
        return cls(root, info, index, items)

    def __len__(self) -> int:
        return self.info.count

    @property
    def items(self) -> list[dict]:
        return self._items

    def item(self, row: int) -> dict:
        return self._items[row]

    @property
    def table(self) -> pa.Table:
        return self._table

    def label_set(self) -> list[str]:
        """Sorted distinct labels of the indexed items (the option set for classification)."""
        return sorted({lab for it in self._items for lab in item_labels(it)})

    def embeddings(self) -> np.ndarray:
        """The stored vectors [N, dim] in row order (from the shards)."""
        emb = read_all_vectors(self.root)
        if emb.shape[0] != self.info.count:
            raise StoreError(f"{self.root}: shards hold {emb.shape[0]} vectors, store {self.info.count}")
        return emb

    def source_of_row(self, row: int) -> SourceRecord:
        """The source (manifest, ``audio_root``, row range) that holds row ``row``."""
        return self.info.source_of_row(row)

    def audio_path(self, row: int) -> Path:
        """The audio file of store row ``row``: its manifest path under its source's audio root."""
        path = Path(self._items[row]["path"])
        return path if path.is_absolute() else Path(self.source_of_row(row).audio_root) / path

    @cached_property
    def recording_keys(self) -> list[str]:
        """``recording_key`` of each row, under the audio root of the source that holds it."""
        return row_recording_keys(self.info, self._items)

    @cached_property
    def content_keys(self) -> list[str | None]:
        """``content_key`` of each row's audio, recorded when it was indexed."""
        return self._table.column("content").to_pylist()

    def fingerprint(self) -> str:
        """16 hex digits naming what the store contains: encoder, metric, count, index and the
        checksums of its files. Equal across reopening; changed by an append or a rebuild."""
        content = {
            "encoder": comparable_fingerprint(self.info.encoder),
            "metric": self.info.metric,
            "count": self.info.count,
            "dim": self.info.dim,
            "index": {
                "type": self.info.index.type,
                "factory": self.info.index.factory,
                "search_params": self.info.index.search_params,
            },
            "files": {rel: rec.sha256 for rel, rec in sorted(self.info.files.items())},
        }
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

    def features(self, name: str = "clapcap") -> FeatureCache:
        """Cached per-item model features written by ``build_index ... features=<name>``."""
        if name not in self.info.features:
            raise StoreError(
                f"{self.root}: no '{name}' features in this store; add them with "
                f"`build_index store={self.root} mode=features features={name}`"
            )
        return FeatureCache(self.root, name)

    def check_encoder(self, fingerprint: dict) -> None:
        """Raise StoreError unless ``fingerprint`` is the encoder this store was built with."""
        built, ours = comparable_fingerprint(self.info.encoder), comparable_fingerprint(fingerprint)
        if built != ours:
            diff = sorted(k for k in set(built) | set(ours) if built.get(k) != ours.get(k))
            raise StoreError(
                f"{self.root}: built with encoder {built.get('name')!r} but queried with "
                f"{fingerprint.get('name')!r} (differs in: {', '.join(diff)}); query with "
                f"encoder={built.get('name')} and the same checkpoint, or rebuild the store"
            )

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows) for float32 queries [Q, dim]; rows are -1 where fewer exist."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.info.dim:
            raise StoreError(f"{self.root}: query dim {queries.shape[1]} != store dim {self.info.dim}")
        if self.info.metric == "cosine":
            queries = normalize_rows(queries)
        scores, rows = self.index.search(queries, min(k, self.info.count))
        if self.info.metric == "l2":
            scores = -scores  # larger is always better for callers
        return scores, rows


def comparable_fingerprint(fingerprint: dict) -> dict:
    """The fingerprint without run-time settings: equal ones make interchangeable embeddings."""
    # Run-time settings (device, batch size, runtime, fp32/fp16 autocast) do not change embeddings
    # beyond float tolerance (the parity contract of `rag_flamingo.encoders.runtime`). bf16 does
    # change some top-10 neighbours (BENCHMARKS.md), so a bf16 store is queried in bf16 only.
    run_time = ("device", "batch_size", "dtype", "precision", "runtime")
    comparable = {k: v for k, v in fingerprint.items() if k not in run_time}
    if "bfloat16" in (str(fingerprint.get("dtype")), str(fingerprint.get("precision")).replace("torch.", "")):
        comparable["precision"] = "bf16"
    return comparable

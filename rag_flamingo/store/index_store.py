"""A complete store: writing its index, items and store.json (last), and `IndexStore`, the store
opened for querying (every recorded file checked, the encoder compared, FAISS searched)."""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import StoreError
from ..labels import item_labels
from ..vectors import normalize_rows
from .features import FeatureCache
from .items import item_from_record, items_table, row_recording_keys
from .layout import (
    FEATURES_DIR,
    INDEX_FILE,
    INFO_FILE,
    ITEMS_FILE,
    REJECTED_FILE,
    SHARDS_DIR,
    read_parquet,
    relative_path,
    repair_hint,
    write_atomic,
)
from .plans import plan_files
from .records import (
    FileRecord,
    SourceRecord,
    StoreInfo,
    check_format,
    comparable_fingerprint,
    file_problems,
    library_versions,
    now_utc,
    read_info,
)
from .shards import done_shards, read_all_vectors, shard_marker


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
    write_atomic(root / INDEX_FILE, lambda p: faiss.write_index(index, p))
    write_atomic(root / ITEMS_FILE, lambda p: pq.write_table(items_table(records), p))
    write_info(root, info)


def write_info(root: Path, info: StoreInfo) -> None:
    """Rewrite store.json (e.g. after adding a feature cache), recording every store file."""
    info.files = store_files(root)
    write_atomic(Path(root) / INFO_FILE, lambda p: Path(p).write_text(info.to_json()))


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
        files[relative_path(root, path)] = FileRecord.of(path)
    for path in sorted((root / FEATURES_DIR).glob("*/*.safetensors")):
        files[relative_path(root, path)] = FileRecord.of(path)
    return files


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
            values = ", ".join(_difference(k, built.get(k), ours.get(k)) for k in diff)
            raise StoreError(
                f"{self.root}: built with encoder {built.get('name')!r} but queried with "
                f"{fingerprint.get('name')!r} (differs in: {values}); query with "
                f"encoder={built.get('name')} and the store's settings and checkpoint, or rebuild the store"
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


def _difference(key: str, built: object, ours: object) -> str:
    """``key (store X, query Y)``; the key alone when a value is too long for one line (a nested record).
    An absent precision is full precision (`comparable_fingerprint` records only bf16)."""
    if key == "precision":
        built, ours = built or "fp32", ours or "fp32"
    short = len(repr(built)) + len(repr(ours)) < 80
    return f"{key} (store {built!r}, query {ours!r})" if short else key

"""The records of store.json and of each shard's ``.done`` marker (typed dataclasses read from and
written as JSON objects), reading store.json and checking its format, and the checks of recorded files."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import faiss
import numpy as np
import pyarrow as pa

from ..errors import StoreError
from ..hashing import file_sha256
from .layout import FORMAT_VERSION, INFO_FILE, repair_hint

logger = logging.getLogger(__name__)

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
    label_precision: dict | None = None  # rag_flamingo.indexing.quality.label_precision (None: no labels)

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

    from .. import __version__

    return {
        "rag_flamingo": __version__,
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
        "torch": torch.__version__,
    }


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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

"""store.json's typed records: the format written before they were typed loads and is written back
unchanged; unknown keys are left out; a missing or mistyped record is a corrupted store.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rag_flamingo.config import IndexConfig
from rag_flamingo.errors import StoreError
from rag_flamingo.hashing import file_sha256
from rag_flamingo.indexing.faiss_index import build_index
from rag_flamingo.indexing.plan import BuildPlan
from rag_flamingo.store.items import item_record
from rag_flamingo.store.layout import INFO_FILE
from rag_flamingo.store.records import (
    BuildRecord,
    DatasetRecord,
    FeatureRecord,
    FileRecord,
    IndexRecord,
    ShardMarker,
    SourceRecord,
    StoreInfo,
    read_info,
)
from rag_flamingo.store.shards import shard_marker, shard_stem, write_shard

FORMAT2 = Path(__file__).parent / "fixtures" / "store_format2.json"


def format2() -> dict:
    """A store.json as the writer produced it before the records were typed (a build, an append
    and a clapcap feature set)."""
    return json.loads(FORMAT2.read_text())


def test_format2_store_json_reads_into_typed_records():
    info = StoreInfo.from_dict(format2())
    assert isinstance(info.index, IndexRecord) and info.index.type == "flat" and info.index.search_params == {}
    assert isinstance(info.dataset, DatasetRecord) and info.dataset.audio_root == "/srv/sounds/audio"
    assert isinstance(info.build, BuildRecord) and info.build.shards == 2 and info.build.rejected == 0
    assert info.build.label_precision == {"chance": 0.25, "k": 5, "precision": 0.4, "queries": 9}
    first, second = info.build.sources
    assert isinstance(second, SourceRecord) and second.manifest == "/srv/sounds/b.jsonl"
    assert (first.first_row, first.end_row, second.first_shard, second.end_shard, second.rows) == (0, 6, 1, 2, 3)
    clapcap = info.features["clapcap"]
    assert isinstance(clapcap, FeatureRecord) and (clapcap.windows, clapcap.dim) == (16, 1024)
    assert clapcap.fingerprint["name"] == "clapcap"
    assert all(isinstance(rec, FileRecord) for rec in info.files.values())
    assert info.files["items.parquet"].size == 4002
    assert isinstance(info.encoder, dict) and info.encoder["name"] == "aisfx"  # the encoder's own record


def test_format2_store_json_is_written_back_unchanged(tmp_path):
    (tmp_path / INFO_FILE).write_text(json.dumps(format2()))
    info = read_info(tmp_path)
    assert json.loads(info.to_json()) == format2()
    assert StoreInfo.from_dict(json.loads(info.to_json())) == info


def test_unknown_keys_are_left_out():
    data = format2()
    data["from_the_future"] = 1
    data["index"]["quantizer"] = "opq"
    data["build"]["sources"][0]["licence"] = "CC-BY"
    data["features"]["clapcap"]["hop"] = 0.5
    data["files"]["index.faiss"]["mtime"] = 0
    written = json.loads(StoreInfo.from_dict(data).to_json())
    assert written == format2()


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d["features"]["clapcap"].pop("windows"),  # a needed key is missing
        lambda d: d["files"]["index.faiss"].pop("sha256"),
        lambda d: d["index"].pop("type"),
        lambda d: d["build"].__setitem__("sources", {"0": {}}),  # not a list
        lambda d: d["build"]["sources"].__setitem__(0, "a.jsonl"),  # not an object
        lambda d: d.__setitem__("files", ["index.faiss"]),
        lambda d: d.__setitem__("dataset", "esc50"),
        lambda d: d.__setitem__("encoder", "aisfx"),
    ],
)
def test_a_missing_or_mistyped_record_is_a_corrupted_store(tmp_path, damage):
    data = format2()
    damage(data)
    (tmp_path / INFO_FILE).write_text(json.dumps(data))
    with pytest.raises(StoreError, match=f"{INFO_FILE}: corrupted .*rerun the same build_index"):
        read_info(tmp_path)


def test_records_may_be_given_as_mappings():
    info = StoreInfo(
        encoder={"name": "enc"},
        dim=4,
        count=3,
        index={"type": "hnsw", "search_params": {"efSearch": 16}},
        build={
            "sources": [
                {"name": "a", "audio_root": "/a", "end_row": 2},
                {"name": "b", "audio_root": "/b", "first_row": 2},
            ]
        },
        features={"clapcap": {"windows": 2, "dim": 8}},
    )
    assert info.index.search_params == {"efSearch": 16} and info.features["clapcap"].dtype == "float32"
    assert [info.source_of_row(r).name for r in range(3)] == ["a", "a", "b"]  # b's end_row: the count


def test_a_row_outside_every_source_falls_back_to_the_dataset():
    info = StoreInfo(encoder={}, dim=4, count=3, dataset={"name": "esc50", "audio_root": "/esc50"})
    source = info.source_of_row(1)
    assert isinstance(source, SourceRecord) and (source.name, source.audio_root) == ("esc50", "/esc50")


def test_source_from_manifest_and_its_dataset_part(tmp_path):
    manifest = tmp_path / "train.jsonl"
    manifest.write_text('{"id": "a", "path": "a.wav"}\n')
    source = SourceRecord.from_manifest("mine", "train", manifest, tmp_path)
    assert source.manifest_sha256 == file_sha256(manifest) and source.audio_root == str(tmp_path.resolve())
    source.first_shard, source.end_shard, source.end_row = 0, 1, 1
    assert source.dataset == DatasetRecord(
        "mine", "train", str(manifest.resolve()), file_sha256(manifest), str(tmp_path.resolve())
    )
    plan = BuildPlan("build", source, {"name": "enc"}, 10, 0, [{"id": "a"}])
    assert plan.describe()["source"] == source.to_dict()


def test_the_faiss_report_is_the_store_s_index_record():
    vectors = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    _, report = build_index(vectors, IndexConfig(type="hnsw", recall_queries=20))
    assert isinstance(report, IndexRecord) and report.type == "hnsw" and "efSearch" in report.search_params
    info = StoreInfo(encoder={}, dim=8, count=50, index=report)
    assert info.index is report and IndexRecord.from_dict(report.to_dict()) == report


def test_shard_marker_is_typed_and_keeps_its_format(tmp_path):
    vectors = np.ones((1, 4), np.float32)
    write_shard(tmp_path, 0, vectors, [item_record({"id": "a", "path": "a.wav"})], key="k0")
    raw = json.loads(shard_stem(tmp_path, 0).with_suffix(".done").read_text())
    assert set(raw) == {"count", "key", "files"}
    assert set(raw["files"]) == {"shards/000000.npy", "shards/000000.parquet"}
    assert all(set(rec) == {"size", "sha256"} for rec in raw["files"].values())
    marker = shard_marker(tmp_path, 0)
    assert isinstance(marker, ShardMarker) and marker.count == 1 and marker.key == "k0"
    npy = tmp_path / "shards" / "000000.npy"
    assert marker.files["shards/000000.npy"] == FileRecord(npy.stat().st_size, file_sha256(npy))
    raw["files"] = ["shards/000000.npy"]  # damaged: the marker no longer says what the files are
    shard_stem(tmp_path, 0).with_suffix(".done").write_text(json.dumps(raw))
    assert shard_marker(tmp_path, 0) is None

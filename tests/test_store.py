"""The store format: shards with done markers and rejected lists, items table, index, features."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from rag_flamingo.errors import StoreError
from rag_flamingo.store.features import write_features
from rag_flamingo.store.index_store import IndexStore, write_info, write_store
from rag_flamingo.store.items import item_from_record, item_record
from rag_flamingo.store.layout import INFO_FILE
from rag_flamingo.store.records import FeatureRecord, StoreInfo, read_info
from rag_flamingo.store.shards import (
    done_shards,
    read_all_shards,
    read_rejected,
    read_shard_rejected,
    write_rejected,
    write_shard,
)
from rag_flamingo.vectors import normalize_rows

ROWS = [
    {"id": "a", "path": "dog/a.wav", "label": "dog", "captions": ["a dog barks"], "extra": 1},
    {"id": "b", "path": "cat/b.wav", "labels": ["cat", "pet"], "start": 1, "end": 3.5},
    {"id": "c", "path": "x/c.wav", "group": "rec1", "question": "q?", "answer": "yes"},
]


def vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return normalize_rows(np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32))


def make_store(root, n_shards: int = 2, encoder: dict | None = None) -> np.ndarray:
    emb = vectors(3 * n_shards)
    records = []
    for s in range(n_shards):
        recs = [item_record(dict(r, id=f"{r['id']}{s}"), split="train") for r in ROWS]
        write_shard(root, s, emb[3 * s : 3 * s + 3], recs, rejected=[{"id": f"bad{s}", "reason": "silent"}])
        records += recs
    index = faiss.IndexFlatIP(8)
    index.add(emb)
    info = StoreInfo(
        encoder=encoder or {"name": "enc", "checkpoint_sha256": "x", "device": "cpu"},
        dim=8,
        count=len(records),
        index={"type": "flat", "search_params": {}},
    )
    write_store(root, info, index, records)
    return emb


def test_item_record_roundtrip():
    rec = item_record(ROWS[0], split="train")
    assert rec["group"] == "dog/a.wav" and rec["split"] == "train" and json.loads(rec["meta"]) == {"extra": 1}
    assert item_from_record(rec) == dict(ROWS[0], group="dog/a.wav", split="train")
    assert item_record(ROWS[1])["start"] == 1.0 and item_record(ROWS[2])["group"] == "rec1"


def test_shards_done_markers_and_rejected(tmp_path):
    emb = make_store(tmp_path)
    assert done_shards(tmp_path) == [0, 1]
    assert read_shard_rejected(tmp_path, 1) == [{"id": "bad1", "reason": "silent"}]
    assert read_rejected(tmp_path) == []  # written when the build is finalised
    write_rejected(tmp_path, [r for s in done_shards(tmp_path) for r in read_shard_rejected(tmp_path, s)])
    assert [r["id"] for r in read_rejected(tmp_path)] == ["bad0", "bad1"]
    all_emb, table = read_all_shards(tmp_path)
    np.testing.assert_array_equal(all_emb, emb)
    assert table.column("id").to_pylist() == ["a0", "b0", "c0", "a1", "b1", "c1"]
    # a shard without its done marker is not complete (a killed writer)
    (tmp_path / "shards" / "000001.done").unlink()
    assert done_shards(tmp_path) == [0] and read_all_shards(tmp_path)[0].shape == (3, 8)
    with pytest.raises(ValueError, match="3 items but 2 vectors"):
        write_shard(tmp_path, 5, emb[:2], [item_record(r) for r in ROWS])
    assert 5 not in done_shards(tmp_path)


def test_empty_shard_is_allowed(tmp_path):
    write_shard(tmp_path, 0, np.zeros((0, 8), np.float32), [], rejected=[{"id": "x", "reason": "corrupt"}])
    write_shard(tmp_path, 1, vectors(2), [item_record(r) for r in ROWS[:2]])
    emb, table = read_all_shards(tmp_path)
    assert emb.shape == (2, 8) and table.num_rows == 2 and read_shard_rejected(tmp_path, 1) == []


def test_open_search_and_labels(tmp_path):
    emb = make_store(tmp_path)
    store = IndexStore.open(tmp_path)
    assert len(store) == 6 and store.item(1)["labels"] == ["cat", "pet"]
    assert store.label_set() == ["cat", "dog", "pet"]
    scores, rows = store.search(emb[:2] * 5.0, 3)  # cosine: query norms do not matter
    assert (rows[:, 0] == [0, 1]).all() and np.allclose(scores[:, 0], 1.0, atol=1e-5)
    np.testing.assert_array_equal(store.embeddings(), emb)
    with pytest.raises(StoreError, match="query dim"):
        store.search(np.ones((1, 4), np.float32), 1)


def test_encoder_check(tmp_path):
    make_store(tmp_path, encoder={"name": "enc", "checkpoint_sha256": "x", "device": "cpu"})
    store = IndexStore.open(tmp_path)
    store.check_encoder({"name": "enc", "checkpoint_sha256": "x", "device": "cuda", "batch_size": 4})
    with pytest.raises(StoreError, match="differs in: checkpoint_sha256"):
        store.check_encoder({"name": "enc", "checkpoint_sha256": "y"})


def test_encoder_check_ignores_precision_and_names_only_real_differences(tmp_path):
    # MS-CLAP/clapcap record their autocast precision: fp16 on the GPU that built the store, fp32 on
    # the CPU that queries it; like dtype and device it does not make the embeddings incomparable.
    built = {"name": "ms_clap_2023", "checkpoint_sha256": "x", "precision": "torch.float16", "device": "cuda"}
    make_store(tmp_path, encoder=built)
    store = IndexStore.open(tmp_path)
    store.check_encoder(dict(built, precision="torch.float32", device="cpu"))
    with pytest.raises(StoreError, match=r"differs in: checkpoint_sha256 \(store 'x', query 'y'\)\)"):
        store.check_encoder(dict(built, checkpoint_sha256="y", device="cpu"))


def test_incomplete_or_inconsistent_stores_are_refused(tmp_path):
    with pytest.raises(StoreError, match="not a complete index store"):
        IndexStore.open(tmp_path)
    make_store(tmp_path)
    info = read_info(tmp_path)
    info.count = 5
    write_info(tmp_path, info)
    with pytest.raises(StoreError, match="disagree"):
        IndexStore.open(tmp_path)
    with pytest.raises(StoreError, match="must agree"):
        write_store(tmp_path, info, faiss.IndexFlatIP(8), [])


def test_features_cache(tmp_path):
    make_store(tmp_path)
    for s in (0, 1):
        feats = np.full((3, 4, 5), s, np.float32) + np.arange(3)[:, None, None]
        write_features(tmp_path, "clapcap", s, feats, np.ones((3, 4)))
    info = read_info(tmp_path)
    with pytest.raises(StoreError, match="features=clapcap"):
        IndexStore.open(tmp_path).features("clapcap")
    info.features["clapcap"] = FeatureRecord(windows=4, dim=5)
    write_info(tmp_path, info)
    cache = IndexStore.open(tmp_path).features("clapcap")
    f, m = cache.get([4, 0])
    assert cache.count == 6 and f.shape == (2, 4, 5) and m.shape == (2, 4)
    assert f[0, 0, 0] == 2.0 and f[1, 0, 0] == 0.0  # row 4 = shard 1, offset 1
    assert (tmp_path / INFO_FILE).is_file()

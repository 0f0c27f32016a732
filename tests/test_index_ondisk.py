"""Building the FAISS index from the store's shards, block by block, equals the in-memory build.

Real FAISS, real shard files written by the store's writer; ``ADD_BLOCK`` is made small so blocks
cross shard boundaries and the build holds far fewer rows than the store at any time.
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from test_index_pipeline import FAST, make_folder

import rag_flamingo.indexing.faiss_index as faiss_index
from index_builder.cli import main
from rag_flamingo.config import IndexConfig
from rag_flamingo.errors import StoreError
from rag_flamingo.indexing.faiss_index import build_index, training_rows
from rag_flamingo.indexing.ondisk import ShardRows
from rag_flamingo.store.index_store import IndexStore
from rag_flamingo.store.records import read_info
from rag_flamingo.store.shards import read_all_vectors, shard_stem, write_shard
from rag_flamingo.vectors import normalize_rows

SHARD_SIZES = [700, 1300, 0, 999, 1001, 500]  # 4,500 rows, one empty shard


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((64, dim))
    x = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.standard_normal((n, dim))
    return normalize_rows(x.astype(np.float32))


def write_shards(root, vectors: np.ndarray) -> None:
    start = 0
    for shard, size in enumerate(SHARD_SIZES):
        rows = [{"id": str(i), "path": f"{i}.wav"} for i in range(start, start + size)]
        write_shard(root, shard, vectors[start : start + size], rows)
        start += size


class ObservedRows(ShardRows):
    """ShardRows that records the most rows it ever handed out at once (observes, changes nothing)."""

    largest = 0

    def take(self, rows):
        out = super().take(rows)
        self.largest = max(self.largest, len(out))
        return out

    def blocks(self, size):
        for block in super().blocks(size):
            self.largest = max(self.largest, len(block))
            yield block


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(faiss_index, "ADD_BLOCK", 1024)


@pytest.mark.parametrize(
    "opts",
    [
        IndexConfig(type="ivf_flat", nlist=16, recall_queries=200),  # trained on 1,600 of 4,500 rows
        IndexConfig(type="ivf_pq", pq_m=8, recall_queries=200),
        IndexConfig(type="flat", metric="l2", recall_queries=200),
        IndexConfig(type="hnsw", hnsw_m=8, recall_queries=200),
    ],
    ids=["ivf_flat", "ivf_pq", "flat_l2", "hnsw"],
)
def test_build_from_shards_equals_in_memory_build(tmp_path, small_blocks, opts):
    vectors = clustered(sum(SHARD_SIZES), 32)
    write_shards(tmp_path, vectors)
    rows = ObservedRows(tmp_path)
    assert rows.shape == vectors.shape

    streamed, streamed_report = build_index(rows, opts)
    in_memory, memory_report = build_index(read_all_vectors(tmp_path), opts)

    assert streamed_report.to_dict() == memory_report.to_dict()
    assert faiss.serialize_index(streamed).tobytes() == faiss.serialize_index(in_memory).tobytes()
    queries = vectors[::97]
    assert np.array_equal(streamed.search(queries, 10)[1], in_memory.search(queries, 10)[1])
    # At most one block, or the training / recall-query sample at once (PQ trains on all 4,500 here).
    sample = len(training_rows(len(vectors), memory_report.factory, opts.seed))
    assert rows.largest <= max(1024, opts.recall_queries, sample if opts.type.startswith("ivf") else 0)
    if opts.type != "ivf_pq":
        assert rows.largest < len(vectors)


def test_cosine_normalisation_is_decided_over_all_shards(tmp_path, small_blocks):
    """Only the last shard is off unit length: every block is normalised, as in memory."""
    vectors = clustered(sum(SHARD_SIZES), 16)
    vectors[-500:] *= 3.0
    write_shards(tmp_path, vectors)
    opts = IndexConfig(type="flat", recall_queries=100)
    streamed, _ = build_index(ShardRows(tmp_path), opts)
    in_memory, _ = build_index(read_all_vectors(tmp_path), opts)
    stored = streamed.reconstruct_n(0, streamed.ntotal)
    assert np.allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(stored, in_memory.reconstruct_n(0, in_memory.ntotal))


def test_shard_disagreeing_with_its_marker_is_a_store_error(tmp_path):
    vectors = clustered(sum(SHARD_SIZES), 8)
    write_shards(tmp_path, vectors)
    np.save(shard_stem(tmp_path, 1).with_suffix(".npy"), vectors[:5])
    with pytest.raises(StoreError, match="shard 1 holds 5 vectors, its marker says 1300"):
        list(ShardRows(tmp_path).blocks(1024))


def test_build_index_streams_above_the_threshold(tmp_path, capsys):
    """build_index with index.stream_above=0 writes the same index and items as the in-memory build."""
    audio = make_folder(tmp_path / "audio", per_class=2)
    common = ["dataset=folder", f"dataset.root={audio}", "shard_size=2", "index=ivf_flat", *FAST]
    assert main([*common, f"output={tmp_path / 'memory'}"]) == 0
    assert main([*common, "index.stream_above=0", f"output={tmp_path / 'streamed'}"]) == 0
    memory, streamed = IndexStore.open(tmp_path / "memory"), IndexStore.open(tmp_path / "streamed")
    assert (tmp_path / "memory" / "index.faiss").read_bytes() == (tmp_path / "streamed" / "index.faiss").read_bytes()
    assert memory.items == streamed.items
    # label precision needs all vectors in memory: absent (not made up) on the streamed path
    assert read_info(tmp_path / "memory").build.label_precision is not None
    assert read_info(tmp_path / "streamed").build.label_precision is None

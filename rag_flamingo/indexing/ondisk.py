"""A store's shards as ``VectorRows``: the FAISS build of a store larger than memory.

``build_index`` over ``ShardRows`` never holds all vectors at once: it trains IVF / PQ on a seeded
sample of rows (gathered shard by shard), adds the rows in blocks of ``ADD_BLOCK`` and merges the
exact neighbours of the recall queries block by block. Peak memory is the index itself plus one
block and the training sample -- for IVF-PQ, about ``n * (m + 8)`` bytes instead of the ``n * dim * 4``
bytes of the raw vectors. The result equals ``build_index`` over the same vectors in memory (same
code path; ``tests/test_index_ondisk.py``).

FAISS's on-disk inverted lists (``OnDiskInvertedLists`` / ``merge_ondisk``) would also keep the
index's own lists out of memory, but make the index two files with an absolute path inside; the
store's one ``index.faiss`` stays the format, and IVF-PQ keeps 100M items in a few GB.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..errors import StoreError
from ..store.layout import REPAIR_HINT, SHARDS_DIR
from ..store.shards import done_shards, read_shard_items, read_shard_vectors, shard_marker


class ShardRows:
    """The vectors of a store's complete shards, in shard order, one shard in memory at a time."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.shards = done_shards(self.root)
        if not self.shards:
            raise StoreError(f"{self.root}: no complete embedding shards under {SHARDS_DIR}/")
        counts = []
        for shard in self.shards:
            marker = shard_marker(self.root, shard)
            if marker is None:
                raise StoreError(f"{self.root}: {SHARDS_DIR}/{shard:06d}.done is unreadable; {REPAIR_HINT}")
            counts.append(marker.count)
        self.counts = np.array(counts, dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])
        filled = [s for s, c in zip(self.shards, counts) if c]
        self.dim = int(self._read(filled[0]).shape[1]) if filled else 0

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.starts[-1]), self.dim

    def _read(self, shard: int) -> np.ndarray:
        vectors = read_shard_vectors(self.root, shard)
        expected = int(self.counts[self.shards.index(shard)])
        if vectors.shape[0] != expected:
            raise StoreError(
                f"{self.root}: shard {shard} holds {vectors.shape[0]} vectors, its marker says {expected}; "
                f"{REPAIR_HINT}"
            )
        return vectors

    def take(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        owner = np.searchsorted(self.starts, rows, side="right") - 1
        for position in np.unique(owner):
            picked = np.flatnonzero(owner == position)
            vectors = self._read(self.shards[position])
            out[picked] = vectors[rows[picked] - self.starts[position]]
        return out

    def blocks(self, size: int) -> Iterator[np.ndarray]:
        pending: list[np.ndarray] = []
        held = 0
        for shard in self.shards:
            vectors = self._read(shard)
            while len(vectors):
                part, vectors = vectors[: size - held], vectors[size - held :]
                pending.append(part)
                held += len(part)
                if held == size:
                    yield np.concatenate(pending)
                    pending, held = [], 0
        if held:
            yield np.concatenate(pending)


def read_shard_tables(root: Path, shards: list[int]) -> pa.Table:
    """The items of ``shards`` in order (their vectors are not read)."""
    return pa.concat_tables([read_shard_items(root, s) for s in shards])


__all__ = ["ShardRows", "read_shard_tables"]

"""A broken store is a StoreError naming the file, never a traceback: real FAISS, parquet and numpy files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_store import make_store

from rag_flamingo.errors import StoreError
from rag_flamingo.store.index_store import IndexStore, write_info
from rag_flamingo.store.layout import INDEX_FILE, INFO_FILE, ITEMS_FILE
from rag_flamingo.store.lock import build_lock
from rag_flamingo.store.records import read_info
from rag_flamingo.store.shards import read_shard_vectors, shard_problem


def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def flip_byte(path, offset: int = -9) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "name, damage",
    [
        (ITEMS_FILE, truncate),
        (ITEMS_FILE, lambda p: p.write_bytes(b"")),
        (INDEX_FILE, truncate),
        (INDEX_FILE, lambda p: p.unlink()),
        (INFO_FILE, lambda p: p.write_text('{"encoder": {"name": "enc"}, "dim": 8,')),
        (INFO_FILE, lambda p: p.write_text("[1, 2]")),
        ("shards/000001.npy", truncate),
    ],
)
def test_open_names_the_broken_file_and_the_fix(tmp_path, name, damage):
    make_store(tmp_path)
    damage(tmp_path / name)
    with pytest.raises(StoreError, match="rerun the same build_index command") as err:
        IndexStore.open(tmp_path)
    assert name in str(err.value) and "\n" not in str(err.value)


def test_checksums_are_checked_on_request(tmp_path):
    make_store(tmp_path)
    flip_byte(tmp_path / INDEX_FILE)  # a byte of the last vector: same size, still a valid index
    IndexStore.open(tmp_path)  # sizes only
    with pytest.raises(StoreError, match=f"{INDEX_FILE} is damaged"):
        IndexStore.open(tmp_path, verify=True)


def test_unreadable_files_of_the_recorded_size_are_store_errors(tmp_path):
    make_store(tmp_path)
    for name in (INDEX_FILE, ITEMS_FILE):
        size = (tmp_path / name).stat().st_size
        (tmp_path / name).write_bytes(b"\0" * size)  # passes the size check, cannot be parsed
        with pytest.raises(StoreError, match=name):
            IndexStore.open(tmp_path)
        make_store(tmp_path)


def test_every_store_file_is_recorded(tmp_path):
    make_store(tmp_path)
    files = read_info(tmp_path).files
    assert {
        INDEX_FILE,
        ITEMS_FILE,
        "shards/000000.npy",
        "shards/000001.parquet",
        "shards/000001.rejected.jsonl",
    } <= set(files)
    assert files[ITEMS_FILE].size == (tmp_path / ITEMS_FILE).stat().st_size
    assert len(files[INDEX_FILE].sha256) == 64


def test_pickled_object_shard_is_refused(tmp_path):
    make_store(tmp_path)
    npy = tmp_path / "shards" / "000000.npy"
    payload = np.empty(3, dtype=object)
    payload[:] = [{"a": 1}, [2], "x"]
    np.save(npy, payload, allow_pickle=True)
    with pytest.raises(StoreError, match="000000.npy: not a plain float array"):
        read_shard_vectors(tmp_path, 0)
    assert "000000.npy" in shard_problem(tmp_path, 0)
    info = read_info(tmp_path)
    write_info(tmp_path, info)  # even when store.json records the planted file's size
    with pytest.raises(StoreError, match="000000.npy"):
        IndexStore.open(tmp_path).embeddings()


def test_format_1_store_is_refused_with_the_fix(tmp_path):
    make_store(tmp_path)
    data = json.loads((tmp_path / INFO_FILE).read_text())
    data["format"] = 1
    (tmp_path / INFO_FILE).write_text(json.dumps(data))
    with pytest.raises(StoreError, match="predates content hashes.*delete the folder and rerun"):
        IndexStore.open(tmp_path)


def test_build_lock_refuses_a_second_holder(tmp_path):
    busy = pytest.raises(StoreError, match="another build_index is writing this store")
    with build_lock(tmp_path), busy, build_lock(tmp_path):
        pass
    with build_lock(tmp_path):  # released when the holder is done
        pass

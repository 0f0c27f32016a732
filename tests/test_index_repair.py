"""build_index repairs a broken store from its shards, refuses a concurrent build, and its decoding
workers die with it: real audio files, the real aisfx encoder, real FAISS."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_index_pipeline import FAST, make_folder, run_cli, store_bytes, tone, write_manifest
from test_store_integrity import flip_byte, truncate

from index_builder.cli import load_config
from rag_flamingo.errors import StoreError
from rag_flamingo.indexing.pipeline import resolve, run
from rag_flamingo.store.index_store import IndexStore
from rag_flamingo.store.layout import INDEX_FILE, INFO_FILE, ITEMS_FILE
from rag_flamingo.store.lock import build_lock


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A 9-item store in 3 shards, and the command that built it."""
    tmp = tmp_path_factory.mktemp("repair")
    root = make_folder(tmp / "audio", per_class=3)
    args = ["dataset=folder", f"dataset.root={root}", "shard_size=3", *FAST]
    out = tmp / "store"
    run_cli([*args, f"output={out}"])
    return args, out, store_bytes(out)


def copy_store(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize(
    "name, damage",
    [
        (INDEX_FILE, lambda p: p.unlink()),
        (INDEX_FILE, truncate),
        (ITEMS_FILE, truncate),
        (ITEMS_FILE, lambda p: p.write_bytes(b"")),
        (INFO_FILE, lambda p: p.write_text('{"count": 9, "enc')),
    ],
)
def test_rerun_repairs_final_files_without_embedding(built, tmp_path, capsys, name, damage):
    args, original, want = built
    out = copy_store(original, tmp_path / "store")
    damage(out / name)
    with pytest.raises(StoreError, match=name):
        IndexStore.open(out)
    capsys.readouterr()
    run_cli([*args, f"output={out}"])
    printed = capsys.readouterr().out
    assert "build_index: repaired" in printed and "embedded 0 clips" in printed and name in printed
    assert store_bytes(out) == want
    assert len(IndexStore.open(out, verify=True)) == 9


def test_damaged_shard_is_re_embedded_alone(built, tmp_path, capsys):
    args, original, want = built
    out = copy_store(original, tmp_path / "store")
    flip_byte(out / "shards" / "000001.npy")  # same size: only its checksum tells
    kept = {n: (out / "shards" / f"00000{n}.npy").stat().st_mtime_ns for n in (0, 2)}
    capsys.readouterr()
    run_cli([*args, f"output={out}"])
    printed = capsys.readouterr().out
    assert "build_index: repaired" in printed and "embedded 3 clips" in printed and "shard 1 re-embedded" in printed
    assert {n: (out / "shards" / f"00000{n}.npy").stat().st_mtime_ns for n in (0, 2)} == kept
    assert store_bytes(out) == want


def test_pickled_object_shard_is_re_embedded(built, tmp_path, capsys):
    args, original, want = built
    out = copy_store(original, tmp_path / "store")
    payload = np.empty(3, dtype=object)
    payload[:] = [os.system, "x", 1]  # a pickle that would call os.system if it were ever loaded
    np.save(out / "shards" / "000002.npy", payload, allow_pickle=True)
    with pytest.raises(StoreError, match="000002.npy"):
        IndexStore.open(out)
    capsys.readouterr()
    run_cli([*args, f"output={out}"])
    assert "embedded 3 clips" in capsys.readouterr().out and store_bytes(out) == want


def test_intact_store_is_reported_complete_and_untouched(built, tmp_path, capsys):
    args, original, want = built
    out = copy_store(original, tmp_path / "store")
    capsys.readouterr()
    run_cli([*args, f"output={out}"])
    assert "build_index: complete" in capsys.readouterr().out and store_bytes(out) == want


def test_second_build_of_the_same_store_refuses_at_once(tmp_path):
    root = make_folder(tmp_path / "audio", per_class=1)
    out = tmp_path / "store"
    cfg = resolve(load_config(["dataset=folder", f"dataset.root={root}", f"output={out}", *FAST]))
    with build_lock(out):  # another build holds the store
        start = time.perf_counter()
        with pytest.raises(StoreError, match="another build_index is writing this store"):
            run(cfg)
        assert time.perf_counter() - start < 30
    assert not (out / "shards").exists()
    assert run(cfg).status == "built"  # free again once the holder is gone


def big_wav(path: Path, seconds_of_tone: float, total_bytes: int) -> None:
    """A valid 16-bit wav with a tone at the start and a sparse tail of silence up to ``total_bytes``
    (costly to hash, cheap to decode the first seconds of, and free on disk)."""
    sf.write(path, tone(seconds_of_tone, 16000, 440), 16000, subtype="PCM_16")
    data = path.read_bytes()
    at = data.index(b"data")
    with open(path, "r+b") as f:
        f.truncate(total_bytes)
        f.seek(4)
        f.write(struct.pack("<I", total_bytes - 8))
        f.seek(at + 4)
        f.write(struct.pack("<I", total_bytes - at - 8))


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has exited


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
def test_decoding_workers_exit_when_the_build_is_killed(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    big_wav(audio / "big.wav", 1.0, 3 << 30)  # hashing 3 GiB keeps a worker busy for seconds
    rows = [{"id": f"big{i}", "path": "big.wav", "label": "tone"} for i in range(16)]
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "store"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "index_builder",
            f"dataset.manifest={manifest}",
            f"dataset.root={audio}",
            f"output={out}",
            "encoder.max_seconds=1.5",
            "num_workers=2",
            "batch_size=8",
            "progress=false",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: list[int] = []
    try:
        deadline = time.time() + 120
        while len(workers := _children(proc.pid)) < 2 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert len(workers) >= 2, "the build never started its decoding workers"
        time.sleep(1.0)  # the workers are hashing their prefetched items
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 3
        while any(map(_alive, workers)) and time.time() < deadline:
            time.sleep(0.05)
        survivors = [pid for pid in workers if _alive(pid)]
        assert not survivors, f"decoding workers {survivors} outlived the killed build"
        with build_lock(out):  # no stale lock: the dead holder's workers shared its descriptor
            pass
    finally:
        proc.kill()
        for pid in filter(_alive, workers):  # only if the test failed
            os.kill(pid, signal.SIGKILL)

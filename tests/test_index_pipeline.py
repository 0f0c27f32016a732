"""build_index end to end: real audio files on disk, the real aisfx encoder, real FAISS."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from index_builder.cli import main
from rag_flamingo.errors import ManifestError, StoreError
from rag_flamingo.store.index_store import IndexStore
from rag_flamingo.store.shards import done_shards, read_all_shards

FAST = ["encoder.max_seconds=1.5", "num_workers=0", "progress=false", "batch_size=3"]
FORMAT2 = Path(__file__).parent / "fixtures" / "store_format2.json"  # store.json before its records were typed


def tone(seconds: float, sr: int, freq: float, kind: str = "sine", channels: int = 1, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    if kind == "sine":
        x = 0.4 * np.sin(2 * np.pi * freq * t)
    elif kind == "noise":
        x = 0.2 * rng.standard_normal(t.size)
    else:  # clicks
        x = 0.5 * (np.sin(2 * np.pi * freq * t) > 0.995) * rng.standard_normal(t.size)
    x = x.astype(np.float32)
    return np.stack([x * (1 - 0.1 * c) for c in range(channels)], axis=1) if channels > 1 else x


def make_folder(root: Path, per_class: int = 3, classes=("sine", "noise", "clicks")) -> Path:
    for ci, kind in enumerate(classes):
        for j in range(per_class):
            path = root / kind / f"{kind}_{j}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, tone(1.0 + 0.3 * j, 16000, 200 + 150 * j + 40 * ci, kind, seed=j), 16000)
    return root


def write_manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def manifest_rows(root: Path) -> list[dict]:
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.wav"))
    return [{"id": f.rsplit(".", 1)[0], "path": f, "label": f.split("/")[0]} for f in files]


def store_bytes(root: Path) -> dict[str, bytes]:
    names = ["index.faiss", "items.parquet", "rejected.jsonl"] + [
        f"shards/{p.name}" for p in sorted((root / "shards").iterdir()) if p.suffix in (".npy", ".parquet", ".jsonl")
    ]
    return {n: (root / n).read_bytes() for n in names}


def run_cli(args: list[str]) -> None:
    assert main(args) == 0


def record_keys(info: dict) -> dict[str, set[str]]:
    """The keys of each record of a store.json (sources and files: over all of them)."""
    return {
        "store": set(info),
        "index": set(info["index"]),
        "dataset": set(info["dataset"]),
        "build": set(info["build"]),
        "source": {k for s in info["build"]["sources"] for k in s},
        "file": {k for f in info["files"].values() for k in f},
    }


# --------------------------------------------------------------------------------------------


def test_folder_with_hard_files(tmp_path, capsys, monkeypatch):
    """Acceptance: labelled sub-folders with a corrupt, an empty, a 1-hour, a 96 kHz 6-channel
    and an 8 kHz mp3 file; only the needed segment of the long file is read."""
    root = make_folder(tmp_path / "audio", per_class=2)
    (root / "sine" / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage" * 10)
    (root / "noise" / "empty.flac").write_bytes(b"")
    sf.write(root / "noise" / "silent.wav", np.zeros(16000, np.float32), 16000)
    sf.write(root / "clicks" / "tiny.wav", tone(0.02, 16000, 300), 16000)
    sf.write(root / "sine" / "surround96k.wav", tone(1.2, 96000, 500, channels=6), 96000)
    sf.write(root / "sine" / "phone8k.mp3", tone(1.5, 8000, 300), 8000, format="MP3")
    long_sr, hour = 8000, 3600
    with sf.SoundFile(root / "noise" / "one_hour.wav", "w", long_sr, 1, subtype="PCM_16") as f:
        block = (0.01 * np.sin(2 * np.pi * 100 * np.arange(long_sr * 60) / long_sr)).astype(np.float32)
        for _ in range(hour // 60):
            f.write(block)

    import rag_flamingo.audio as audio

    frames_read = []
    real_read = audio.sf.read

    def recording_read(path, *args, **kwargs):  # observe (not replace) what is read from disk
        frames_read.append((Path(path).name, kwargs.get("stop", 0) - kwargs.get("start", 0)))
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(audio.sf, "read", recording_read)
    out = tmp_path / "store"
    t0 = time.perf_counter()
    run_cli(["dataset=folder", f"dataset.root={root}", "encoder=aisfx", f"output={out}", *FAST])
    assert time.perf_counter() - t0 < 60
    long_reads = [n for name, n in frames_read if name == "one_hour.wav"]
    assert long_reads and max(long_reads) <= 1.5 * long_sr  # max_seconds of a 1-hour file

    store = IndexStore.open(out)
    ids = {it["id"] for it in store.items}
    assert {"sine/surround96k", "sine/phone8k", "noise/one_hour", "sine/sine_0"} <= ids
    rejected = {r["id"]: r["reason"] for r in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())}
    assert set(rejected) == {"sine/corrupt", "noise/empty", "noise/silent", "clicks/tiny"}
    assert "decode" in rejected["sine/corrupt"] and "silent" in rejected["noise/silent"]
    assert "too short" in rejected["clicks/tiny"]
    assert len(store) == 6 + 3 and store.info.build.rejected == 4
    assert store.label_set() == ["clicks", "noise", "sine"]
    assert store.info.encoder["name"] == "aisfx" and store.info.encoder["max_seconds"] == 1.5
    assert store.info.index.type == "flat" and store.info.index.recall_at_10 == 1.0
    # a clip is its own nearest neighbour; same-class neighbours dominate for these clear classes
    scores, rows = store.search(store.embeddings(), 2)
    assert (rows[:, 0] == np.arange(len(store))).all()
    printed = capsys.readouterr().out
    assert "9 indexed, 4 rejected" in printed and "recall@10 1.0000" in printed and str(out) in printed
    quality = store.info.build.label_precision
    assert quality["queries"] == 9 and f"label precision@5 {quality['precision']:.3f}" in printed
    # rerunning the same command finds the complete store and changes nothing
    before = store_bytes(out)
    run_cli(["dataset=folder", f"dataset.root={root}", "encoder=aisfx", f"output={out}", *FAST])
    assert store_bytes(out) == before and "complete" in capsys.readouterr().out
    # asking for another index type re-indexes the stored vectors; nothing is re-embedded
    run_cli(["dataset=folder", f"dataset.root={root}", "encoder=aisfx", f"output={out}", "index=hnsw", *FAST])
    hnsw = IndexStore.open(out)
    assert hnsw.info.index.type == "hnsw" and hnsw.info.index.recall_at_10 >= 0.99
    assert "efSearch" in hnsw.info.index.search_params
    after = store_bytes(out)
    assert {k: v for k, v in after.items() if k.startswith("shards/")} == {
        k: v for k, v in before.items() if k.startswith("shards/")
    }
    assert after["items.parquet"] == before["items.parquet"] and after["index.faiss"] != before["index.faiss"]


def test_manifest_errors_before_any_work(tmp_path):
    root = make_folder(tmp_path / "audio", per_class=1)
    rows = manifest_rows(root)
    bad = write_manifest(tmp_path / "dup.jsonl", rows + [dict(rows[0])])
    out = tmp_path / "store"
    with pytest.raises(ManifestError, match="duplicate id"):
        from index_builder.cli import load_config
        from rag_flamingo.indexing.pipeline import resolve, run

        run(resolve(load_config([f"dataset.manifest={bad}", f"dataset.root={root}", f"output={out}", *FAST])))
    assert not out.exists()
    missing = write_manifest(tmp_path / "missing.jsonl", [{"id": "a"}])
    code = subprocess.run(
        [sys.executable, "-m", "index_builder", f"dataset.manifest={missing}", f"output={out}", *FAST],
        capture_output=True,
        text=True,
    )
    assert code.returncode == 2 and "missing column(s) path" in code.stderr and not out.exists()


def test_append_equals_rebuild_on_union(tmp_path, capsys):
    root = make_folder(tmp_path / "audio", per_class=3, classes=("sine", "noise", "clicks", "buzz"))
    rows = manifest_rows(root)
    old = [r for r in rows if r["label"] != "buzz"]
    new = [r for r in rows if r["label"] == "buzz"]
    first = write_manifest(tmp_path / "first.jsonl", old)
    second = write_manifest(tmp_path / "second.jsonl", new + old[:2])  # 2 ids already indexed
    union = write_manifest(tmp_path / "union.jsonl", old + new)
    common = [f"dataset.root={root}", "shard_size=4", *FAST]
    appended, rebuilt = tmp_path / "appended", tmp_path / "rebuilt"
    run_cli([f"dataset.manifest={first}", f"output={appended}", *common])
    emb_before = IndexStore.open(appended).embeddings()
    # a kill after store.json was written leaves the build's plan behind; it must not block appends
    (appended / "build_plan.json").write_text(json.dumps({"mode": "build", "first_shard": 0}))
    capsys.readouterr()
    run_cli([f"dataset.manifest={second}", f"output={appended}", "mode=append", *common])
    printed = capsys.readouterr().out
    assert "appended" in printed and "embedded 3 clips" in printed
    assert "3 new, 2 unchanged skipped, 0 changed re-embedded" in printed
    run_cli([f"dataset.manifest={union}", f"output={rebuilt}", *common])
    a, b = IndexStore.open(appended), IndexStore.open(rebuilt)
    assert a.items == b.items and len(a) == len(rows)
    np.testing.assert_array_equal(a.embeddings()[: len(emb_before)], emb_before)  # not re-embedded
    np.testing.assert_allclose(a.embeddings(), b.embeddings(), atol=1e-6)
    assert (a.index.reconstruct_n(0, len(a)) == a.embeddings()).all()  # index rows == item rows
    assert [s.manifest for s in a.info.build.sources] == [str(first.resolve()), str(second.resolve())]
    assert [(s.first_row, s.end_row) for s in a.info.build.sources] == [(0, 9), (9, 12)]
    assert all(a.audio_path(r) == root / a.item(r)["path"] for r in range(len(a)))
    # store.json keeps the format written before its records were typed
    format2 = json.loads(FORMAT2.read_text())
    assert record_keys(json.loads((appended / "store.json").read_text())) == record_keys(format2)
    # appending with another encoder configuration is refused
    with pytest.raises(StoreError, match="built with encoder"):
        from index_builder.cli import load_config
        from rag_flamingo.indexing.pipeline import resolve, run

        run(
            resolve(
                load_config(
                    [
                        f"dataset.manifest={second}",
                        f"output={appended}",
                        "mode=append",
                        *common,
                        "encoder.max_seconds=1.0",
                    ]
                )
            )
        )


@pytest.mark.slow
def test_resume_after_kill_is_identical(tmp_path):
    root = make_folder(tmp_path / "audio", per_class=4)
    manifest = write_manifest(tmp_path / "m.jsonl", manifest_rows(root))
    args = [
        f"dataset.manifest={manifest}",
        f"dataset.root={root}",
        "shard_size=3",
        "batch_size=2",
        "encoder.max_seconds=2",
        "num_workers=1",
        "progress=false",
    ]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_cli([*args, f"output={whole}"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "index_builder", *args, f"output={killed}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (killed / "shards" / "000000.done").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_at_kill = done_shards(killed)
    assert 1 <= len(done_at_kill) < 4 and not (killed / "store.json").exists()
    first_mtime = (killed / "shards" / "000000.npy").stat().st_mtime_ns
    run_cli([*args, f"output={killed}"])
    assert (killed / "shards" / "000000.npy").stat().st_mtime_ns == first_mtime  # not redone
    assert store_bytes(killed) == store_bytes(whole)
    assert not (killed / "build_plan.json").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_rank_torchrun_equals_one_rank(tmp_path):
    root = make_folder(tmp_path / "audio", per_class=3)
    (root / "noise" / "broken.wav").write_bytes(b"not audio at all")
    manifest = write_manifest(tmp_path / "m.jsonl", manifest_rows(root))
    args = [f"dataset.manifest={manifest}", f"dataset.root={root}", "shard_size=2", *FAST]
    one, two = tmp_path / "one", tmp_path / "two"
    # Bitwise equality needs the same thread count per process (oneDNN/BLAS reductions depend on
    # it): each of the 2 ranks uses 1 thread on this 2-core machine, so the 1-rank run does too.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = subprocess.run(
        [sys.executable, "-m", "index_builder", *args, f"output={one}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={_free_port()}",
            "-m",
            "index_builder",
            *args,
            f"output={two}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("build_index: built") == 1  # rank 0 alone reports, for all ranks
    assert "9 indexed, 1 rejected" in proc.stdout and "embedded 9 clips" in proc.stdout
    assert store_bytes(two) == store_bytes(one)
    emb, table = read_all_shards(two)
    assert emb.shape[0] == table.num_rows == 9 and "noise/broken" in (two / "rejected.jsonl").read_text()


def test_features_need_a_window_encoder(tmp_path):
    root = make_folder(tmp_path / "audio", per_class=1)
    out = tmp_path / "store"
    run_cli(["dataset=folder", f"dataset.root={root}", f"output={out}", *FAST])
    from index_builder.cli import load_config
    from rag_flamingo.errors import ConfigError
    from rag_flamingo.indexing.pipeline import resolve, run

    with pytest.raises(ConfigError, match="window_features"):
        run(
            resolve(
                load_config(
                    [
                        "dataset=folder",
                        f"dataset.root={root}",
                        f"output={out}",
                        "mode=features",
                        "features=aisfx",
                        *FAST,
                    ]
                )
            )
        )
    assert pq.read_table(out / "items.parquet").num_rows == 3


@pytest.mark.slow
def test_features_added_to_an_existing_store_without_re_embedding(tmp_path, caplog):
    """features=clapcap: the real clapcap class with random weights saved in the released format."""
    import torch

    from rag_flamingo.audio import load_audio
    from rag_flamingo.encoders.clapcap import ClapcapAudioModel, ClapcapEncoder

    torch.manual_seed(0)
    ckpt = tmp_path / "clapcap_weights_2023.pth"
    torch.save({"model": ClapcapAudioModel().state_dict()}, ckpt)
    root = make_folder(tmp_path / "audio", per_class=1, classes=("sine", "noise"))  # 1 window each
    out = tmp_path / "store"
    args = ["dataset=folder", f"dataset.root={root}", f"output={out}", "shard_size=1", *FAST]
    run_cli(args)
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    run_cli([*args, "features=clapcap", f"features_encoder.checkpoint={ckpt}"])
    assert {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir() if p.name in stamps} == stamps
    store = IndexStore.open(out)
    assert store.info.features["clapcap"].windows == 16 and store.info.features["clapcap"].dim == 1024
    assert store.info.features["clapcap"].fingerprint["name"] == "clapcap"
    format2 = json.loads(FORMAT2.read_text())
    written = json.loads((out / "store.json").read_text())["features"]["clapcap"]
    assert set(written) == set(format2["features"]["clapcap"])
    cache = store.features("clapcap")
    feats, mask = cache.get(range(len(store)))
    assert feats.shape == (2, 16, 1024) and cache.count == len(store) == 2
    assert mask.sum(1).tolist() == [1.0, 1.0]
    row = [it["id"] for it in store.items].index("noise/noise_0")
    encoder = ClapcapEncoder(checkpoint=str(ckpt), device="cpu")
    want_f, want_m = encoder.window_features([load_audio(store.audio_path(row), 44100, max_seconds=33.25)])
    np.testing.assert_array_equal(mask[row], want_m.numpy()[0])
    np.testing.assert_allclose(feats[row], want_f.numpy()[0], atol=1e-5)

    # an append computes the cache for its new items with the recorded encoder (no features= given)
    make_folder(root, per_class=1, classes=("clicks",))
    run_cli([*args, "mode=append"])
    store = IndexStore.open(out)
    assert "clapcap" in store.info.features and store.features("clapcap").count == len(store) == 3
    row = [it["id"] for it in store.items].index("clicks/clicks_0")
    feats, mask = store.features("clapcap").get([row])
    want_f, want_m = encoder.window_features([load_audio(store.audio_path(row), 44100, max_seconds=33.25)])
    np.testing.assert_array_equal(mask[0], want_m.numpy()[0])
    np.testing.assert_allclose(feats[0], want_f.numpy()[0], atol=1e-5)
    # a recorded checkpoint that has gone: the append keeps its items and drops the cache, saying how
    ckpt.rename(tmp_path / "moved.pth")
    make_folder(root, per_class=2, classes=("clicks",))
    with caplog.at_level(logging.WARNING, logger="rag_flamingo.indexing.pipeline"):
        run_cli([*args, "mode=append"])
    assert "features_encoder.checkpoint=" in caplog.text
    store = IndexStore.open(out)
    assert len(store) == 4 and "clapcap" not in store.info.features


def test_no_usable_item_is_a_clear_error(tmp_path):
    root = tmp_path / "audio"
    (root / "x").mkdir(parents=True)
    (root / "x" / "a.wav").write_bytes(b"junk")
    sf.write(root / "x" / "b.wav", np.zeros(8000, np.float32), 8000)
    from index_builder.cli import load_config
    from rag_flamingo.indexing.pipeline import resolve, run

    with pytest.raises(StoreError, match="none of the 2 items"):
        run(resolve(load_config(["dataset=folder", f"dataset.root={root}", f"output={tmp_path / 's'}", *FAST])))
    assert len((tmp_path / "s" / "rejected.jsonl").read_text().splitlines()) == 2

"""The embedded demo dataset: deterministic, complete, and its classes clearly separable."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rag_flamingo.datasets import demo
from rag_flamingo.datasets.manifest import read_manifest


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    return demo.generate_demo(tmp_path_factory.mktemp("demo") / "demo")


def test_demo_is_byte_identical_across_runs(demo_dir, tmp_path):
    again = demo.generate_demo(tmp_path / "again")
    assert _digest(demo_dir) == _digest(again)
    bell = demo.DEMO_LABELS.index("bell")
    assert np.array_equal(demo.render_item(bell, "train", 0), demo.render_item(bell, "train", 0))
    assert not np.array_equal(demo.render_item(bell, "train", 0), demo.render_item(bell, "train", 1))
    other_seed = demo.render_item(bell, "train", 0, seed=demo.DEMO_SEED + 1)
    assert other_seed.shape != demo.render_item(bell, "train", 0).shape or not np.array_equal(
        other_seed, demo.render_item(bell, "train", 0)
    )


def test_demo_manifests_and_files(demo_dir):
    assert len(demo.DEMO_LABELS) >= 10 and len(set(demo.DEMO_LABELS)) == len(demo.DEMO_LABELS)
    for split, per_class in demo.SPLIT_SIZES.items():
        rows = read_manifest(demo_dir / f"{split}.jsonl", required=("label", "captions"))
        assert len(rows) == per_class * len(demo.DEMO_LABELS)
        assert sorted({r["label"] for r in rows}) == sorted(demo.demo_labels())
        for row in rows:
            assert row["captions"] and all(isinstance(c, str) and c for c in row["captions"])
            info = sf.info(demo_dir / row["path"])
            assert (info.samplerate, info.channels, info.subtype) == (44100, 1, "PCM_16")
            assert 1.0 <= info.duration <= 4.0
    train = {r["id"] for r in read_manifest(demo_dir / "train.jsonl")}
    test = {r["id"] for r in read_manifest(demo_dir / "test.jsonl")}
    assert not train & test


def test_demo_items_vary_within_a_class(demo_dir):
    rows = [r for r in read_manifest(demo_dir / "train.jsonl") if r["label"] == "sine tone"]
    durations = {round(sf.info(demo_dir / r["path"]).duration, 3) for r in rows}
    assert len(durations) == len(rows)


def _features(path: Path) -> np.ndarray:
    """Mean log band energies (16 log-spaced bands), centroid drift over time, envelope stats."""
    x, sr = sf.read(path)
    frames = np.lib.stride_tricks.sliding_window_view(x, 2048)[::512] * np.hanning(2048)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(2048, 1 / sr)
    edges = np.geomspace(50, 16000, 17)
    bands = np.stack([power[:, (freqs >= a) & (freqs < b)].sum(1) for a, b in zip(edges[:-1], edges[1:])], 1)
    energy = bands.sum(1)
    active = energy > energy.max() * 1e-3
    spectrum = 10 * np.log10(bands[active].mean(0) + 1e-12)
    centroid = (np.log2(freqs + 1) * power[active]).sum(1) / (power[active].sum(1) + 1e-12)
    third = max(1, len(centroid) // 3)
    env = 10 * np.log10(energy[active] + 1e-12)
    return np.concatenate(
        [
            (spectrum - spectrum.max()) / 10,
            [centroid[-third:].mean() - centroid[:third].mean(), env.std() / 10, np.abs(np.diff(env)).mean() / 10],
        ]
    )


def test_demo_classes_are_separable_by_simple_features(demo_dir):
    def load(split):
        rows = read_manifest(demo_dir / f"{split}.jsonl")
        return np.stack([_features(demo_dir / r["path"]) for r in rows]), [r["label"] for r in rows]

    x_train, y_train = load("train")
    x_test, y_test = load("test")
    mean, std = x_train.mean(0), x_train.std(0) + 1e-9
    z_train, z_test = (x_train - mean) / std, (x_test - mean) / std
    labels = sorted(set(y_train))
    centroids = np.stack([z_train[[y == lab for y in y_train]].mean(0) for lab in labels])
    predicted = [labels[i] for i in ((z_test[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)]
    accuracy = np.mean([p == y for p, y in zip(predicted, y_test)])
    assert accuracy >= 0.95, list(zip(y_test, predicted))


def test_ensure_demo_caches_and_regenerates_stale(tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_FLAMINGO_CACHE_ROOT", str(tmp_path))
    root = demo.ensure_demo()
    assert root == tmp_path / "datasets" / "demo"
    marker = root / "demo.json"
    mtime = marker.stat().st_mtime_ns
    assert demo.ensure_demo() == root and marker.stat().st_mtime_ns == mtime  # cached: untouched
    (root / "audio" / "train" / "rain_03.wav").unlink()  # a file lost: no longer complete
    assert not demo.is_complete(root, demo.DEMO_SEED)
    stale = json.loads(marker.read_text())
    stale["version"] = -1
    marker.write_text(json.dumps(stale))
    (root / "audio" / "test" / "bell_00.wav").unlink()
    demo.ensure_demo()
    assert (root / "audio" / "test" / "bell_00.wav").is_file() and (root / "audio" / "train" / "rain_03.wav").is_file()
    assert json.loads(marker.read_text())["version"] == demo.GENERATOR_VERSION
    assert not list(tmp_path.glob("datasets/demo.*"))  # no temporary folders left behind


def test_demo_files_pass_the_project_audio_checks(demo_dir):
    from rag_flamingo.audio import check_usable, load_audio

    for split in demo.SPLIT_SIZES:
        for row in read_manifest(demo_dir / f"{split}.jsonl"):
            wave = load_audio(demo_dir / row["path"], 44100)
            check_usable(wave, 44100, row["path"], min_seconds=1.0)
            assert 0.25 < float(np.abs(wave).max()) < 0.95  # the level varies, never clips

"""Encoder runtimes and precisions (`rag_flamingo.encoders.runtime`): parity of every path with torch
fp32, the exported graph's cache, the torch mel frontend against librosa's frames, and neighbour
equality between a store's embeddings and queries embedded the other way.

The real aisfx classes at a tiny width (4 base channels) with random weights, saved in the released
checkpoint format; real audio: CPython's plucked-string test recording arranged into clips.
"""

from __future__ import annotations

import logging
from pathlib import Path

import faiss
import librosa
import numpy as np
import pytest
import torch

from rag_flamingo.encoders import runtime as rt
from rag_flamingo.encoders.aisfx import AisfxConfig, AisfxEncoder, AisfxFrontend, AisfxModel
from rag_flamingo.errors import ConfigError
from rag_flamingo.store.records import comparable_fingerprint
from support.openvino_child import in_child, run_child_tests

TINY = AisfxConfig(base_channels=16, dim=128)  # a quarter of the released width
PLUCK = Path(__file__).parent / "fixtures" / "pluck-pcm16.wav"


def save_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A random tiny aisfx in the wheel's format: (state_dict, ds_dict) with two heads. Its batch-norm
    statistics are those of real clips (as trained weights have): without them every clip embeds
    to nearly the same vector (cos > 0.99999 between any two) and no precision test could fail."""
    torch.manual_seed(seed)
    model = AisfxModel(TINY, [3, 5])
    frontend = AisfxFrontend(TINY)
    blocks = torch.from_numpy(np.concatenate([frontend(w) for w in clips(12, first=1000 + seed)]))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # the plain average over the calibration batch
    with torch.no_grad():
        model.train()(blocks)
    torch.save((model.eval().state_dict(), {"a": (0, 3), "b": (1, 5)}), path)
    return path


def clips(n: int, first: int = 0, longest: float = 9.0) -> list[np.ndarray]:
    """Real-recording clips of 1.5-``longest`` s (short ones pad to one block, long ones span several): the
    pluck at several speeds (pitches), offsets and gains, over a little noise."""
    from rag_flamingo.audio import load_audio

    pluck = load_audio(PLUCK, 44100)
    out = []
    for i in range(n):
        rng = np.random.default_rng(first + i)
        speed = rng.uniform(0.5, 2.0)
        note = np.interp(np.arange(0, pluck.size - 1, speed), np.arange(pluck.size), pluck)
        wave = 0.01 * rng.standard_normal(int((1.5 + (longest - 1.5) * i / max(n - 1, 1)) * 44100))
        for _ in range(int(rng.integers(1, 8))):
            at = int(rng.integers(0, max(wave.size - note.size, 1)))
            part = note[: wave.size - at]
            wave[at : at + part.size] += rng.uniform(0.2, 1.0) * part
        out.append((wave / np.abs(wave).max() * 0.8).astype(np.float32))
    return out


def tiny(tmp_path: Path, **options) -> AisfxEncoder:
    ckpt = tmp_path / "ckpt" / "checkpoint.pth"
    if not ckpt.is_file():
        ckpt.parent.mkdir(exist_ok=True)
        save_tiny_checkpoint(ckpt)
    return AisfxEncoder(checkpoint=ckpt, device="cpu", max_blocks=8, config=TINY, **options)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# ----------------------------------------------------------------------------- frontend


@pytest.mark.parametrize("samples", [1, 100, 3000, 44100 * 3 + 17])
def test_torch_frontend_frames_equal_librosa(samples):
    frontend = AisfxFrontend(AisfxConfig())
    wave = np.resize(librosa.load(PLUCK, sr=44100)[0], samples).astype(np.float32)
    want = frontend.librosa_log_mel(wave)  # librosa.feature.melspectrogram, the package's settings
    got = frontend.log_mel(wave)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)  # float32 FFT rounding


# ----------------------------------------------------------------------------- options


def test_runtime_and_precision_are_checked_and_auto_follows_the_cpu(monkeypatch):
    cpu = torch.device("cpu")
    with pytest.raises(ConfigError, match="runtime='onnx' is not known; use one of auto, torch, openvino"):
        rt.resolve("onnx", "auto", cpu)
    with pytest.raises(ConfigError, match="did you mean 'bf16'"):
        rt.resolve("torch", "bf61", cpu)
    with pytest.raises(ConfigError, match="fp16 is for CUDA"):
        rt.resolve("torch", "fp16", cpu)
    for native, want in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(rt, "cpu_native_bf16", lambda native=native: native)
        assert rt.resolve("torch", "auto", cpu) == ("torch", want)
    assert rt.resolve("torch", "bf16", cpu) == ("torch", torch.bfloat16)  # asked for: emulated if need be
    monkeypatch.setattr(rt, "openvino_available", lambda: False)
    assert rt.resolve("auto", "fp32", cpu) == ("torch", torch.float32)
    with pytest.raises(ConfigError, match=r"OpenVINO is not installed \(pip install 'rag-flamingo\[fast\]'\)"):
        rt.resolve("openvino", "fp32", cpu)
    monkeypatch.setattr(rt, "openvino_available", lambda: True)
    monkeypatch.setattr(rt, "openvino_bf16", lambda: True)
    assert rt.resolve("auto", "auto", cpu) == ("torch", torch.float32)  # openvino only when asked for
    assert rt.resolve("auto", "bf16", cpu) == ("torch", torch.bfloat16)
    with pytest.raises(ConfigError, match="needs a CPU that computes bf16"):
        rt.resolve("openvino", "bf16", cpu)
    monkeypatch.setattr(rt, "cpu_native_bf16", lambda: True)
    assert rt.resolve("auto", "auto", cpu) == ("torch", torch.bfloat16)
    assert rt.resolve("openvino", "auto", cpu) == ("openvino", torch.bfloat16)
    monkeypatch.setattr(rt, "openvino_bf16", lambda: False)  # the runtime's own query says no
    assert rt.resolve("openvino", "auto", cpu) == ("openvino", torch.float32)


# ----------------------------------------------------------------------------- parity


def test_openvino_tests_run_in_their_own_process():
    run_child_tests(__file__, 3)


def test_bf16_matches_fp32_on_real_recordings(tmp_path):
    waves = clips(8)
    fp32 = tiny(tmp_path, runtime="torch", precision="fp32").embed(waves)
    assert (fp32 @ fp32.T).min() < 0.9  # distinct clips embed apart: the check below can fail
    bf16 = tiny(tmp_path, runtime="torch", precision="bf16")
    assert bf16.fingerprint()["dtype"] == "bfloat16"
    assert cosines(fp32, bf16.embed(waves)).min() >= 0.9999


@in_child
def test_child_openvino_matches_torch_and_reuses_its_cached_graph(tmp_path, monkeypatch, caplog):
    waves = clips(4)
    ref = tiny(tmp_path, runtime="torch", precision="fp32")
    ov = tiny(tmp_path, runtime="openvino", precision="fp32")
    got, want = ov.embed(waves), ref.embed(waves)
    assert cosines(got, want).min() >= 0.9999 and np.abs(got - want).max() <= 1e-4
    assert ov.fingerprint()["runtime"] == "openvino" and ref.fingerprint()["runtime"] == "torch"
    graph = ov.net.path
    assert graph.parent == ref.checkpoint.parent / "checkpoint.pth.graphs" and graph.is_file()
    assert ov.fingerprint()["checkpoint_sha256"][:16] in graph.name and rt.openvino_version() in graph.name
    stamp = graph.stat().st_mtime_ns

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    import openvino

    with monkeypatch.context() as m:  # the same checkpoint and runtime: read back, not converted
        m.setattr(openvino, "convert_model", no_conversion)
        again = tiny(tmp_path, runtime="openvino", precision="fp32")
    assert again.net.path == graph and graph.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.embed(waves), got)
    # another runtime version: another graph
    monkeypatch.setattr(rt, "openvino_version", lambda: "9999.0.0")
    assert tiny(tmp_path, runtime="openvino", precision="fp32").net.path.name.endswith("openvino9999.0.0.xml")
    monkeypatch.undo()
    # another checkpoint at the same path: another graph, with its own weights
    save_tiny_checkpoint(ref.checkpoint, seed=1)
    changed = tiny(tmp_path, runtime="openvino", precision="fp32")
    assert changed.net.path != graph
    np.testing.assert_allclose(changed.embed(waves), tiny(tmp_path, runtime="torch").embed(waves), atol=1e-4)
    # a damaged cached graph is converted again, with a warning
    changed.net.path.write_text("<not xml")
    with caplog.at_level(logging.WARNING, logger="rag_flamingo.encoders.runtime"):
        repaired = tiny(tmp_path, runtime="openvino", precision="fp32")
    assert "converting the network again" in caplog.text
    np.testing.assert_allclose(repaired.embed(waves), changed.embed(waves), atol=1e-6)
    # weights overwritten in place, the file's size kept: the digests catch it (OpenVINO would read it)
    weights = repaired.net.path.with_suffix(".bin")
    data = bytearray(weights.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    weights.write_bytes(bytes(data))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rag_flamingo.encoders.runtime"):
        rebuilt = tiny(tmp_path, runtime="openvino", precision="fp32")
    assert "does not match the digests written with it" in caplog.text
    np.testing.assert_allclose(rebuilt.embed(waves), changed.embed(waves), atol=1e-6)


@in_child
def test_child_the_graph_cache_survives_damaged_digests_and_folders_it_cannot_write(tmp_path, monkeypatch, caplog):
    """An empty digests file: converted again (warned), not a traceback. A whole graph beside the
    checkpoint is read even when that folder cannot be written; with no writable folder at all a new
    graph runs uncached (warned)."""
    import openvino

    waves = clips(2)
    first = tiny(tmp_path, runtime="openvino", precision="fp32")
    want = first.embed(waves)
    first.net.path.with_suffix(".sha256.json").write_text("")
    with caplog.at_level(logging.WARNING, logger="rag_flamingo.encoders.runtime"):
        again = tiny(tmp_path, runtime="openvino", precision="fp32")
    assert "does not match the digests written with it" in caplog.text
    np.testing.assert_allclose(again.embed(waves), want, atol=1e-6)
    graph = again.net.path
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    monkeypatch.setenv("RAG_FLAMINGO_CACHE_ROOT", str(blocked / "cache"))  # under a file: cannot be made
    monkeypatch.setattr(rt, "_writable", lambda folder: False)  # root may write anywhere: say it may not
    with monkeypatch.context() as m:  # the cached graph is read, though its folder cannot be written
        m.setattr(openvino, "convert_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("converted")))
        assert tiny(tmp_path, runtime="openvino", precision="fp32").net.path == graph
    for name in (graph, graph.with_suffix(".bin")):
        name.unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rag_flamingo.encoders.runtime"):
        uncached = tiny(tmp_path, runtime="openvino", precision="fp32")
    assert "not cached" in caplog.text and not graph.exists()
    np.testing.assert_allclose(uncached.embed(waves), want, atol=1e-6)


@in_child
def test_child_a_store_built_one_way_answers_queries_embedded_the_other_way(tmp_path):
    """Neighbour equality between runtimes: items embedded one way (torch or openvino, fp32),
    queries embedded either way find the same top-10 items for >= 99 % of queries; the
    fingerprints are accepted as the same encoder."""
    waves, questions = clips(100, longest=4.0), clips(100, first=100, longest=4.0)
    base = tiny(tmp_path, runtime="torch", precision="fp32")
    other = tiny(tmp_path, runtime="openvino", precision="fp32")
    assert comparable_fingerprint(base.fingerprint()) == comparable_fingerprint(other.fingerprint())
    items = {"torch fp32": base.embed(waves), "other": other.embed(waves)}
    queries = {"torch fp32": base.embed(questions), "other": other.embed(questions)}
    for built in items.values():
        index = faiss.IndexFlatIP(built.shape[1])
        index.add(built)
        _, want = index.search(queries["torch fp32"], 10)
        _, got = index.search(queries["other"], 10)
        assert np.mean([set(g) == set(w) for g, w in zip(got, want)]) >= 0.99


def test_build_encoder_refuses_an_unknown_runtime_before_loading():
    from rag_flamingo.encoders import build_encoder

    with pytest.raises(ConfigError, match="runtime='onnx'"):
        build_encoder("aisfx", device="cpu", runtime="onnx")


def test_a_bf16_store_is_queried_in_bf16_and_another_precision_refused(tmp_path, monkeypatch):
    """bf16 moves some top-10 neighbours (here on a tiny model: 10 % of queries), so a store records
    bf16 and is queried in it: ``precision=auto`` follows the store, an explicit fp32 is refused."""
    from rag_flamingo import components
    from rag_flamingo.encoders import runtime
    from rag_flamingo.errors import StoreError
    from rag_flamingo.store.records import StoreInfo

    ckpt = tiny(tmp_path).checkpoint
    built = tiny(tmp_path, runtime="torch", precision="bf16").fingerprint()

    class Built:  # what check_encoder and follow_store_precision read of a store: its store.json
        root = tmp_path / "store"
        info = StoreInfo(encoder=built, dim=128, count=0)
        check_encoder = components.IndexStore.check_encoder

    store = Built()
    options = {"name": "aisfx", "checkpoint": str(ckpt), "device": "cpu", "config": TINY, "max_blocks": 8}
    components.follow_store_precision(store, dict(options, precision="fp32"))  # explicit: left as asked
    with pytest.raises(StoreError, match=r"differs in: precision \(store 'bf16', query 'fp32'\)"):
        store.check_encoder(tiny(tmp_path, runtime="torch", precision="fp32").fingerprint())
    auto = dict(options, precision="auto")
    components.follow_store_precision(store, auto)
    assert auto["precision"] == "bf16"
    store.check_encoder(tiny(tmp_path, runtime="torch", precision="bf16").fingerprint())  # accepted
    # an fp32 store on a CPU with native bf16: auto stays fp32
    store.info = StoreInfo(encoder=tiny(tmp_path, runtime="torch", precision="fp32").fingerprint(), dim=128, count=0)
    monkeypatch.setattr(runtime, "cpu_native_bf16", lambda: True)
    monkeypatch.setattr("rag_flamingo.devices.cpu_native_bf16", lambda: True)
    auto = dict(options, precision="auto")
    components.follow_store_precision(store, auto)
    assert auto["precision"] == "fp32"

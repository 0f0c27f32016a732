"""aisfx encoder: strict checkpoint loading, parity with the aisfx package, batching, crop policy.

The parity oracle is the installed ``aisfx`` package itself (its CrossNet, librosa spectrogram,
normalisation and blocking) run on a real recording: ``fixtures/pluck-pcm16.wav`` is CPython's
test recording of a plucked string (Lib/test/audiodata, PSF licence), arranged into longer clips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from rag_flamingo.audio import load_audio
from rag_flamingo.encoders import build_encoder
from rag_flamingo.encoders.aisfx import AisfxConfig, AisfxEncoder, AisfxFrontend, load_checkpoint, load_model
from rag_flamingo.errors import CheckpointError

aisfx = pytest.importorskip("aisfx")
PLUCK = Path(__file__).parent / "fixtures" / "pluck-pcm16.wav"


@pytest.fixture(scope="module")
def encoder() -> AisfxEncoder:
    return build_encoder("aisfx", device="cpu", max_seconds=10.0)


def pluck_arrangement(seconds: float, sr: int, seed: int) -> np.ndarray:
    """The real pluck at random offsets and gains (a longer clip of real audio)."""
    pluck = load_audio(PLUCK, sr)
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * sr), np.float32)
    for _ in range(int(seconds * 4)):
        at = rng.integers(0, out.size - pluck.size)
        out[at : at + pluck.size] += rng.uniform(0.2, 1.0) * pluck
    return out / np.abs(out).max() * 0.8


def reference_embedding(path: Path) -> np.ndarray:
    """The aisfx package's own pipeline (librosa path), mean-pooled and L2-normalised."""
    from aisfx.models.cnn2d import CrossNet, EmbeddingNet
    from aisfx.preprocessing import blocking, compute_hopSize, spectrogram_normalize
    from aisfx.spectrogram.spectrogram_librosa import compute_spectrogram

    state, ds_dict = load_checkpoint(Path(aisfx.__file__).parent / "models" / "checkpoint.pth")
    model = CrossNet(EmbeddingNet("max", 3, 1, 64), ds_dict, "cpu")
    model.load_state_dict(state)
    model.eval()
    spec = compute_spectrogram(str(path), 44100.0, 2048, 1024, 96, 0.0, 22050.0).T  # helper returns [mels, T]
    spec = spectrogram_normalize(spec)
    blocks = blocking(spec, 100, compute_hopSize(100, 0.5, spec), True)
    with torch.no_grad():
        emb = model.get_embedding(torch.Tensor(blocks)).mean(0)
    return (emb / emb.norm()).numpy()


@pytest.mark.parametrize("seconds, sr, channels", [(4.0, 44100, 1), (7.3, 22050, 2)])
def test_parity_with_the_aisfx_package_on_real_audio(tmp_path, encoder, seconds, sr, channels):
    wave = pluck_arrangement(seconds, sr, seed=int(seconds))
    data = np.stack([wave, 0.5 * wave], axis=1) if channels == 2 else wave
    path = tmp_path / "pluck.wav"
    sf.write(path, data, sr, subtype="FLOAT")
    ours = encoder.embed([load_audio(path, encoder.sample_rate)])[0]
    ref = reference_embedding(path)
    assert np.abs(ours - ref).max() < 1e-4
    assert float(ours @ ref) > 0.99999


def test_checkpoint_loads_strictly_with_weights_only(tmp_path):
    state, ds = load_checkpoint(Path(aisfx.__file__).parent / "models" / "checkpoint.pth")
    assert len(ds) == 9 and state["embedding_net.conv_block4.conv2.weight"].shape == (512, 512, 3, 3)
    broken = dict(state)
    broken["embedding_net.extra.weight"] = torch.zeros(1)
    del broken["fc.0.0.bias"]
    torch.save((broken, ds), tmp_path / "broken.pth")
    with pytest.raises(
        CheckpointError, match=r"(?s)missing \(1\): fc.0.0.bias.*unexpected \(1\): embedding_net.extra.weight"
    ):
        load_model(tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a loadable"):
        load_model(tmp_path / "junk.pth")


def test_batches_of_different_lengths_equal_one_at_a_time(encoder):
    rng = np.random.default_rng(0)
    waves = [
        pluck_arrangement(5.0, 44100, 1),
        (0.1 * rng.standard_normal(3000)).astype(np.float32),
        pluck_arrangement(2.2, 44100, 2),
        (0.1 * rng.standard_normal(44100 * 12)).astype(np.float32),
    ]
    together = encoder.embed(waves)
    alone = np.concatenate([encoder.embed([w]) for w in waves])
    assert together.shape == (4, 512) and together.dtype == np.float32
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert encoder.embed([]).shape == (0, 512)


def test_block_embeddings_pool_to_the_clip_embedding(encoder):
    """``embed`` is the normalised mean of ``embed_blocks`` (what make_real_vectors' crops rely on)."""
    waves = [pluck_arrangement(6.0, 44100, 4), pluck_arrangement(2.0, 44100, 5)]
    blocks = encoder.embed_blocks(waves)
    assert [b.shape for b in blocks] == [(4, 512), (1, 512)]  # 6 s: 259 frames -> blocks at 0, 50, 100, 150
    pooled = np.stack([b.mean(0) / np.linalg.norm(b.mean(0)) for b in blocks])
    np.testing.assert_allclose(pooled, encoder.embed(waves), atol=1e-6)
    assert encoder.embed_blocks([]) == []


def test_short_clips_are_padded_to_one_block_and_long_clips_cropped(encoder):
    frontend = AisfxFrontend(AisfxConfig())
    short = frontend(np.ones(3000, np.float32) * 0.1)
    assert short.shape == (1, 100, 96) and (short[0, 10:] == 0).all()  # 3000 samples -> 3 frames
    assert frontend(np.zeros(44100 * 5, np.float32)).shape[0] == 3  # 216 frames -> blocks at 0, 50, 100
    long = pluck_arrangement(14.0, 44100, 3)
    np.testing.assert_allclose(encoder.embed([long]), encoder.embed([long[: 10 * 44100]]), atol=1e-6)
    assert encoder.max_seconds == 10.0


def test_fingerprint_names_checkpoint_and_crop(encoder):
    fp = encoder.fingerprint()
    assert fp["name"] == "aisfx" and len(fp["checkpoint_sha256"]) == 64
    assert fp["max_seconds"] == 10.0 and fp["crop"] == "first 10.0 s" and fp["normalized"] is True
    other = AisfxEncoder(max_seconds=5.0, device="cpu").fingerprint()
    assert other["checkpoint_sha256"] == fp["checkpoint_sha256"] and other["max_seconds"] != fp["max_seconds"]

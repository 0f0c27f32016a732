"""clapcap (Audio Flamingo 1's audio encoder) vs the reference pipeline: AF1 windowing and
normalisation re-implemented from AF1's foundation/data/data.py (oracles.msclap), fed through the original msclap
``ClapCaptionModel.clap`` (test-only oracle) with random weights saved in the released format."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from oracles.msclap import (
    build_msclap_clap,
    import_msclap,
    make_text_tower_dir,
    randomize_,
    reference_af1_clips,
    require_msclap,
)
from rag_flamingo.audio import load_audio
from rag_flamingo.encoders.clapcap import ClapcapEncoder
from rag_flamingo.encoders.windows import AF1_WINDOWS
from rag_flamingo.errors import CheckpointError
from support.signals import assert_close, write_wave

SR = 44100


# ---------------------------------------------------------------- window scheme


@pytest.mark.parametrize("seconds,expected", [(2.0, 1), (7.0, 1), (10.0, 3), (30.0, 15), (33.25, 16), (60.0, 16)])
def test_window_counts_match_spec(seconds, expected):
    assert AF1_WINDOWS.num_windows(int(round(seconds * SR))) == expected


def test_window_split_layout():
    assert AF1_WINDOWS.max_samples == 1_466_325 and AF1_WINDOWS.hop == 77_175
    assert AF1_WINDOWS.num_windows(308_701) == 2
    wave = np.arange(10 * SR, dtype=np.float32)
    clips = AF1_WINDOWS.split(wave)
    assert clips.shape == (3, 308_700)
    assert clips[1, 0] == 77_175 and clips[2, 0] == 2 * 77_175
    assert clips[2, -1] == 0.0 and clips[2, 10 * SR - 2 * 77_175 - 1] == 10 * SR - 1  # zero-padded tail
    assert AF1_WINDOWS.split(np.ones(40 * SR, np.float32)).shape == (16, 308_700)


# ---------------------------------------------------------------- oracle parity


@pytest.fixture(scope="module")
def clapcap(tmp_path_factory):
    require_msclap()
    msclap = import_msclap()
    d = tmp_path_factory.mktemp("clapcap")
    text_dir = make_text_tower_dir(d, "gpt2")
    clap = build_msclap_clap("clapcap", text_dir)
    oracle = msclap.models.mapper.ClapCaptionModel(
        clap, str(text_dir), 40, 40, 1024, 8, True, "transformer", True, True
    )
    randomize_(oracle, seed=11).eval()
    ckpt = d / "clapcap_weights_2023.pth"
    torch.save({"model": oracle.state_dict()}, ckpt)
    return oracle, ckpt, ClapcapEncoder(checkpoint=str(ckpt), batch_size=2, device="cpu")


@pytest.fixture(scope="module")
def own_clapcap(tmp_path_factory):
    """Our own clapcap audio model with random weights in the released layout (no oracle needed)."""
    from rag_flamingo.encoders.clapcap import ClapcapAudioModel

    ckpt = tmp_path_factory.mktemp("own_clapcap") / "clapcap_weights_2023.pth"
    torch.save({"model": randomize_(ClapcapAudioModel(), seed=5).state_dict()}, ckpt)
    return ClapcapEncoder(checkpoint=str(ckpt), batch_size=2, device="cpu")


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("clapcap_audio")
    files = [write_wave(d / "a.wav", 2.0, seed=1), write_wave(d / "b.wav", 10.0, sr=48000, seed=2)]
    t = np.arange(5 * SR) / SR
    sf.write(str(d / "positive.wav"), (0.3 + 0.2 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), SR)
    return files + [d / "positive.wav"]


def test_window_features_match_reference_pipeline(clapcap, clip_files):
    oracle, _, ours = clapcap
    waves = [load_audio(p, SR) for p in clip_files]
    features, mask = ours.window_features(waves)
    assert features.shape == (3, 16, 1024) and mask.shape == (3, 16)
    assert features.dtype == torch.float32 and mask.dtype == torch.float32
    with torch.no_grad():
        zero_ref = oracle.clap(torch.zeros(1, 308_700))[0][0]  # every unused window is this clip
    for i, wave in enumerate(waves):
        clips, ref_mask = reference_af1_clips(wave)
        n = int(ref_mask.sum())
        assert not clips[n:].any()
        with torch.no_grad():
            ref = torch.cat([oracle.clap(torch.from_numpy(clips[:n]))[0], zero_ref.expand(16 - n, -1)])
        assert np.array_equal(mask[i].numpy(), ref_mask), clip_files[i]
        assert_close(features[i], ref, f"clapcap {clip_files[i].name}")  # padded windows included
    assert mask.sum(1).tolist() == [1, 3, 1]


def test_preprocessing_matches_reference_for_long_audio(own_clapcap, tmp_path):
    """40 s at 48 kHz: the 33.25 s cap and 16 windows (network parity is covered above)."""
    ours = own_clapcap
    wave = load_audio(write_wave(tmp_path / "long.wav", 40.0, sr=48000, seed=3), SR)
    clips, mask = reference_af1_clips(wave)
    assert mask.sum() == 16
    np.testing.assert_array_equal(ours.preprocess(wave), clips)
    t = np.arange(12 * SR) / SR
    positive = (0.3 + 0.2 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    clips, mask = reference_af1_clips(positive)
    np.testing.assert_array_equal(ours.preprocess(positive), clips[: int(mask.sum())])


def test_deterministic_and_batch_independent(own_clapcap, clip_files):
    ours = own_clapcap
    waves = [load_audio(p, SR) for p in clip_files[:2]]
    alone, _ = ours.window_features([waves[1]])  # micro-batches [b0, b1], [b2, pad]
    mixed, _ = ours.window_features([waves[0], waves[1]])  # [a0, b0], [b1, b2]
    assert torch.equal(alone[0], mixed[1])
    emb = ours.embed([waves[1]])  # a third run of the same clip, through the retrieval pooling
    unit = torch.nn.functional.normalize(alone[0, :3], dim=-1).mean(0)
    assert np.allclose(emb[0], torch.nn.functional.normalize(unit, dim=0).numpy(), atol=1e-6)
    fp = ours.fingerprint()
    assert fp["windows"]["max_windows"] == 16 and "mean" in fp["pooling"]


def test_clapcap_keys_are_checked(clapcap, tmp_path):
    oracle, _, _ = clapcap
    sd = dict(oracle.state_dict())
    sd["gpt.transformer.h.0.attn.masked_bias"] = torch.tensor(-1e4)  # saved by old transformers: known unused
    ok = tmp_path / "ok.pth"
    torch.save({"model": sd}, ok)
    ClapcapEncoder(checkpoint=str(ok), device="cpu")
    sd["gpt.transformer.h.0.attn.rotary.weight"] = torch.zeros(2)  # not part of the captioner layout
    sd.pop("clap.projection.layer_norm.weight")
    bad = tmp_path / "bad.pth"
    torch.save({"model": sd}, bad)
    with pytest.raises(CheckpointError) as err:
        ClapcapEncoder(checkpoint=str(bad), device="cpu")
    assert "clap.projection.layer_norm.weight" in str(err.value)
    assert "gpt.transformer.h.0.attn.rotary.weight" in str(err.value)

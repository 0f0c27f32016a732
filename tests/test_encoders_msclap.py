"""MS-CLAP 2022/2023 and clapcap encoders vs the original msclap package (test-only oracle).

The oracle models are built at their real architecture with random weights (text towers: one-layer
GPT-2/BERT of the real classes, hidden 768, saved in a local dir), saved in the released format
``{'model': state_dict}``, loaded by our encoders strictly, and compared on real audio files.
"""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from oracles.msclap import build_msclap_clap, make_text_tower_dir, msclap_wrapper, randomize_, require_msclap
from rag_flamingo.audio import load_audio, torchaudio_length
from rag_flamingo.encoders import available_encoders, build_encoder
from rag_flamingo.encoders.clapcap import ClapcapEncoder
from rag_flamingo.encoders.ms_clap import MSCLAP_2022, MSCLAP_2023, MSClapEncoder, crop_starts
from rag_flamingo.errors import CheckpointError, ConfigError
from support.signals import SR, assert_close, write_wave

TEXTS = ["a dog barks loudly in the park", "rain on a roof", "birds sing while a car passes by"]


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    return {
        "short": write_wave(d / "short.wav", 2.3, seed=1),
        "exact": write_wave(d / "exact.wav", 7.0, seed=2),
        "long": write_wave(d / "long.wav", 10.3, seed=3),
        "resampled": write_wave(d / "resampled.wav", 4.1, sr=48000, seed=4),
        "five": write_wave(d / "five.wav", 5.0, seed=5),
    }


def _oracle_checkpoint(tmp_path_factory, version: str):
    require_msclap()
    d = tmp_path_factory.mktemp(f"msclap_{version}")
    text_dir = make_text_tower_dir(d, "gpt2" if version in ("2023", "clapcap") else "bert")
    oracle = randomize_(build_msclap_clap("2023" if version == "clapcap" else version, text_dir), seed=7)
    return d, text_dir, oracle


def _released(tmp_path_factory, version: str, config):
    """(oracle, msclap wrapper, our encoder, checkpoint, text dir) for a released-format checkpoint."""
    d, text_dir, oracle = _oracle_checkpoint(tmp_path_factory, version)
    ckpt = d / f"CLAP_weights_{version}.pth"
    torch.save({"model": oracle.state_dict()}, ckpt)
    ours = MSClapEncoder(config, checkpoint=str(ckpt), text_model=str(text_dir), batch_size=1, device="cpu")
    return oracle, msclap_wrapper(oracle, version, text_dir), ours, ckpt, text_dir


@pytest.fixture(scope="module")
def msclap_2023(tmp_path_factory):
    return _released(tmp_path_factory, "2023", MSCLAP_2023)


@pytest.fixture(scope="module")
def msclap_2022(tmp_path_factory):
    return _released(tmp_path_factory, "2022", MSCLAP_2022)


@pytest.fixture(scope="module")
def own_2023(tmp_path_factory):
    """A 2023-layout checkpoint written from our own model (random weights): the tests that do not
    compare with the original run without the oracle installed."""
    from transformers import AutoConfig

    from rag_flamingo.encoders.ms_clap import MSClapModel

    d = tmp_path_factory.mktemp("own_2023")
    text_dir = make_text_tower_dir(d, "gpt2")
    model = randomize_(MSClapModel(MSCLAP_2023, AutoConfig.from_pretrained(text_dir)), seed=3)
    ckpt = d / "CLAP_weights_2023.pth"
    torch.save({"model": model.state_dict()}, ckpt)
    return ckpt, text_dir


def _oracle_file_embedding(wrapper, path, monkeypatch, ours: MSClapEncoder) -> torch.Tensor:
    """The original file API; for a long file, one call per crop of our policy (random.randrange
    pinned to each start), combined as our policy documents."""
    wave = load_audio(path, SR)
    length = ours.config.clip_samples
    if wave.shape[0] <= length:
        return wrapper.get_audio_embeddings([str(path)])[0]
    units = []
    for start in crop_starts(wave.shape[0], length, "mean"):
        monkeypatch.setattr(random, "randrange", lambda n, s=start: s)
        units.append(torch.nn.functional.normalize(wrapper.get_audio_embeddings([str(path)])[0], dim=-1))
    return torch.nn.functional.normalize(torch.stack(units).mean(0), dim=-1)


PARITY_FILES = {"msclap_2023": ("short", "exact", "resampled", "long"), "msclap_2022": ("five", "resampled", "long")}


@pytest.mark.parametrize("fixture", ["msclap_2023", "msclap_2022"])
def test_audio_parity_with_original_file_api(fixture, request, audio_files, monkeypatch):
    oracle, wrapper, ours, _, _ = request.getfixturevalue(fixture)
    longer = 0
    for key in PARITY_FILES[fixture]:
        wave = load_audio(audio_files[key], SR)
        ref = _oracle_file_embedding(wrapper, audio_files[key], monkeypatch, ours)
        if wave.shape[0] <= ours.config.clip_samples:  # one (repeat-padded) clip: the raw projection
            got = ours.audio_projections([wave])[0]
        else:  # several crops: our documented pooling
            longer += 1
            got = torch.from_numpy(ours.embed([wave])[0])
        assert_close(got, ref, f"{fixture} {key}")
    assert longer >= 1


def test_short_files_decode_like_the_original(msclap_2023, tmp_path):
    """Clips under 7 s are tiled, so the decode length shifts every tile: files decoded by the index
    builder's reader (the encoder's rule: torchaudio's resampled length) give the original file API's
    tiled input (0.5-4.9 s at 48, 22.05 and 44.1 kHz; at 48 kHz 7 extra samples make soxr's own
    length one short) and, for one of them, its embedding. Mono only: for a multi-channel file the
    original concatenates the channels (we average them)."""
    from rag_flamingo.indexing.reader import decode_item, decode_spec

    _, wrapper, ours, _, _ = msclap_2023
    spec = decode_spec(ours)
    assert spec.length_rule == "torchaudio"
    paths, soxr_short = [], 0
    for i, (seconds, sr) in enumerate((s, sr) for sr in (48000, 22050, SR) for s in (0.5, 1.3, 2.7, 4.9)):
        extra = 7 if sr == 48000 else 0
        paths.append(write_wave(tmp_path / f"clip{i}.wav", seconds + extra / sr, sr=sr, seed=20 + i))
        soxr_short += load_audio(paths[-1], SR).shape[0] < torchaudio_length(sf.info(str(paths[-1])).frames, sr, SR)
    assert soxr_short == 4
    waves = [decode_item({"path": p.name}, tmp_path, spec) for p in paths]
    ref_inputs = wrapper.preprocess_audio([str(p) for p in paths], resample=True)[:, 0].numpy()
    np.testing.assert_array_equal(np.stack([ours.crops(w)[0] for w in waves]), ref_inputs)
    ref = wrapper.get_audio_embeddings([str(paths[1])])  # 1.3 s at 48 kHz
    assert_close(ours.audio_projections([waves[1]]), ref, "short file")


@pytest.mark.parametrize("fixture", ["msclap_2023", "msclap_2022"])
def test_text_parity_with_original(fixture, request):
    oracle, wrapper, ours, _, _ = request.getfixturevalue(fixture)
    with torch.no_grad():
        ref = wrapper.get_text_embeddings(TEXTS)
    assert_close(ours.text_projections(TEXTS), ref, f"{fixture} text")
    emb = ours.embed_text(TEXTS)
    assert emb.dtype == np.float32 and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_bit_identical_across_runs_and_batch_composition(own_2023, audio_files):
    ckpt, text_dir = own_2023
    ours = MSClapEncoder(MSCLAP_2023, checkpoint=str(ckpt), text_model=str(text_dir), batch_size=2, device="cpu")
    waves = {k: load_audio(p, SR) for k, p in audio_files.items()}
    alone = ours.embed([waves["short"]])
    again = ours.embed([waves["short"]])
    mixed = ours.embed([waves["long"], waves["short"]])  # micro-batches: [long0, long1], [short, pad]
    shifted = ours.embed([waves["exact"], waves["short"]])  # [exact, short]: another position/partner
    assert np.array_equal(alone[0], again[0])
    assert np.array_equal(alone[0], mixed[1])
    assert np.array_equal(alone[0], shifted[1])
    t_alone = ours.embed_text(TEXTS[:1])
    t_mixed = ours.embed_text([TEXTS[2], TEXTS[1], TEXTS[0]])
    assert np.array_equal(t_alone[0], t_mixed[2])


def test_registry_and_fingerprint(own_2023):
    ckpt, text_dir = own_2023
    assert {"ms_clap_2022", "ms_clap_2023", "clapcap"} <= set(available_encoders())
    enc = build_encoder(
        "ms_clap_2023", checkpoint=str(ckpt), text_model=str(text_dir), with_text=False, long_audio="head", device="cpu"
    )
    fp = enc.fingerprint()
    assert fp["checkpoint_sha256"] and "first" in fp["long_audio"] and fp["dim"] == 1024
    assert fp != build_encoder("ms_clap_2023", checkpoint=str(ckpt), with_text=False, device="cpu").fingerprint()
    with pytest.raises(ConfigError, match="batch_size"):  # refused when built, not on the first embed
        build_encoder("ms_clap_2023", checkpoint=str(ckpt), with_text=False, batch_size=0, device="cpu")
    with pytest.raises(ConfigError, match="batch_size"):
        build_encoder("clapcap", checkpoint=str(ckpt), batch_size=-1, device="cpu")


def test_hydra_encoder_configs_build(own_2023, audio_files):
    from rag_flamingo.cli import compose_config

    ckpt, text_dir = own_2023
    options = dict(compose_config("build_index", ["encoder=ms_clap_2023"]).encoder)
    name = options.pop("name")
    options.update(checkpoint=str(ckpt), text_model=str(text_dir), max_seconds=8.0, device="cpu")
    enc = build_encoder(name, **options)
    assert enc.fingerprint()["max_seconds"] == 8.0
    wave = load_audio(audio_files["long"], SR)  # 10.3 s: only 8 s used -> crops at 0 s and 1 s
    crops = enc.crops(wave)
    assert len(crops) == 2 and np.array_equal(crops[1], wave[SR : 8 * SR])


def test_wrong_keys_are_listed(msclap_2023, tmp_path):
    oracle, _, _, _, text_dir = msclap_2023
    sd = dict(oracle.state_dict())
    sd.pop("audio_encoder.projection.linear2.weight")
    sd["audio_encoder.base.htsat.extra_head.weight"] = torch.zeros(3)
    sd["caption_encoder.base.h.0.attn.masked_bias"] = torch.tensor(-1e4)  # legacy buffer: accepted
    bad = tmp_path / "bad.pth"
    torch.save({"model": sd}, bad)
    with pytest.raises(CheckpointError) as err:
        MSClapEncoder(MSCLAP_2023, checkpoint=str(bad), text_model=str(text_dir), device="cpu")
    msg = str(err.value)
    assert "missing (1): audio_encoder.projection.linear2.weight" in msg
    assert "unexpected (1): audio_encoder.base.htsat.extra_head.weight" in msg
    # A 2022 file given to the 2023 encoder: shapes/keys differ, named in the message.
    with pytest.raises(CheckpointError, match="missing"):
        torch.save({"model": {k: v for k, v in sd.items() if "htsat" not in k}}, bad)
        MSClapEncoder(MSCLAP_2023, checkpoint=str(bad), with_text=False, device="cpu")


def test_hub_checkpoint_offline_fails_fast(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    t0 = time.monotonic()
    with pytest.raises(CheckpointError) as err:
        MSClapEncoder(MSCLAP_2023, checkpoint=None, with_text=False, device="cpu")
    assert time.monotonic() - t0 < 10
    assert "hf download microsoft/msclap CLAP_weights_2023.pth" in str(err.value)
    with pytest.raises(CheckpointError, match="clapcap_weights_2023.pth"):
        ClapcapEncoder(checkpoint=None, device="cpu")
    with pytest.raises(CheckpointError, match="file not found"):
        ClapcapEncoder(checkpoint=str(tmp_path / "nope.pth"), device="cpu")


def test_reduced_precision_autocast_path(own_2023, audio_files):
    """The mixed-precision path (fp16 on CUDA; here bf16 autocast on CPU): frontend in fp32, output
    float32 and close to the fp32 embedding."""
    ckpt, _ = own_2023
    ours = MSClapEncoder(MSCLAP_2023, checkpoint=str(ckpt), with_text=False, batch_size=1, device="cpu")
    half = MSClapEncoder(
        MSCLAP_2023, checkpoint=str(ckpt), with_text=False, batch_size=1, device="cpu", precision="bf16"
    )
    wave = load_audio(audio_files["short"], SR)
    got, ref = half.embed([wave]), ours.embed([wave])
    assert got.dtype == np.float32 and "bfloat16" in half.fingerprint()["precision"]
    assert float(got[0] @ ref[0]) > 0.99


def test_unreadable_checkpoint_is_a_checkpoint_error(tmp_path):
    from rag_flamingo.checkpoints import read_state_dict

    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        read_state_dict(tmp_path / "junk.pth")
    torch.save({"model": [1, 2, 3]}, tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a state dict"):
        read_state_dict(tmp_path / "list.pth")

"""rag_flamingo.audio: decoding of real files in every supported format, segments, rejection."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

import rag_flamingo.audio as audio
from rag_flamingo.audio import check_usable, int16_roundtrip, load_audio, peak_normalize
from rag_flamingo.errors import AudioError, ConfigError


def sine(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


@pytest.mark.parametrize(
    "ext, fmt, sr",
    [("wav", None, 16000), ("flac", None, 48000), ("ogg", "OGG", 22050), ("mp3", "MP3", 8000), ("mp3", "MP3", 44100)],
)
def test_formats_and_rates(tmp_path, ext, fmt, sr):
    path = tmp_path / f"x.{ext}"
    sf.write(path, sine(1.0, sr), sr, format=fmt)
    wave = load_audio(path, 44100)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(wave.size - 44100) <= 0.03 * 44100  # mp3 adds encoder delay/padding
    # the tone survives decoding + resampling: the spectral peak is at 440 Hz
    spectrum = np.abs(np.fft.rfft(wave[:32768] if wave.size >= 32768 else wave))
    assert abs(np.argmax(spectrum) * 44100 / (2 * (spectrum.size - 1)) - 440) < 10


def test_channels_are_averaged(tmp_path):
    left, right = sine(0.5, 16000, 300), sine(0.5, 16000, 300, amp=0.1)
    path = tmp_path / "six.wav"
    sf.write(path, np.stack([left, right, left, right, left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, 16000), (left + right) / 2, atol=1e-6)


def test_only_the_needed_segment_is_read(tmp_path, monkeypatch):
    sr = 8000
    path = tmp_path / "long.wav"
    with sf.SoundFile(path, "w", sr, 1, subtype="PCM_16") as f:
        for _ in range(60):  # 10 minutes
            f.write(sine(10.0, sr, 100, 0.01))
    seen = []
    real = audio.sf.read

    def spy(p, *args, **kwargs):
        seen.append((kwargs["start"], kwargs["stop"]))
        return real(p, *args, **kwargs)

    monkeypatch.setattr(audio.sf, "read", spy)
    assert load_audio(path, sr, max_seconds=2.0).size == 2 * sr
    assert load_audio(path, sr, start=30.0, end=31.5).size == int(1.5 * sr)
    assert load_audio(path, sr, start=100.0, max_seconds=1.0).size == sr
    assert seen == [(0, 2 * sr), (30 * sr, int(31.5 * sr)), (100 * sr, 101 * sr)]


def test_errors_name_the_file(tmp_path):
    with pytest.raises(AudioError, match="file not found"):
        load_audio(tmp_path / "absent.wav", 16000)
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="cannot decode") as err:
        load_audio(tmp_path / "empty.wav", 16000)
    assert err.value.path.endswith("empty.wav")
    (tmp_path / "junk.mp3").write_bytes(b"ID3" + bytes(range(256)) * 4)
    with pytest.raises(AudioError):
        load_audio(tmp_path / "junk.mp3", 16000)
    sf.write(tmp_path / "short.wav", sine(0.5, 16000), 16000)
    with pytest.raises(AudioError, match="empty segment"):
        load_audio(tmp_path / "short.wav", 16000, start=1.0)


def test_check_usable_rejects_short_and_silent():
    check_usable(sine(0.2, 16000), 16000, "ok.wav")
    with pytest.raises(AudioError, match="too short"):
        check_usable(sine(0.05, 16000), 16000, "short.wav")
    with pytest.raises(AudioError, match="silent"):
        check_usable(np.zeros(16000, np.float32), 16000, "silent.wav")


def test_peak_normalize_and_int16_roundtrip():
    x = np.array([0.0, 0.25, -0.5], np.float32)
    np.testing.assert_allclose(peak_normalize(x), [0.0, 0.5, -1.0])
    np.testing.assert_allclose(peak_normalize(np.array([0.0, 1.0, 2.0], np.float32)), [-1.0, 0.0, 1.0])
    assert (peak_normalize(np.zeros(3, np.float32)) == 0).all()
    y = int16_roundtrip(np.array([1.5, -0.3, 1e-6], np.float32))
    assert y[0] == 1.0 and abs(y[1] + 0.3) < 1 / 32767 and y[2] == 0.0


# -- decode length rules ---------------------------------------------------------------------------------

RATES = [(44100, 48000), (22050, 48000), (48000, 44100), (22050, 44100), (16000, 44100), (32000, 48000)]


def _lengths(rates, extra=()):
    """Clip lengths in samples: 0.5-4.9 s, their neighbours, and the float-rounding cases."""
    for sr_in, sr_out in rates:
        base = [int(s * sr_in) for s in (0.5, 1.3, 2.7, 4.9)]
        yield from ((n + d, sr_in, sr_out) for n in base for d in (-1, 0, 1))
        yield from ((n, sr_in, sr_out) for n in extra)


def test_librosa_length_is_librosa_resample_output_length():
    import librosa

    differs = 0
    for n, sr_in, sr_out in _lengths(RATES, extra=(1, 147, 294, 441, 123457)):
        got = librosa.resample(np.zeros(n, np.float32), orig_sr=sr_in, target_sr=sr_out, res_type="soxr_hq")
        assert audio.librosa_length(n, sr_in, sr_out) == got.shape[0], (n, sr_in, sr_out)
        differs += got.shape[0] != -(-n * sr_out // sr_in)  # float ratio vs exact rational ceil
    assert differs  # 1.3 s at 44.1 kHz: 62401, where the exact ceil is 62400
    assert audio.librosa_length(57330, 44100, 48000) == 62401


def test_torchaudio_length_is_torchaudios_expression():
    """torchaudio is not installable beside CPU torch here (see the dependency notes), so the rule is
    checked against the expression of ``torchaudio.functional._apply_sinc_resample_kernel`` evaluated
    with torch itself: gcd-reduced rates, ``torch.ceil(torch.as_tensor(new * length / orig))``."""
    import math

    import torch

    def torchaudio_expr(n, sr_in, sr_out):
        g = math.gcd(sr_in, sr_out)
        return int(torch.ceil(torch.as_tensor((sr_out // g) * n / (sr_in // g))).long())

    rounded_down = 0
    for n, sr_in, sr_out in _lengths(RATES, extra=(1, 2, 1000019, 1000030, 1000012, 2**22 + 5)):
        assert audio.torchaudio_length(n, sr_in, sr_out) == torchaudio_expr(n, sr_in, sr_out), (n, sr_in, sr_out)
        rounded_down += audio.torchaudio_length(n, sr_in, sr_out) < -(-n * sr_out // sr_in)
    assert rounded_down  # float32 quotient: 1000019 samples at 44.1 kHz -> 1088456, not 1088457


def test_soxr_rule_keeps_soxrs_length_and_rules_differ_from_it(tmp_path):
    sf.write(tmp_path / "a.wav", sine(1.3, 44100), 44100, subtype="FLOAT")
    wave = np.random.default_rng(0).standard_normal(57330).astype(np.float32)
    assert load_audio(tmp_path / "a.wav", 48000).shape[0] == audio.soxr.resample(wave, 44100, 48000, "HQ").shape[0]
    assert load_audio(tmp_path / "a.wav", 48000).shape[0] == 62400
    longer = load_audio(tmp_path / "a.wav", 48000, length_rule="librosa")
    assert longer.shape[0] == 62401 and longer[-1] == 0.0  # zero-padded
    np.testing.assert_array_equal(longer[:-1], load_audio(tmp_path / "a.wav", 48000))
    same_rate = load_audio(tmp_path / "a.wav", 44100, length_rule="torchaudio")
    assert same_rate.shape[0] == 57330  # no resampling: no rule applies


@pytest.mark.parametrize("sr", [44100, 22050, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_librosa_rule_decodes_like_librosa_load(tmp_path, sr, channels):
    """librosa.load (LAION-CLAP's file decoder: soxr_hq, channel mean, fix_length) bit for bit."""
    import librosa

    rng = np.random.default_rng(sr + channels)
    for seconds in (0.5, 1.3, 2.7, 4.9):
        data = (0.3 * rng.standard_normal((int(seconds * sr), channels))).astype(np.float32)
        path = tmp_path / f"{seconds}.wav"
        sf.write(path, data, sr, subtype="FLOAT")
        ref, _ = librosa.load(path, sr=48000)
        np.testing.assert_array_equal(load_audio(path, 48000, length_rule="librosa"), ref)


def test_decode_rule_and_unknown_rules():
    class Plain:
        sample_rate = 48000

    class Librosa(Plain):
        decode_length = "librosa"

    class Typo(Plain):
        decode_length = "librossa"

    assert audio.decode_rule(Plain()) == "soxr" and audio.decode_rule(Librosa()) == "librosa"
    with pytest.raises(ConfigError, match="librossa"):
        audio.decode_rule(Typo())
    with pytest.raises(ConfigError, match="unknown decode length rule"):
        audio.resample(np.zeros(10, np.float32), 16000, 48000, length_rule="ceil")

"""rag_flamingo.audio: decoding of real files in every supported format, segments, rejection."""

from __future__ import annotations


import numpy as np
import pytest
import soundfile as sf

import rag_flamingo.audio as audio
from rag_flamingo.audio import check_usable, int16_roundtrip, load_audio, peak_normalize
from rag_flamingo.errors import AudioError


def sine(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


@pytest.mark.parametrize("ext, fmt, sr", [("wav", None, 16000), ("flac", None, 48000), ("ogg", "OGG", 22050),
                                          ("mp3", "MP3", 8000), ("mp3", "MP3", 44100)])
def test_formats_and_rates(tmp_path, ext, fmt, sr):
    path = tmp_path / f"x.{ext}"
    sf.write(path, sine(1.0, sr), sr, format=fmt)
    wave = load_audio(path, 44100)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(wave.size - 44100) <= 0.03 * 44100  # mp3 adds encoder delay/padding
    # the tone survives decoding + resampling: the spectral peak is at 440 Hz
    spectrum = np.abs(np.fft.rfft(wave[: 32768] if wave.size >= 32768 else wave))
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

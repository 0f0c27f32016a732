"""Audio decoding: the one place that turns a file into a mono float32 waveform.

Policy (deterministic, documented; differs from the reference where the reference is wrong):
- any format libsndfile reads (wav, flac, ogg, mp3, ...), any rate, any channel count;
- only the requested segment [start, end) (or the first ``max_seconds``) is read from disk, so a
  1-hour file costs no more than the part we use;
- channels are averaged (the reference keeps channel 0 for wav but averages for mp3);
- resampled with soxr (HQ), which is deterministic.
Encoder-specific steps (peak normalisation, int16 round-trip, crops, windows) live with the
encoders; the shared numeric helpers for them are here so they exist once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus")


def load_audio(
    path: str | Path,
    sample_rate: int,
    start: float | None = None,
    end: float | None = None,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sample_rate``.

    Reads [start, end) seconds (``end`` None: to the end of file, capped at ``max_seconds`` after
    ``start``). Raises AudioError naming the file when it is missing, unreadable or empty.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "file not found (check the dataset root and the manifest 'path')")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile gives one generic error type for every failure
        raise AudioError(path, f"cannot decode ({exc}); re-encode it as wav/flac or drop it") from exc
    sr_in = int(info.samplerate)
    first = int(round((start or 0.0) * sr_in))
    stop = info.frames if end is None else min(info.frames, int(round(end * sr_in)))
    if max_seconds is not None:
        stop = min(stop, first + int(round(max_seconds * sr_in)))
    if stop <= first:
        raise AudioError(path, f"empty segment (start={start}, end={end}, {info.frames} frames in file)")
    try:
        data, _ = sf.read(str(path), start=first, stop=stop, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(path, f"cannot decode ({exc}); the file is probably corrupt") from exc
    if data.shape[0] == 0:
        raise AudioError(path, "no audio samples could be decoded (empty or truncated file)")
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.all(np.isfinite(wave)):
        raise AudioError(path, "contains NaN/inf samples")
    return resample(wave, sr_in, sample_rate)


def resample(wave: np.ndarray, sr_in: int, sample_rate: int) -> np.ndarray:
    """Mono float32 ``wave`` from ``sr_in`` to ``sample_rate`` (soxr HQ: deterministic)."""
    if int(sr_in) != int(sample_rate):
        wave = soxr.resample(wave, int(sr_in), int(sample_rate), quality="HQ")
    return np.ascontiguousarray(wave, dtype=np.float32)


def check_usable(wave: np.ndarray, sample_rate: int, path, min_seconds: float = 0.1,
                 silence_peak: float = 1e-4) -> None:
    """Raise AudioError when a decoded waveform is too short or silent-only."""
    if wave.shape[0] < min_seconds * sample_rate:
        raise AudioError(path, f"too short ({wave.shape[0] / sample_rate:.3f} s < {min_seconds} s)")
    if float(np.max(np.abs(wave))) < silence_peak:
        raise AudioError(path, f"silent (peak below {silence_peak})")


def peak_normalize(wave: np.ndarray) -> np.ndarray:
    """Audio Flamingo's normalisation (reference data.py): map to [-1, 1] by the peak.

    If all samples are >= 0 the reference maps [0, max] to [-1, 1] (``2x/max - 1``); otherwise it
    divides by max(|max|, |min|). An all-zero input is returned unchanged.
    """
    hi, lo = float(wave.max(initial=0.0)), float(wave.min(initial=0.0))
    if hi == 0.0 and lo == 0.0:
        return wave.astype(np.float32, copy=True)
    if lo >= 0:
        return (2.0 * wave / hi - 1.0).astype(np.float32)
    return (wave / max(abs(hi), abs(lo))).astype(np.float32)


def int16_roundtrip(wave: np.ndarray) -> np.ndarray:
    """Quantise to int16 and back, as LAION-CLAP training data and AF1 inputs were (scale 32767)."""
    clipped = np.clip(wave, -1.0, 1.0)
    return ((clipped * 32767.0).astype(np.int16) / 32767.0).astype(np.float32)

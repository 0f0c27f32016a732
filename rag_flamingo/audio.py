"""Audio decoding: the one place that turns a file into a mono float32 waveform.

Policy (deterministic, documented; differs from the reference where the reference is wrong):
- any format libsndfile reads (wav, flac, ogg, mp3, ...), any rate, any channel count;
- only the requested segment [start, end) (or the first ``max_seconds``) is read from disk, so a
  1-hour file costs no more than the part we use;
- channels are averaged (the reference keeps channel 0 for wav but averages for mp3);
- resampled with soxr (HQ), which is deterministic; the output length follows a *length rule*
  (``DECODE_LENGTHS``): soxr's own by default, or the rule of the library an encoder's original
  package decodes with (``decode_rule``), zero-padded or trimmed to it. Clips shorter than an
  encoder window are tiled, so one sample more or fewer shifts every tile.
Encoder-specific steps (peak normalisation, int16 round-trip, crops, windows) live with the
encoders; the shared numeric helpers for them are here so they exist once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioError, ConfigError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus")


def load_audio(
    path: str | Path,
    sample_rate: int,
    start: float | None = None,
    end: float | None = None,
    max_seconds: float | None = None,
    length_rule: str = "soxr",
) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sample_rate``.

    Reads [start, end) seconds (``end`` None: to the end of file, capped at ``max_seconds`` after
    ``start``); the resampled length follows ``length_rule`` (see ``DECODE_LENGTHS``). Raises
    AudioError naming the file when it is missing, unreadable or empty.
    """
    check_length_rule(length_rule)
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
    return resample(wave, sr_in, sample_rate, length_rule)


# ----------------------------------------------------------------------------- resampled length
# Each rule: (input samples, input rate, output rate) -> output samples, for rates that differ.


def librosa_length(n: int, sr_in: int, sr_out: int) -> int:
    """``librosa.resample(..., fix=True)`` (librosa 0.11, used by ``librosa.load``): ceil of ``n`` times
    the float ratio ``sr_out / sr_in``, so 1.3 s at 44.1 kHz gives 62401 samples at 48 kHz, not 62400."""
    return int(np.ceil(n * (float(sr_out) / sr_in)))


def torchaudio_length(n: int, sr_in: int, sr_out: int) -> int:
    """``torchaudio.functional.resample`` (``torchaudio.transforms.Resample``, used by msclap): the
    rates divided by their gcd, then ``torch.ceil(torch.as_tensor(new * n / orig))``: the quotient is
    rounded to float32 (torch's default dtype) before the ceil, which drops the last sample when the
    fraction is below float32's resolution (long clips only). Source: https://github.com/pytorch/audio/
    blob/02d6815cab3d9124a796e7cb01585c3678914bbe/src/torchaudio/functional/functional.py
    (``_apply_sinc_resample_kernel``)."""
    gcd = math.gcd(int(sr_in), int(sr_out))
    return int(np.ceil(np.float32((int(sr_out) // gcd) * n / (int(sr_in) // gcd))))


# None: keep the resampler's own length (soxr's rounding has no closed form: within one sample of
# n * sr_out / sr_in, ties broken by its internal filter delay).
DECODE_LENGTHS: dict[str, Callable[[int, int, int], int] | None] = {
    "soxr": None,
    "librosa": librosa_length,
    "torchaudio": torchaudio_length,
}


def check_length_rule(rule: str) -> str:
    if rule not in DECODE_LENGTHS:
        raise ConfigError(f"unknown decode length rule {rule!r}; use one of {', '.join(DECODE_LENGTHS)}")
    return rule


def decode_rule(encoder) -> str:
    """The length rule an encoder's audio is decoded with: its ``decode_length`` attribute (the rule of
    the library its original package decodes files with), else soxr's own length."""
    return check_length_rule(getattr(encoder, "decode_length", None) or "soxr")


def fix_length(wave: np.ndarray, size: int) -> np.ndarray:
    """``wave`` cut to ``size`` samples, or zero-padded at the end to it."""
    if wave.shape[0] >= size:
        return wave[:size]
    return np.concatenate([wave, np.zeros(size - wave.shape[0], dtype=wave.dtype)])


def resample(wave: np.ndarray, sr_in: int, sample_rate: int, length_rule: str = "soxr") -> np.ndarray:
    """Mono float32 ``wave`` from ``sr_in`` to ``sample_rate`` (soxr HQ: deterministic), its length
    set by ``length_rule`` (``DECODE_LENGTHS``)."""
    rule = DECODE_LENGTHS[check_length_rule(length_rule)]
    if int(sr_in) != int(sample_rate):
        n = wave.shape[0]
        wave = soxr.resample(wave, int(sr_in), int(sample_rate), quality="HQ")
        if rule is not None:
            wave = fix_length(wave, rule(n, int(sr_in), int(sample_rate)))
    return np.ascontiguousarray(wave, dtype=np.float32)


def check_usable(
    wave: np.ndarray, sample_rate: int, path, min_seconds: float = 0.1, silence_peak: float = 1e-4
) -> None:
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


# ----------------------------------------------------------------------------- query audio

AudioSource = str | Path | np.ndarray | tuple[np.ndarray, int]


def crop_seconds(encoder) -> float | None:
    """Seconds of audio an encoder uses from the segment start (None: all), as build_index reads them."""
    return getattr(encoder, "max_seconds", None) or getattr(getattr(encoder, "scheme", None), "max_seconds", None)


def load_waveform(
    source: AudioSource,
    sample_rate: int,
    *,
    start: float | None = None,
    end: float | None = None,
    max_seconds: float | None = None,
    length_rule: str = "soxr",
) -> np.ndarray:
    """A query's audio at ``sample_rate``: a file path, a waveform at that rate, or ``(wave, sr)``;
    resampled to the length ``length_rule`` gives.

    Raises AudioError (naming the file) for missing, unreadable, too-short or silent audio.
    """
    if isinstance(source, (str, Path)):
        wave = load_audio(source, sample_rate, start=start, end=end, max_seconds=max_seconds, length_rule=length_rule)
        name: str | Path = source
    else:
        wave, sr = source if isinstance(source, tuple) else (source, sample_rate)
        wave = np.asarray(wave, np.float32)
        if wave.ndim != 1:
            raise ConfigError(f"a query waveform must be mono 1-D, got shape {wave.shape}")
        if int(sr) != sample_rate:
            wave = resample(wave, int(sr), sample_rate, length_rule)
        if max_seconds:
            wave = wave[: int(round(max_seconds * sample_rate))]
        name = "<waveform>"
    check_usable(wave, sample_rate, name)
    return wave


DecodeKey = tuple[int, str, float | None]  # (sample rate, length rule, seconds read)


def decode_key(encoder) -> DecodeKey:
    """How ``encoder`` wants its audio decoded: the same as build_index decodes it for the store."""
    return int(encoder.sample_rate), decode_rule(encoder), crop_seconds(encoder)


def load_for_encoders(source: AudioSource, encoders, item: dict | None = None) -> dict[DecodeKey, np.ndarray]:
    """``source`` decoded once per distinct `decode_key` of ``encoders`` (None entries ignored), reading
    only the seconds each uses; ``item`` may give start/end. Look a wave up with `wave_for`."""
    item = item or {}
    keys = {decode_key(enc) for enc in encoders if enc is not None}
    return {
        key: load_waveform(
            source, key[0], start=item.get("start"), end=item.get("end"), max_seconds=key[2], length_rule=key[1]
        )
        for key in keys
    }


def wave_for(waves: dict[DecodeKey, np.ndarray], encoder) -> np.ndarray:
    """The wave of ``load_for_encoders`` that ``encoder`` takes."""
    return waves[decode_key(encoder)]

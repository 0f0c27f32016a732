"""The Audio Flamingo 1 sliding-window scheme (the one owner of it; AF1's
``foundation/data/data.py``): 7 s windows with 5.25 s overlap (hop 1.75 s) at 44.1 kHz, at most 16
windows, so at most 33.25 s of audio per clip.

- T <= 7 s: 1 window, zero-padded to 7 s (not repeat-padded);
- T >= 33.25 s: the first 33.25 s, 16 windows;
- otherwise n = 1 + ceil((T - 7 s) / 1.75 s) windows over the signal zero-padded to
  n*7 s - (n-1)*5.25 s.
Unused windows up to 16 are all-zero clips with mask 0 (the reference still runs CLAP on them).
Integer sample arithmetic throughout (the reference's seconds-based formula gives the same counts).

Also here: ``end_aligned_starts``, the non-overlapping windows of the CLAP encoders' ``long_audio='mean'``
policy (MS-CLAP, LAION-CLAP).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowScheme:
    sample_rate: int = 44100
    window_seconds: float = 7.0
    overlap_seconds: float = 5.25
    max_windows: int = 16

    @property
    def window(self) -> int:
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def overlap(self) -> int:
        return int(round(self.overlap_seconds * self.sample_rate))

    @property
    def hop(self) -> int:
        return self.window - self.overlap

    @property
    def max_samples(self) -> int:
        """Longest audio used: 16*7 s - 15*5.25 s = 33.25 s (1,466,325 samples)."""
        return self.padded_length(self.max_windows)

    @property
    def max_seconds(self) -> float:
        return self.max_samples / self.sample_rate

    def padded_length(self, n: int) -> int:
        return n * self.window - (n - 1) * self.overlap

    def num_windows(self, num_samples: int) -> int:
        if num_samples <= self.window:
            return 1
        if num_samples >= self.max_samples:
            return self.max_windows
        return 1 + -(-(num_samples - self.window) // self.hop)  # ceil division

    def split(self, wave: np.ndarray) -> np.ndarray:
        """[T] -> [n, window]: cap at max_samples, zero-pad to padded_length(n), cut windows."""
        wave = np.asarray(wave, dtype=np.float32).reshape(-1)[: self.max_samples]
        n = self.num_windows(wave.shape[0])
        padded = np.zeros(self.padded_length(n), dtype=np.float32)
        padded[: wave.shape[0]] = wave
        return np.stack([padded[i * self.hop : i * self.hop + self.window] for i in range(n)])

    def describe(self) -> dict:
        return {
            "sample_rate": self.sample_rate,
            "window_seconds": self.window_seconds,
            "overlap_seconds": self.overlap_seconds,
            "max_windows": self.max_windows,
            "max_seconds": self.max_seconds,
        }


AF1_WINDOWS = WindowScheme()


def end_aligned_starts(num_samples: int, length: int) -> list[int]:
    """Starts of consecutive ``length`` windows over ``num_samples`` (>= ``length``): 0, length,
    2*length, ..., the last one aligned to the end of the clip (it may overlap the one before)."""
    return list(range(0, num_samples - length, length)) + [num_samples - length]

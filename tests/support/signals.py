"""Synthetic audio files and the closeness check of the encoder parity tests."""

from __future__ import annotations

import numpy as np
import soundfile as sf
import torch

SR = 44100


def assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    ours, ref = torch.as_tensor(ours).double(), torch.as_tensor(ref).double()
    assert ours.shape == ref.shape, what
    cos = torch.nn.functional.cosine_similarity(ours, ref, dim=-1)
    diff = (ours - ref).abs().max().item()
    assert cos.min().item() >= 0.9999, f"{what}: cosine {cos.min().item():.6f}"
    assert diff <= 1e-4, f"{what}: max abs diff {diff:.2e}"


def chirp(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """A chirp with a seed-dependent start frequency and tremolo, over a little noise (float32)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    f0 = 200 + 300 * seed
    wave = 0.4 * np.sin(2 * np.pi * (f0 + 150 * t) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t))
    return (wave + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)


def write_wave(path, seconds: float, sr: int = SR, seed: int = 0):
    sf.write(str(path), chirp(seconds, sr, seed), sr, subtype="FLOAT")
    return path

"""Log-mel frontend that reproduces torchlibrosa's ``Spectrogram`` + ``LogmelFilterBank``.

Why hand-written instead of torchaudio/librosa: the released CLAP checkpoints (MS-CLAP CNN14/HTSAT,
LAION-CLAP HTSAT) *contain* this frontend as weights (``spectrogram_extractor.stft.conv_real.weight``,
``...conv_imag.weight``, ``logmel_extractor.melW``), and the models were trained on exactly its
arithmetic: a framed DFT done as two strided Conv1d (real/imag parts of the windowed DFT matrix),
power = re² + im², mel = power @ melW, ``10*log10(clamp(mel, amin))``. Using the same modules and
key names lets checkpoints load strictly and keeps parity to float rounding; torchaudio is not a
dependency we may take, and an FFT-based STFT differs in low-energy bins after the log.

Freshly built instances compute the same matrices as torchlibrosa 0.1.0 (librosa's Hann window
and Slaney mel filters); loading a checkpoint overwrites them with the stored values.

Always run this frontend in float32: power spectra overflow float16.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LogMelConfig:
    sample_rate: int = 32000
    n_fft: int = 1024
    hop_length: int = 320
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    center: bool = True
    pad_mode: str = "reflect"
    ref: float = 1.0
    amin: float = 1e-10

    def describe(self) -> dict:
        """For encoder fingerprints."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _frozen_conv(n_fft: int, hop: int, weight: np.ndarray) -> nn.Conv1d:
    conv = nn.Conv1d(1, weight.shape[0], kernel_size=n_fft, stride=hop, bias=False)
    conv.weight = nn.Parameter(torch.from_numpy(weight[:, None, :]).float(), requires_grad=False)
    return conv


class STFT(nn.Module):
    """Framed DFT with a Hann window as two Conv1d (torchlibrosa ``STFT``, forward direction)."""

    def __init__(self, n_fft: int, hop_length: int, center: bool = True, pad_mode: str = "reflect"):
        super().__init__()
        self.n_fft, self.hop_length, self.center, self.pad_mode = n_fft, hop_length, center, pad_mode
        window = librosa.util.pad_center(librosa.filters.get_window("hann", n_fft, fftbins=True), size=n_fft)
        omega = np.exp(-2j * np.pi / n_fft)
        dft = np.power(omega, np.outer(np.arange(n_fft), np.arange(n_fft)))  # torchlibrosa dft_matrix
        bins = n_fft // 2 + 1
        kernel = dft[:, :bins] * window[:, None]
        self.conv_real = _frozen_conv(n_fft, hop_length, np.real(kernel).T.astype(np.float32))
        self.conv_imag = _frozen_conv(n_fft, hop_length, np.imag(kernel).T.astype(np.float32))

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, samples] -> real, imag, each [B, 1, frames, n_fft//2+1]."""
        x = waveform[:, None, :]
        if self.center:
            x = F.pad(x, (self.n_fft // 2, self.n_fft // 2), mode=self.pad_mode)
        real = self.conv_real(x)[:, None].transpose(2, 3)
        imag = self.conv_imag(x)[:, None].transpose(2, 3)
        return real, imag


class Spectrogram(nn.Module):
    """Power spectrogram [B, 1, frames, bins] (torchlibrosa ``Spectrogram``, power 2)."""

    def __init__(self, n_fft: int, hop_length: int, center: bool = True, pad_mode: str = "reflect"):
        super().__init__()
        self.stft = STFT(n_fft, hop_length, center, pad_mode)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        real, imag = self.stft(waveform)
        return real**2 + imag**2


class LogmelFilterBank(nn.Module):
    """Slaney mel filter bank + power_to_db without top_db (torchlibrosa ``LogmelFilterBank``)."""

    def __init__(
        self, sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float, ref: float = 1.0, amin: float = 1e-10
    ):
        super().__init__()
        mel = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).T
        self.melW = nn.Parameter(torch.from_numpy(np.ascontiguousarray(mel)).float(), requires_grad=False)
        self.amin = amin
        self.ref_db = 10.0 * float(np.log10(np.maximum(amin, ref)))

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(power, self.melW)
        log_mel = 10.0 * torch.log10(torch.clamp(mel, min=self.amin))
        return log_mel - self.ref_db if self.ref_db else log_mel


def log_mel(
    spectrogram_extractor: Spectrogram, logmel_extractor: LogmelFilterBank, waveform: torch.Tensor
) -> torch.Tensor:
    """[B, samples] -> [B, 1, frames, n_mels] in float32 (autocast off: power spectra overflow fp16)."""
    with torch.autocast(device_type=waveform.device.type, enabled=False):
        return logmel_extractor(spectrogram_extractor(waveform.float()))


class LogMel(nn.Module):
    """waveform [B, samples] -> log-mel [B, 1, frames, n_mels]; always computed in float32.

    Holds ``spectrogram_extractor`` and ``logmel_extractor`` under the names the original models use,
    so a model can either own one (keys ``<prefix>.spectrogram_extractor...``) or call it.
    """

    def __init__(self, config: LogMelConfig):
        super().__init__()
        self.config = config
        self.spectrogram_extractor = Spectrogram(config.n_fft, config.hop_length, config.center, config.pad_mode)
        self.logmel_extractor = LogmelFilterBank(
            config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax, config.ref, config.amin
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return log_mel(self.spectrogram_extractor, self.logmel_extractor, waveform)

    def num_frames(self, num_samples: int) -> int:
        pad = self.config.n_fft // 2 * 2 if self.config.center else 0
        return (num_samples + pad - self.config.n_fft) // self.config.hop_length + 1

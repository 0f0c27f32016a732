"""PANNs CNN14 (Kong et al. 2020) as used by MS-CLAP 2022 (``msclap.models.audio.Cnn14``), inference only.

Written out (no maintained library ships it) with the original key names so the 2022 checkpoint
loads strictly: ``spectrogram_extractor``, ``logmel_extractor``, ``bn0``, ``conv_block1..6``
(``conv1``, ``conv2``, ``bn1``, ``bn2``), ``fc1``, ``fc_audioset``. Eval mode only: no dropout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .mel import LogmelFilterBank, Spectrogram, log_mel


@dataclass(frozen=True)
class Cnn14Config:
    sample_rate: int = 44100
    window_size: int = 1024
    hop_size: int = 320
    mel_bins: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    classes_num: int = 527
    out_emb: int = 2048

    def describe(self) -> dict:
        return asdict(self)


class ConvBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, pool_size: tuple[int, int]) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, kernel_size=pool_size)


class Cnn14(nn.Module):
    """waveform [B, S] -> {'embedding': [B, out_emb], 'clipwise_output': [B, classes]}."""

    def __init__(self, config: Cnn14Config = Cnn14Config()):
        super().__init__()
        c = self.config = config
        self.spectrogram_extractor = Spectrogram(c.window_size, c.hop_size)
        self.logmel_extractor = LogmelFilterBank(c.sample_rate, c.window_size, c.mel_bins, c.fmin, c.fmax)
        self.bn0 = nn.BatchNorm2d(c.mel_bins)
        widths = (1, 64, 128, 256, 512, 1024, 2048)
        for i in range(6):
            setattr(self, f"conv_block{i + 1}", ConvBlock(widths[i], widths[i + 1]))
        self.fc1 = nn.Linear(2048, c.out_emb)
        self.fc_audioset = nn.Linear(c.out_emb, c.classes_num)
        # channels-last convs: ~12% less CPU time with oneDNN (load_state_dict keeps the layout);
        # type-ignored: Module.to documents memory_format, but torch's overloads omit it
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """[B, S] -> log-mel after bn0 [B, 1, T, mel_bins], float32, channels-last."""
        x = log_mel(self.spectrogram_extractor, self.logmel_extractor, waveform)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        return x.contiguous(memory_format=torch.channels_last)

    def forward_mel(self, x: torch.Tensor, with_clipwise: bool = False) -> dict:
        """Log-mel after bn0 -> outputs: the convolutional network (what runtime=openvino converts)."""
        for i in range(6):
            x = getattr(self, f"conv_block{i + 1}")(x, (2, 2) if i < 5 else (1, 1))
        x = x.mean(dim=3)
        x = x.max(dim=2).values + x.mean(dim=2)
        embedding = F.relu(self.fc1(x))
        out = {"embedding": embedding}
        if with_clipwise:
            out["clipwise_output"] = torch.sigmoid(self.fc_audioset(embedding))
        return out

    def forward(self, waveform: torch.Tensor, with_clipwise: bool = False) -> dict:
        return self.forward_mel(self.mel(waveform), with_clipwise)

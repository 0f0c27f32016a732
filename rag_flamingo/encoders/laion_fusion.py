"""LAION-CLAP feature fusion (``fusion_type='aff_2d'``): the 4-channel mel input and the AFF patch embed.

What the original does for a fusion model (``laion_clap`` 1.1.7, ``training/data.py:get_audio_features``
and ``clap_module/htsat.py:PatchEmbed``):

- audio <= 10 s: repeat-pad then zero-pad to 480,000 samples; the log-mel is stacked 4 times and
  ``longer`` is False (only channel 0 is used).
- audio > 10 s: the log-mel of the *whole* clip; channel 0 is that mel shrunk to 1001 frames
  (``torchvision.transforms.Resize``, bilinear), channels 1-3 are 1001-frame chunks drawn **at random**
  from the front / middle / back thirds of the possible start positions; ``longer`` is True.
- This mel is not the torchlibrosa one of the non-fusion path: it is ``torchaudio``'s
  ``MelSpectrogram`` (HTK mel scale, no filter normalisation, power 2, centred reflect padding) and
  ``AmplitudeToDB`` (``10*log10(max(x, 1e-10))``). Written here with ``torch.stft`` and librosa's
  HTK filter bank because torchaudio is not a dependency we may take.
- In the patch embed, channel 0 goes through ``proj`` and the three chunks through ``mel_conv2d``;
  the two are combined by attentional feature fusion (AFF, Dai et al. WACV 2021) for longer clips.

Our deterministic policy (recorded in the encoder fingerprint): the three chunks start at the first,
middle and last index of their third (``chunk_starts``), i.e. the first 10 s, the centred 10 s and
the last 10 s of the clip. Module and parameter names match the original so checkpoints load strictly.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class FusionMelConfig:
    sample_rate: int = 48000
    n_fft: int = 1024
    hop_length: int = 480
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    max_samples: int = 480000  # the encoder window (10 s)
    shrink_antialias: bool = False  # torchvision < 0.17 Resize on tensors (training era) and the HF port: off

    @property
    def chunk_frames(self) -> int:
        return self.max_samples // self.hop_length + 1  # +1: centred STFT

    def describe(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class HTKLogMel(nn.Module):
    """waveform [S] or [B, S] -> log-mel [.., frames, n_mels] (torchaudio MelSpectrogram + AmplitudeToDB)."""

    mel_basis: torch.Tensor  # buffers (registered in __init__)
    window: torch.Tensor

    def __init__(self, config: FusionMelConfig):
        super().__init__()
        self.config = config
        fb = librosa.filters.mel(
            sr=config.sample_rate,
            n_fft=config.n_fft,
            n_mels=config.n_mels,
            fmin=config.fmin,
            fmax=config.fmax,
            htk=True,
            norm=None,
        )
        self.register_buffer("mel_basis", torch.from_numpy(np.ascontiguousarray(fb.T)).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        c = self.config
        spec = torch.stft(
            waveform.float(),
            c.n_fft,
            hop_length=c.hop_length,
            win_length=c.n_fft,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # [.., bins, frames]
        mel = torch.matmul(power.transpose(-1, -2), self.mel_basis)
        return 10.0 * torch.log10(torch.clamp(mel, min=1e-10))


def chunk_starts(total_frames: int, chunk_frames: int) -> tuple[int, int, int]:
    """Deterministic replacement of the original's three ``np.random.choice`` calls.

    The candidate starts ``0 .. total-chunk`` are split in three like the original
    (``np.array_split``, an empty third falls back to ``[0]``); we take the first start of the front
    third, the middle start of the middle third and the last start of the back third.
    """
    ranges = [list(r) for r in np.array_split(np.arange(total_frames - chunk_frames + 1), 3)]
    ranges = [r if len(r) else [0] for r in ranges]
    return int(ranges[0][0]), int(ranges[1][len(ranges[1]) // 2]), int(ranges[2][-1])


def repeat_pad(wave: torch.Tensor, max_samples: int) -> torch.Tensor:
    """The original ``repeatpad``: tile ``int(max/len)`` times, then zero-pad to ``max_samples``."""
    n = wave.shape[-1]
    if n >= max_samples:
        return wave
    return F.pad(wave.repeat(max_samples // n), (0, max_samples - n * (max_samples // n)))


def fusion_input(wave: torch.Tensor, mel: HTKLogMel) -> tuple[torch.Tensor, bool]:
    """One clip [S] (already int16 round-tripped) -> (mel_fusion [4, chunk_frames, n_mels], longer)."""
    c = mel.config
    if wave.shape[-1] <= c.max_samples:
        m = mel(repeat_pad(wave, c.max_samples))
        return m.expand(4, -1, -1).contiguous(), False
    full = mel(wave)
    total, chunk = full.shape[0], c.chunk_frames
    if total == chunk:  # longer than the window by less than one hop: the whole mel, not fused
        return full.expand(4, -1, -1).contiguous(), False
    chunks = [full[s : s + chunk] for s in chunk_starts(total, chunk)]
    shrink = F.interpolate(
        full[None, None], size=(chunk, c.n_mels), mode="bilinear", align_corners=False, antialias=c.shrink_antialias
    )[0, 0]
    return torch.stack([shrink, *chunks]), True


def rowwise(fn, *xs: torch.Tensor) -> torch.Tensor:
    """``fn`` applied to one row at a time. For the small-M steps (projection heads, poolers, AFF
    gates): a BLAS matmul over M=B rows picks different kernels for different B, so a row's low bits
    would depend on how many other clips share the call; one row at a time they never do. The large
    steps (HTSAT, RoBERTa layers: M = B x tokens) are batch-invariant as they are (tested). While traced
    for a converted graph (``encoders.runtime``), the whole batch at once: an unrolled loop would fix the
    graph's batch size (the converted path pads micro-batches to a fixed size instead)."""
    if torch.jit.is_tracing():
        return fn(*xs)
    return torch.cat([fn(*(x[i : i + 1] for x in xs)) for i in range(xs[0].shape[0])])


def _attention_branch(channels: int, inter: int, pooled: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1)] if pooled else []
    layers += [
        nn.Conv2d(channels, inter, 1),
        nn.BatchNorm2d(inter),
        nn.ReLU(inplace=True),
        nn.Conv2d(inter, channels, 1),
        nn.BatchNorm2d(channels),
    ]
    return nn.Sequential(*layers)


class AFF(nn.Module):
    """Attentional feature fusion, 2-D (original ``feature_fusion.AFF(type='2D')``, eval mode)."""

    def __init__(self, channels: int, r: int = 4):
        super().__init__()
        self.local_att = _attention_branch(channels, channels // r, pooled=False)
        self.global_att = _attention_branch(channels, channels // r, pooled=True)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        xa = x + residual
        weight = torch.sigmoid(self.local_att(xa) + self.global_att(xa))
        return 2 * x * weight + 2 * residual * (1 - weight)


class FusionPatchEmbed(nn.Module):
    """HTSAT patch embed with AFF fusion of the three local chunks (``PatchEmbed``, ``aff_2d``).

    Called by ``HTSAT.tokens(mel, longer=mask)`` (x [B, 4, spec, spec] after the reshape). The local branch is
    computed for every row and selected with ``longer``, the AFF one row at a time (the original
    computes them on the longer rows only: same values in eval mode, but this way a clip's result does
    not depend on the other clips of the batch). Its branch on ``longer`` depends on the data, which a
    traced graph cannot follow: ``runtime=openvino`` converts the network after it (``HTSAT.forward_tokens``)
    and runs this module in torch.
    """

    def __init__(self, img_size: int, patch_size: int, patch_stride: tuple[int, int], embed_dim: int):
        super().__init__()
        self.img_size = img_size
        padding = ((patch_size - patch_stride[0]) // 2, (patch_size - patch_stride[1]) // 2)
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=patch_size, stride=patch_stride, padding=padding)
        self.norm = nn.LayerNorm(embed_dim)
        self.mel_conv2d = nn.Conv2d(
            1,
            embed_dim,
            kernel_size=(patch_size, patch_size * 3),
            stride=(patch_stride[0], patch_stride[1] * 3),
            padding=padding,
        )
        self.fusion_model = AFF(channels=embed_dim)

    def forward(self, x: torch.Tensor, longer: torch.Tensor | None = None) -> torch.Tensor:
        global_x = self.proj(x[:, 0:1])
        if longer is not None and bool(longer.any()):
            b, c, h, w = x[:, 1:].shape
            local = self.mel_conv2d(x[:, 1:].reshape(b * c, 1, h, w))
            local = local.view(b, c, *local.shape[1:]).permute(0, 2, 3, 1, 4).flatten(3)
            tw = global_x.shape[-1]
            local = F.pad(local, (0, tw - local.shape[-1])) if local.shape[-1] < tw else local[..., :tw]
            fused = rowwise(self.fusion_model, global_x, local)
            global_x = torch.where(longer.view(-1, 1, 1, 1), fused, global_x)
        return self.norm(global_x.flatten(2).transpose(1, 2))

"""``aisfx``: the pretrained sound-effects embedder shipped inside the ``aisfx`` PyPI wheel.

Model: "X-Sequential-CE" from *Representation Learning for the Automatic Indexing of Sound Effects
Libraries* (ISMIR 2022; weights CC-BY-4.0), a 9-layer CNN (DCASE cross-task baseline) over 96-band
log-mel blocks of 100 frames, trained with nine dataset-specific classification heads. We rebuild
the architecture here (the package's own loader uses ``torch.load`` without ``weights_only`` and
fails on torch >= 2.6) and load the wheel's checkpoint strictly, heads included.

Preprocessing (the package's librosa path, ``aisfx/spectrogram/spectrogram_librosa.py``):
- mono 44.1 kHz, peak-normalised (divide by max |x|);
- power mel spectrogram: n_fft 2048, hop 1024, 96 htk bands with norm 1, 0-22050 Hz, centred;
- ``log10(1e4 * S + 1) / 9.4578`` (the paper's min/max normalisation), frames as rows [T, 96]
  (the package's helper returns [96, T]; its model reads [T, 96]);
- blocks of 100 frames (~2.3 s) at 50 % hop, an incomplete last block dropped (the package
  default ``drop_partial_block=True``); a clip shorter than one block is zero-padded to one block
  (the package asserts on clips under ~1.2 s; we pad those the same way);
- one 512-d embedding per block (max over time of the mean over frequency), mean-pooled per clip,
  then L2-normalised (cosine retrieval).

Crop policy (deterministic): the first ``max_seconds`` seconds of the clip (or of its manifest
segment); the pipeline reads only those seconds from disk.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import checkpoint_sha256, load_strict, load_torch_file
from ..devices import autocast, best_device
from ..errors import CheckpointError
from .base import check_option, register_encoder
from .runtime import autocast_dtype, openvino_net
from .runtime import resolve as runtime_choice

logger = logging.getLogger(__name__)

CHECKPOINT_IN_WHEEL = "models/checkpoint.pth"


@dataclass(frozen=True)
class AisfxConfig:
    sample_rate: int = 44100
    n_fft: int = 2048
    hop_length: int = 1024
    n_mels: int = 96
    fmin: float = 0.0
    fmax: float = 22050.0
    log_scale: float = 10000.0
    spec_max: float = 9.457798957824707  # the paper's normalisation constant (min 0)
    block_frames: int = 100
    block_hop: int = 50
    base_channels: int = 64
    dim: int = 512


# ----------------------------------------------------------------------------- model


class AisfxConvBlock(nn.Module):
    """Two 3x3 conv + BN + ReLU, then pooling (names match the checkpoint). ``exact_input``: the first
    conv runs in fp32 under a reduced-precision autocast (the log-mel input rounded to bf16 costs the
    clip embedding cos 0.9997 against fp32; kept fp32, 0.99999; the conv is 0.3 % of the FLOPs)."""

    def __init__(self, in_channels: int, out_channels: int, exact_input: bool = False):
        super().__init__()
        self.exact_input = exact_input
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, pool: tuple[int, int]) -> torch.Tensor:
        if self.exact_input:
            with torch.autocast(x.device.type, enabled=False):
                x = F.relu(self.bn1(self.conv1(x.float())))
        else:
            x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.max_pool2d(x, kernel_size=pool) if pool != (1, 1) else x


class AisfxEmbeddingNet(nn.Module):
    """[B, frames, mels] -> [B, 8*base]: four conv blocks, mean over frequency, max over time."""

    def __init__(self, config: AisfxConfig):
        super().__init__()
        c = config.base_channels
        self.conv_block1 = AisfxConvBlock(1, c, exact_input=True)
        self.conv_block2 = AisfxConvBlock(c, 2 * c)
        self.conv_block3 = AisfxConvBlock(2 * c, 4 * c)
        self.conv_block4 = AisfxConvBlock(4 * c, 8 * c)

    def forward(self, blocks: torch.Tensor) -> torch.Tensor:
        x = blocks[:, None]
        x = self.conv_block1(x, (2, 2))
        x = self.conv_block2(x, (2, 2))
        x = self.conv_block3(x, (2, 2))
        x = self.conv_block4(x, (1, 1))
        return x.mean(dim=3).amax(dim=2)


class AisfxModel(nn.Module):
    """The checkpoint's CrossNet: the embedding net plus one classification head per training set.

    The heads are kept only so the released state dict loads strictly; embedding uses
    ``embedding_net`` alone.
    """

    def __init__(self, config: AisfxConfig, head_classes: list[int]):
        super().__init__()
        self.config = config
        self.embedding_net = AisfxEmbeddingNet(config)
        d = 8 * config.base_channels
        self.fc = nn.ModuleList(
            nn.Sequential(nn.Linear(d, d // 2), nn.ReLU(), nn.Linear(d // 2, d // 4), nn.ReLU(), nn.Linear(d // 4, n))
            for n in head_classes
        )

    def forward(self, blocks: torch.Tensor) -> torch.Tensor:
        return self.embedding_net(blocks)


def default_checkpoint() -> Path:
    """The checkpoint inside the installed aisfx wheel (found without importing the package)."""
    spec = importlib.util.find_spec("aisfx")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            "the aisfx checkpoint ships in the aisfx wheel, which is not installed: "
            "run `pip install --no-deps aisfx==0.1.2`, or set "
            "encoder.checkpoint=/path/to/checkpoint.pth"
        )
    return Path(list(spec.submodule_search_locations)[0]) / CHECKPOINT_IN_WHEEL


def load_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """``(state_dict, ds_dict)`` from an aisfx checkpoint, with ``weights_only=True``.

    The file pickles numpy scalars in ``ds_dict``; only numpy's scalar reconstructor and dtype
    classes are allowed in addition to tensors (``checkpoints.numpy_safe_globals``).
    """
    obj = load_torch_file(path, "aisfx checkpoint", " (reinstall aisfx or fix encoder.checkpoint)", allow_numpy=True)
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2 and isinstance(obj[0], dict)):
        raise CheckpointError(f"{path}: expected the aisfx (state_dict, ds_dict) tuple")
    return obj[0], obj[1]


def load_model(path: str | Path, config: AisfxConfig = AisfxConfig()) -> AisfxModel:
    state, ds_dict = load_checkpoint(path)
    heads = [int(n) for _, n in sorted(((int(i), n) for i, n in ds_dict.values()))]
    model = AisfxModel(config, heads)
    load_strict(model, state, str(path))
    return model.eval()


# ----------------------------------------------------------------------------- frontend


class AisfxFrontend:
    """Waveform -> normalised log-mel frames [T, 96] -> blocks [n, 100, 96] (float32).

    The frames are librosa's ``melspectrogram`` (centred, zero-padded, periodic Hann, power 2, htk
    bands with norm 1: the package's path) computed with ``torch.stft`` and librosa's own filter
    bank: 3-18 ms against librosa's 21-30 ms per 10 s clip in isolation (BENCHMARKS.md), the same frames
    to 1e-5 (tests/test_encoder_runtime.py)."""

    def __init__(self, config: AisfxConfig):
        self.config = config
        c = config
        bank = librosa.filters.mel(
            sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax, htk=True, norm=1.0
        )
        self.mel_bank = torch.from_numpy(bank.astype(np.float32))
        self.window = torch.hann_window(c.n_fft, periodic=True)

    def librosa_log_mel(self, wave: np.ndarray) -> np.ndarray:
        """The same frames through librosa's own STFT: the package's path (the parity reference)."""
        c = self.config
        peak = float(np.max(np.abs(wave))) if wave.size else 0.0
        spec = librosa.feature.melspectrogram(
            y=(wave / (peak if peak > 0 else 1.0)).astype(np.float32),
            sr=c.sample_rate,
            n_fft=c.n_fft,
            hop_length=c.hop_length,
            n_mels=c.n_mels,
            fmin=c.fmin,
            fmax=c.fmax,
            htk=True,
            norm=1.0,
            power=2.0,
        )
        return (np.log10(spec * c.log_scale + 1.0) / c.spec_max).T.astype(np.float32)

    def log_mel(self, wave: np.ndarray) -> np.ndarray:
        c = self.config
        y = torch.from_numpy(np.ascontiguousarray(wave, np.float32))
        peak = float(y.abs().max()) if y.numel() else 0.0
        y = y / (peak if peak > 0 else 1.0)
        stft = torch.stft(
            y, c.n_fft, c.hop_length, window=self.window, center=True, pad_mode="constant", return_complex=True
        )
        power = stft.real.square() + stft.imag.square()
        spec = self.mel_bank @ power
        return (torch.log10(spec * c.log_scale + 1.0) / c.spec_max).T.contiguous().numpy()

    def blocks(self, frames: np.ndarray) -> np.ndarray:
        """The package's ``blocking`` with drop_partial_block=True, padding short clips."""
        c = self.config
        n = frames.shape[0]
        count = int(np.ceil((n - c.block_frames) / c.block_hop + 1))
        if (n - c.block_frames) % c.block_hop != 0:
            count -= 1
        count = max(count, 1)
        padded = np.concatenate([frames, np.zeros((c.block_frames, frames.shape[1]), np.float32)])
        return np.stack([padded[i * c.block_hop : i * c.block_hop + c.block_frames] for i in range(count)])

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        return self.blocks(self.log_mel(wave))


# ----------------------------------------------------------------------------- encoder


class AisfxEncoder:
    """The ``AudioEncoder`` for aisfx: 512-d L2-normalised clip embeddings."""

    name = "aisfx"
    normalized = True

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        max_seconds: float | None = 10.0,
        device: str | None = None,
        max_blocks: int = 64,
        runtime: str = "auto",
        precision: str = "auto",
        config: AisfxConfig = AisfxConfig(),
    ):
        self.config = config
        self.sample_rate = config.sample_rate
        self.dim = config.dim
        check_option("max_seconds", max_seconds, gt=0)  # null: the whole clip
        self.max_seconds = float(max_seconds) if max_seconds is not None else None
        self.max_blocks = int(check_option("max_blocks", max_blocks, nullable=False, whole=True, ge=1))
        self.checkpoint = Path(checkpoint).expanduser() if checkpoint else default_checkpoint()
        self.device = best_device(device)
        self.runtime, self.dtype = runtime_choice(runtime, precision, self.device)  # `encoders.runtime`
        self.model = load_model(self.checkpoint, config).to(self.device)
        if self.device.type == "cpu":  # oneDNN convs are markedly faster channels-last on CPU
            # type-ignored: Module.to documents memory_format, but torch's overloads omit it
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.frontend = AisfxFrontend(config)
        self._sha256: str | None = None
        self.net: Callable[[torch.Tensor], torch.Tensor] = self.model
        if self.runtime == "openvino":
            example = torch.zeros(self.max_blocks, config.block_frames, config.n_mels)
            sha256 = self.fingerprint()["checkpoint_sha256"]
            self.net = openvino_net(self.model.embedding_net, example, self.checkpoint, sha256, "aisfx", self.dtype)

    def crop(self, wave: np.ndarray) -> np.ndarray:
        """The deterministic crop: the first ``max_seconds`` seconds."""
        if self.max_seconds is None:
            return wave
        return wave[: int(round(self.max_seconds * self.sample_rate))]

    def embed(self, waveforms: list[np.ndarray]) -> np.ndarray:
        if not waveforms:
            return np.zeros((0, self.dim), np.float32)
        clips = torch.stack([torch.from_numpy(b).mean(0) for b in self.embed_blocks(waveforms)])
        return F.normalize(clips, dim=1).numpy().astype(np.float32)

    @torch.inference_mode()
    def embed_blocks(self, waveforms: list[np.ndarray]) -> list[np.ndarray]:
        """Per clip, its block embeddings before pooling: float32 [blocks, dim], not normalised.

        ``embed`` is the L2-normalised mean of these rows; the mean of rows i..j is the pooled
        embedding of those blocks alone (the clip's own peak normalisation kept)."""
        if not waveforms:
            return []
        blocks = [self.frontend(self.crop(np.asarray(w, np.float32))) for w in waveforms]
        counts = [b.shape[0] for b in blocks]
        stacked = torch.from_numpy(np.concatenate(blocks))
        outs = []
        for start in range(0, stacked.shape[0], self.max_blocks):
            chunk = stacked[start : start + self.max_blocks].to(self.device)
            with autocast(self.device, autocast_dtype(self.runtime, self.dtype)):
                outs.append(self.net(chunk).float().cpu())
        return [part.numpy() for part in torch.split(torch.cat(outs), counts)]

    def fingerprint(self) -> dict:
        if self._sha256 is None:
            self._sha256 = checkpoint_sha256(self.checkpoint)
        return {
            "name": self.name,
            "checkpoint_sha256": self._sha256,
            "sample_rate": self.sample_rate,
            "dim": self.dim,
            "normalized": self.normalized,
            "preprocessing": asdict(self.config),
            "crop": f"first {self.max_seconds} s" if self.max_seconds else "whole clip",
            "max_seconds": self.max_seconds,
            "pooling": "mean over 100-frame blocks (50% hop, partial last block dropped)",
            "device": str(self.device),
            "runtime": self.runtime,
            "dtype": str(self.dtype).replace("torch.", ""),
        }


@register_encoder("aisfx", options=AisfxEncoder)
def build_aisfx(**options) -> AisfxEncoder:
    return AisfxEncoder(**options)

"""``clapcap``: the MS-CLAP 2023 clapcap audio branch exactly as Audio Flamingo 1 uses it
(AF1: https://github.com/NVIDIA/audio-flamingo/blob/5ea6f6d6dc50b35f24d0362ef0c24680b5199414/foundation/data/data.py)
— the audio encoder of the model, and also a retrieval encoder.

Checkpoint: ``microsoft/msclap`` ``clapcap_weights_2023.pth``, ``['model']``. Its ``clap.*`` keys (the
``ClapCaptionModel.clap`` = MS-CLAP 2023 ``audio_encoder``: HTS-AT + Projection) load strictly into
``ClapcapAudioModel``; the GPT-2 decoder (``gpt.*``) and prefix mapper (``clap_project.*``) keys are in
the file and unused here: they are matched against explicit patterns of the captioner's layout
(``CLAPCAP_UNUSED``); any other key, or a missing ``clap.*`` key, is an error.

Per clip (AF1 ``data.py``): first 33.25 s -> peak normalisation (``audio.peak_normalize``) -> zero-pad
and cut into 7 s windows with 5.25 s overlap (``windows.AF1_WINDOWS``) -> int16 round-trip ->
``clap(window)[0]``: one 1024-d projected embedding (LayerNorm output, not L2-normalised) per window.
Unused windows up to 16 get the encoder output of an all-zero clip (what the reference computes for
them; computed once and reused) with mask 0.

Retrieval embedding (``embed``): the mean of the L2-normalised embeddings of the valid windows,
re-normalised (recorded in the fingerprint).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..audio import int16_roundtrip, peak_normalize
from ..checkpoints import CheckpointSource, checkpoint_sha256, load_strict, read_state_dict, resolve_checkpoint
from ..devices import best_device
from .base import check_batch_size, register_encoder
from .ms_clap import HUB_REPO, MSCLAP_2023, MSClapAudioEncoder, MSClapConfig, audio_runner, run_batched
from .runtime import autocast_dtype
from .runtime import resolve as runtime_choice
from .windows import AF1_WINDOWS, WindowScheme

logger = logging.getLogger(__name__)

CLAPCAP_FILENAME = "clapcap_weights_2023.pth"

# The captioner parts of clapcap_weights_2023.pth (msclap.models.mapper.ClapCaptionModel): a GPT-2
# LM (old transformers versions also saved the attention bias buffers) and the transformer mapper.
CLAPCAP_UNUSED = (
    r"gpt\.transformer\.(wte|wpe)\.weight",
    r"gpt\.transformer\.h\.\d+\.(ln_1|ln_2|attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.(weight|bias)",
    r"gpt\.transformer\.h\.\d+\.attn\.(bias|masked_bias)",
    r"gpt\.transformer\.ln_f\.(weight|bias)",
    r"gpt\.lm_head\.weight",
    r"clap_project\.(linear\.(weight|bias)|prefix_const)",
    r"clap_project\.transformer\.layers\.\d+\.(norm1|norm2)\.(weight|bias)",
    r"clap_project\.transformer\.layers\.\d+\.attn\.(to_queries|to_keys_values|project)\.(weight|bias)",
    r"clap_project\.transformer\.layers\.\d+\.mlp\.(fc1|fc2)\.(weight|bias)",
)


class ClapcapAudioModel(nn.Module):
    """``clap`` = MS-CLAP 2023 audio encoder: waveform [B, 308700] -> [B, 1024]."""

    def __init__(self, config: MSClapConfig = MSCLAP_2023):
        super().__init__()
        self.clap = MSClapAudioEncoder(config)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.clap(windows)


class ClapcapEncoder:
    name = "clapcap"
    sample_rate = 44100
    dim = 1024
    normalized = True
    decode_length = "librosa"  # AF1 resamples with librosa.resample (audio.decode_rule)

    def __init__(
        self,
        checkpoint: str | None = None,
        hub_repo: str = HUB_REPO,
        filename: str = CLAPCAP_FILENAME,
        batch_size: int = 16,
        device: str | None = None,
        runtime: str | None = "auto",
        precision: str | None = "auto",
        scheme: WindowScheme = AF1_WINDOWS,
        config: MSClapConfig = MSCLAP_2023,
    ):
        self.scheme = scheme
        self.max_seconds = scheme.max_seconds  # 33.25 s: the index builder reads only that much
        self.dim = config.d_proj
        if scheme.sample_rate != self.sample_rate or scheme.window != config.clip_samples:
            raise ValueError("clapcap needs 7 s windows at 44.1 kHz")
        self.batch_size = check_batch_size(batch_size)
        self.source = CheckpointSource(checkpoint, hub_repo, filename)
        self.checkpoint_path = resolve_checkpoint(self.source, "clapcap checkpoint")
        self.model = ClapcapAudioModel(config)
        load_strict(
            self.model, read_state_dict(self.checkpoint_path), str(self.checkpoint_path), known_unused=CLAPCAP_UNUSED
        )
        self.device = best_device(device)
        # `encoders.runtime`; precision auto stays fp32 on the CPU (bf16 parity not measured for MS-CLAP)
        self.runtime, self.dtype = runtime_choice(runtime, precision, self.device, auto_bf16=False)
        self.model.eval().to(self.device)
        self._zero_feature: torch.Tensor | None = None
        self._sha256: str | None = checkpoint_sha256(self.checkpoint_path) if self.runtime == "openvino" else None
        self.audio = audio_runner(
            self.model.clap, self.runtime, self.dtype, self.checkpoint_path, self._sha256, self.name
        )

    def preprocess(self, wave: np.ndarray) -> np.ndarray:
        """AF1 preprocessing of one 44.1 kHz clip -> windows [n, 308700] float32 (n <= 16)."""
        wave = np.asarray(wave, dtype=np.float32).reshape(-1)[: self.scheme.max_samples]
        return int16_roundtrip(self.scheme.split(peak_normalize(wave)))

    def _encode(self, windows: list[np.ndarray]) -> torch.Tensor:
        return run_batched(self.audio, windows, self.batch_size, self.device, autocast_dtype(self.runtime, self.dtype))

    def zero_window_feature(self) -> torch.Tensor:
        """The encoder output of an all-zero 7 s clip (AF1's padding windows), [1024]."""
        if self._zero_feature is None:
            self._zero_feature = self._encode([np.zeros(self.scheme.window, np.float32)])[0]
        return self._zero_feature

    def window_features(self, waveforms: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """AF1 audio input: features FloatTensor [N, 16, 1024] (padding windows = zero-clip output)
        and mask FloatTensor [N, 16] (1 for real windows), on CPU."""
        per_clip = [self.preprocess(w) for w in waveforms]
        counts = [len(w) for w in per_clip]
        m = self.scheme.max_windows
        features = self.zero_window_feature().repeat(len(waveforms), m, 1)
        mask = torch.zeros(len(waveforms), m)
        if per_clip:
            real = self._encode([w for clip in per_clip for w in clip])
            for i, part in enumerate(torch.split(real, counts)):
                features[i, : counts[i]] = part
                mask[i, : counts[i]] = 1.0
        return features, mask

    def embed(self, waveforms: list[np.ndarray]) -> np.ndarray:
        """Retrieval embedding: mean of the L2-normalised valid-window features, re-normalised."""
        if not waveforms:
            return np.zeros((0, self.dim), np.float32)
        features, mask = self.window_features(waveforms)
        unit = F.normalize(features, dim=-1) * mask[..., None]
        pooled = unit.sum(1) / mask.sum(1, keepdim=True)
        return F.normalize(pooled, dim=-1).numpy().astype(np.float32)

    def fingerprint(self) -> dict:
        if self._sha256 is None:
            self._sha256 = checkpoint_sha256(self.checkpoint_path)
        return {
            "name": self.name,
            "family": "ms_clap",
            "version": "clapcap_2023",
            "checkpoint": self.source.describe(),
            "checkpoint_sha256": self._sha256,
            "dim": self.dim,
            "sample_rate": self.sample_rate,
            "windows": self.scheme.describe(),
            "preprocessing": "first 33.25 s, AF1 peak normalisation, zero-pad, int16 round-trip",
            "long_audio": "AF1 windows; audio after 33.25 s is not used",
            "pooling": "mean of L2-normalised valid window features, re-normalised",
            "runtime": self.runtime,
            "precision": str(self.dtype),
        }


@register_encoder("clapcap", options=ClapcapEncoder)
def _clapcap(**options) -> ClapcapEncoder:
    return ClapcapEncoder(**options)

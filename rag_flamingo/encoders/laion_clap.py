"""LAION-CLAP (Wu et al., ICASSP 2023) audio/text embedder: HTSAT-tiny/base + RoBERTa, 512-d, 48 kHz.

Loads the *original released checkpoints* (``lukewys/laion_clap`` on the hub: ``630k-audioset-best.pt``,
``630k-audioset-fusion-best.pt`` (Audio Flamingo 1's retrieval model), ``630k-best.pt``,
``630k-fusion-best.pt``, and the HTSAT-base ``music_*`` files) strictly, without the ``laion_clap``
package (which pins numpy<2, imports torchvision and crops at random). Key layout = the original
``clap_module.model.CLAP``: ``audio_branch.*`` (HTSAT), ``audio_projection.{0,2}``, ``text_branch.*``
(a ``transformers.RobertaModel``; its tokenizer/config come from ``roberta-base`` or a local dir, its
weights from the checkpoint), ``text_projection.{0,2}``, ``logit_scale_{a,t}``.

Preprocessing, as the original file-list API (``CLAP_Module.get_audio_embedding_from_filelist``) except
where it is random:
- mono float32 at 48 kHz, int16 round-trip (``rag_flamingo.audio.int16_roundtrip``); files are decoded to
  ``librosa.load``'s length (``decode_length = 'librosa'``, see ``rag_flamingo.audio.librosa_length``);
- shorter than 10 s: repeat-pad then zero-pad to 480,000 samples (as the original);
- longer than 10 s, non-fusion (``long_audio``): ``mean`` (default) = mean of the normalised embeddings
  of consecutive 10 s windows, the last one aligned to the end of the clip, re-normalised;
  ``head`` = the first 10 s; ``center`` = the centred 10 s. The original takes a random 10 s crop.
- longer than 10 s, fusion: ``fusion`` (default) = the original 4-channel fusion input with the
  chunks chosen deterministically (first / centred / last 10 s, see ``laion_fusion.chunk_starts``);
  ``head`` = the first 10 s only (what Audio Flamingo 1's retrieval script feeds the fusion model).
A clip's embedding is bit-identical across runs and whatever else is in the call: on CPU the large
steps are batch-invariant and the small-M ones (heads, poolers, AFF) run row by row; on CUDA (and for
the transformers port) micro-batches have a fixed size, the last one padded by repeating its last row.
CUDA runs under fp16 autocast by default (``precision``: fp16/bf16/fp32; frontend and batch norm stay
fp32), CPU in fp32. ``runtime=openvino`` (`rag_flamingo.encoders.runtime`) runs the audio network after
the patch embed (HTSAT's Swin stages, pooling, projection: ``LaionClapModel.audio_head``) as a cached
OpenVINO graph; the frontends stay in torch (the fusion patch embed branches on the data).
The transformers ``ClapModel`` port (encoders ``hf_clap_*``) and the converter to it are in ``hf_clap.py``;
they reuse ``LaionClapEncoder`` and the settings here.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..audio import int16_roundtrip
from ..checkpoints import (
    CheckpointSource,
    checkpoint_sha256,
    load_strict,
    load_text_tower,
    load_torch_file,
    resolve_checkpoint,
)
from ..errors import CheckpointError, ConfigError
from .base import (
    autocast,
    best_device,
    check_batch_size,
    check_option,
    micro_batches,
    register_encoder,
    resolve_precision,
)
from .htsat import HTSAT, HTSATConfig
from .laion_fusion import FusionMelConfig, FusionPatchEmbed, HTKLogMel, fusion_input, repeat_pad, rowwise
from .runtime import Forward, autocast_dtype, openvino_net
from .runtime import resolve as runtime_choice
from .windows import end_aligned_starts

logger = logging.getLogger(__name__)

HUB_REPO = "lukewys/laion_clap"
SAMPLE_RATE = 48000
WINDOW_SAMPLES = 480000  # 10 s
TEXT_MAX_LENGTH = 77
DEFAULT_MAX_SECONDS = 60.0  # audio after this is not used (None: all of it)

# The original ``model_configs/HTSAT-{tiny,base}.json`` audio settings (48 kHz, hop 480, fmax 14 kHz).
LAION_AUDIO: dict[str, Any] = dict(
    sample_rate=SAMPLE_RATE, window_size=1024, hop_size=480, mel_bins=64, fmin=50.0, fmax=14000.0
)
AMODELS: dict[str, HTSATConfig] = {
    "HTSAT-tiny": HTSATConfig(**LAION_AUDIO),
    "HTSAT-base": HTSATConfig(**LAION_AUDIO, embed_dim=128, depths=(2, 2, 12, 2)),
}
LONG_AUDIO_POLICIES = {False: ("mean", "head", "center"), True: ("fusion", "head")}

# Checkpoint keys that are not part of the embedding model, by explicit rule (never a non-strict load):
# the training-only MLPs applied after normalisation for the contrastive loss.
KNOWN_UNUSED = (r"audio_transform\..*", r"text_transform\..*")
# transformers < 4.31 stored RoBERTa's position_ids buffer; newer versions recompute it. Checked, then dropped.
POSITION_IDS_KEY = "text_branch.embeddings.position_ids"


@dataclass(frozen=True)
class LaionClapConfig:
    amodel: str = "HTSAT-tiny"
    enable_fusion: bool = False
    joint_dim: int = 512
    text_model: str = "roberta-base"  # hub id or local dir with config.json + tokenizer files
    long_audio: str = "mean"
    shrink_antialias: bool = False  # fusion: antialias of the global-channel shrink (see laion_fusion)

    def __post_init__(self):
        if self.amodel not in AMODELS:
            raise ConfigError(f"unknown LAION-CLAP amodel '{self.amodel}'; use one of {sorted(AMODELS)}")
        if self.long_audio not in LONG_AUDIO_POLICIES[self.enable_fusion]:
            raise ConfigError(
                f"long_audio='{self.long_audio}' is not valid for a "
                f"{'fusion' if self.enable_fusion else 'non-fusion'} model; use one of "
                f"{LONG_AUDIO_POLICIES[self.enable_fusion]}"
            )

    @property
    def htsat(self) -> HTSATConfig:
        return AMODELS[self.amodel]

    @property
    def fusion_mel(self) -> FusionMelConfig:
        return FusionMelConfig(shrink_antialias=self.shrink_antialias)


def _projection(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim))


class LaionClapModel(nn.Module):
    """The embedding part of the original ``clap_module.model.CLAP`` (same submodule names)."""

    def __init__(self, config: LaionClapConfig, text_config):
        super().__init__()
        from transformers import RobertaModel

        self.config = config
        h = config.htsat
        patch_embed = (
            FusionPatchEmbed(h.spec_size, h.patch_size, h.patch_stride, h.embed_dim) if config.enable_fusion else None
        )
        self.audio_branch = HTSAT(h, patch_embed=patch_embed)
        self.audio_projection = _projection(h.num_features, config.joint_dim)
        self.text_branch = RobertaModel(text_config, add_pooling_layer=True)
        self.text_projection = _projection(text_config.hidden_size, config.joint_dim)
        self.logit_scale_a = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.logit_scale_t = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.fusion_mel = HTKLogMel(config.fusion_mel) if config.enable_fusion else None

    needs_fixed_batches = False  # batch-invariant as is (small-M steps run row-wise)

    def audio_tokens(self, waves: torch.Tensor) -> torch.Tensor:
        """Non-fusion frontend: [B, 480000] -> HTSAT patch tokens."""
        return self.audio_branch.tokens(self.audio_branch.mel(waves))

    def fusion_tokens(self, mel: torch.Tensor, longer: torch.Tensor) -> torch.Tensor:
        """Fusion frontend: mel [B, 4, 1001, 64] (before bn0), longer [B] -> HTSAT patch tokens."""
        bn0 = self.audio_branch.bn0
        with torch.autocast(device_type=mel.device.type, enabled=False):
            mel = bn0(mel.float().transpose(1, 3)).transpose(1, 3)
        return self.audio_branch.tokens(mel, longer=longer)

    def audio_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """HTSAT patch tokens -> normalised [B, joint_dim] (the network ``runtime=openvino`` converts)."""
        out = self.audio_branch.forward_tokens(tokens)["embedding"]
        return F.normalize(rowwise(self.audio_projection, out).float(), dim=-1)

    def embed_waveforms(self, waves: torch.Tensor) -> torch.Tensor:
        """Non-fusion: [B, 480000] -> normalised [B, joint_dim]."""
        return self.audio_head(self.audio_tokens(waves))

    def embed_fusion(self, mel: torch.Tensor, longer: torch.Tensor) -> torch.Tensor:
        """Fusion: mel [B, 4, 1001, 64] (before bn0), longer [B] -> normalised [B, joint_dim]."""
        return self.audio_head(self.fusion_tokens(mel, longer))

    def embed_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.text_branch(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = rowwise(self.text_branch.pooler, hidden)  # RoBERTa pooler: tanh(dense(first token))
        return F.normalize(rowwise(self.text_projection, pooled).float(), dim=-1)


class ConvertedAudioHead:
    """A `LaionClapModel` whose ``audio_head`` runs as a converted graph (``encoders.runtime``); the
    frontends (mel, bn0, patch embed with the fusion's data-dependent branch) and the text tower stay
    in torch. Micro-batches are padded to a fixed size: a row's result then does not depend on the
    other rows, as the torch path's row-wise heads guarantee there."""

    needs_fixed_batches = True

    def __init__(self, model: LaionClapModel, head: Callable[[torch.Tensor], torch.Tensor]):
        self.model, self.head = model, head
        self.fusion_mel = model.fusion_mel

    def embed_waveforms(self, waves: torch.Tensor) -> torch.Tensor:
        return self.head(self.model.audio_tokens(waves))

    def embed_fusion(self, mel: torch.Tensor, longer: torch.Tensor) -> torch.Tensor:
        return self.head(self.model.fusion_tokens(mel, longer))

    def embed_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(input_ids, attention_mask)


# ----------------------------------------------------------------------------------------------------
# checkpoint files


def load_original_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of an original LAION-CLAP checkpoint, ``module.`` prefix removed.

    Loaded with ``torch.load(weights_only=True)``: the pickle may hold numpy scalars, which are
    allowed by name; anything else is refused with a CheckpointError.
    """
    obj = load_torch_file(
        path,
        "LAION-CLAP checkpoint",
        f"; use an original *.pt file from https://huggingface.co/{HUB_REPO}",
        allow_numpy=True,
    )
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: no tensor 'state_dict' inside; not a LAION-CLAP checkpoint")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _hint(model: LaionClapModel, state: dict[str, torch.Tensor]) -> str:
    """What the usual wrong-file mistakes look like, as advice appended to the key listing."""
    in_file = any(".patch_embed.mel_conv2d." in k for k in state)
    if in_file and not model.config.enable_fusion:
        return "\nIt is a fusion checkpoint: use encoder 'laion_clap_fusion' (enable_fusion=true)."
    if model.config.enable_fusion and not in_file:
        return "\nIt is a non-fusion checkpoint: use encoder 'laion_clap' (enable_fusion=false)."
    width = state.get("audio_branch.patch_embed.proj.weight")
    if width is not None and width.shape[0] != model.config.htsat.embed_dim:
        amodel = {96: "HTSAT-tiny", 128: "HTSAT-base"}.get(int(width.shape[0]), f"width {width.shape[0]}")
        return f"\nIts audio branch is {amodel}: set amodel='{amodel}' (music_* files are HTSAT-base)."
    return ""


def load_checkpoint_into(model: LaionClapModel, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load with the explicit LAION-CLAP key rules; CheckpointError lists every problem key."""
    state = dict(state)
    pos = state.pop(POSITION_IDS_KEY, None)
    if pos is not None and not torch.equal(pos.flatten(), torch.arange(pos.numel(), dtype=pos.dtype)):
        raise CheckpointError(
            f"{source}: {POSITION_IDS_KEY} is not 0..{pos.numel() - 1}; the text branch "
            "was trained with custom positions, which this loader does not support"
        )
    try:
        load_strict(model, state, source, known_unused=KNOWN_UNUSED)
    except CheckpointError as exc:
        raise CheckpointError(str(exc) + _hint(model, state)) from None


def load_text_side(text_model: str):
    """(RobertaTokenizer, RobertaConfig) from a hub id or local dir; CheckpointError when unavailable."""
    from transformers import RobertaConfig, RobertaTokenizer

    return load_text_tower(
        text_model,
        lambda m: (RobertaTokenizer.from_pretrained(m), RobertaConfig.from_pretrained(m)),
        hub_id="roberta-base",
    )


# ----------------------------------------------------------------------------------------------------
# the encoder


class ClapBackend(Protocol):
    """What `LaionClapEncoder` calls on its model: `LaionClapModel` or `hf_clap.HFClapBackend`."""

    @property
    def needs_fixed_batches(self) -> bool: ...  # pad micro-batches to fixed shapes (also on CPU)

    @property
    def fusion_mel(self) -> HTKLogMel | None: ...  # the fusion frontend (None for non-fusion models)

    def embed_waveforms(self, waves: torch.Tensor) -> torch.Tensor: ...

    def embed_fusion(self, mel: torch.Tensor, longer: torch.Tensor) -> torch.Tensor: ...

    def embed_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor: ...


def _windows(wave: np.ndarray, policy: str) -> list[np.ndarray]:
    """Non-fusion long-audio policy: the 10 s windows whose embeddings make the clip's embedding."""
    n = wave.shape[0]
    if n <= WINDOW_SAMPLES:
        return [wave]
    if policy == "head":
        starts = [0]
    elif policy == "center":
        starts = [(n - WINDOW_SAMPLES) // 2]
    else:
        starts = end_aligned_starts(n, WINDOW_SAMPLES)
    return [wave[s : s + WINDOW_SAMPLES] for s in starts]


@dataclass
class LaionClapEncoder:
    """Retrieval embedder over a LAION-CLAP checkpoint (see module docstring for the policies)."""

    name: str
    config: LaionClapConfig
    checkpoint_path: Path
    device: torch.device
    dtype: torch.dtype
    batch_size: int
    model: ClapBackend = field(repr=False)  # LaionClapModel, or hf_clap.HFClapBackend (transformers port)
    tokenizer: Callable[..., Any] = field(repr=False)  # a transformers RoBERTa tokenizer
    sample_rate: int = SAMPLE_RATE
    dim: int = 512
    normalized: bool = True
    family: str = "laion_clap"  # "hf_clap": transformers.ClapModel weights, our frontend
    runtime: str = "torch"  # encoders.runtime: "openvino" runs the audio head as a converted graph
    max_seconds: float | None = None  # audio after this is not used (the index builder reads no more)
    # the original file API decodes with librosa.load: files are decoded to its length (audio.decode_rule)
    decode_length: ClassVar[str] = "librosa"
    _sha256: str | None = field(default=None, repr=False)

    # -- audio ---------------------------------------------------------------------------------------

    def _preprocess(self, waveforms: list[np.ndarray]) -> list[np.ndarray]:
        """Checked, cut to ``max_seconds``, int16 round-tripped."""
        keep = int(round(self.max_seconds * self.sample_rate)) if self.max_seconds else None
        out = []
        for i, w in enumerate(waveforms):
            w = np.asarray(w, dtype=np.float32)
            if w.ndim != 1 or w.shape[0] == 0:
                raise ConfigError(f"waveform {i}: expected a non-empty mono 1-D array, got shape {w.shape}")
            out.append(int16_roundtrip(w[:keep]))
        return out

    @property
    def _pad(self) -> bool:
        return self.device.type != "cpu" or self.model.needs_fixed_batches

    @torch.inference_mode()
    def _embed_windows(self, windows: list[np.ndarray]) -> torch.Tensor:
        out = torch.empty(len(windows), self.dim)
        for rows, real in micro_batches(len(windows), self.batch_size, self._pad):
            batch = torch.stack([repeat_pad(torch.from_numpy(windows[r]), WINDOW_SAMPLES) for r in rows])
            with autocast(self.device, autocast_dtype(self.runtime, self.dtype)):
                emb = self.model.embed_waveforms(batch.to(self.device))
            out[rows[0] : rows[0] + real] = emb[:real].float().cpu()
        return out

    @torch.inference_mode()
    def _embed_fusion(self, waves: list[np.ndarray]) -> torch.Tensor:
        out = torch.empty(len(waves), self.dim)
        mel_fn = self.model.fusion_mel
        assert mel_fn is not None, "enable_fusion models have a fusion frontend"
        for rows, real in micro_batches(len(waves), self.batch_size, self._pad):
            items = [fusion_input(torch.from_numpy(waves[r]).to(self.device), mel_fn) for r in rows[:real]]
            items += [items[-1]] * (len(rows) - real)
            mel = torch.stack([m for m, _ in items])
            longer = torch.tensor([lg for _, lg in items], device=self.device)
            with autocast(self.device, autocast_dtype(self.runtime, self.dtype)):
                emb = self.model.embed_fusion(mel, longer)
            out[rows[0] : rows[0] + real] = emb[:real].float().cpu()
        return out

    def embed(self, waveforms: list[np.ndarray]) -> np.ndarray:
        """float32 [N, 512], L2-normalised, for mono 48 kHz waveforms of any length."""
        if not waveforms:
            return np.zeros((0, self.dim), dtype=np.float32)
        waves = self._preprocess(waveforms)
        if self.config.enable_fusion:
            if self.config.long_audio == "head":
                waves = [w[:WINDOW_SAMPLES] for w in waves]
            return self._embed_fusion(waves).numpy()
        owners, windows = [], []
        for i, w in enumerate(waves):
            for win in _windows(w, self.config.long_audio):
                owners.append(i)
                windows.append(win)
        emb = self._embed_windows(windows).double()
        owner = torch.tensor(owners)
        summed = torch.zeros(len(waves), self.dim, dtype=torch.float64).index_add_(0, owner, emb)
        return F.normalize(summed, dim=-1).float().numpy()

    # -- text ----------------------------------------------------------------------------------------

    @torch.inference_mode()
    def embed_text(self, texts: list[str]) -> np.ndarray:
        """float32 [N, 512], L2-normalised, in the audio embedding space (RoBERTa, 77 tokens)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tok = self.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=TEXT_MAX_LENGTH, return_tensors="pt"
        )
        out = torch.empty(len(texts), self.dim)
        for rows, real in micro_batches(len(texts), self.batch_size, self._pad):
            idx = torch.tensor(rows)
            with autocast(self.device, self.dtype):
                emb = self.model.embed_tokens(
                    tok["input_ids"][idx].to(self.device), tok["attention_mask"][idx].to(self.device)
                )
            out[rows[0] : rows[0] + real] = emb[:real].float().cpu()
        return out.numpy()

    # -- identity ------------------------------------------------------------------------------------

    def fingerprint(self) -> dict:
        if self._sha256 is None:
            self._sha256 = checkpoint_sha256(self.checkpoint_path)
        c = self.config
        long_audio = {
            "mean": "mean of normalised embeddings of 10 s windows at hop 10 s, last window end-aligned, re-normalised",
            "head": "first 10 s",
            "center": "centred 10 s",
            "fusion": "fusion: global shrink + chunks at first/middle/last start of each third",
        }
        fp = {
            "name": self.name,
            "family": self.family,
            "checkpoint": self.checkpoint_path.name,
            "checkpoint_sha256": self._sha256,
            "amodel": c.amodel,
            "enable_fusion": c.enable_fusion,
            "text_model": os.path.basename(str(c.text_model).rstrip("/")),
            "sample_rate": self.sample_rate,
            "decode_length": self.decode_length,
            "window_samples": WINDOW_SAMPLES,
            "int16_roundtrip": True,
            "short_audio": "repeat-pad then zero-pad to 10 s",
            "max_seconds": self.max_seconds,
            "long_audio": f"{c.long_audio}: {long_audio[c.long_audio]}",
            "mel": {k: v for k, v in LAION_AUDIO.items()} | {"frontend": "torchlibrosa (slaney)"},
            "dim": self.dim,
            "normalized": True,
            "device": str(self.device),
            "runtime": self.runtime,
            "dtype": str(self.dtype).replace("torch.", ""),
            "batch_size": self.batch_size,
        }
        if c.enable_fusion:
            fp["fusion_mel"] = c.fusion_mel.describe() | {"frontend": "torchaudio-style (htk, no norm)"}
        return fp


def check_max_seconds(value: float | None) -> float | None:
    check_option("max_seconds", value, gt=0)
    if value is not None and float(value) < WINDOW_SAMPLES / SAMPLE_RATE:
        raise ConfigError(f"max_seconds={value} is shorter than the 10 s encoder window; use >= 10 or null")
    return None if value is None else float(value)


def encoder_precision(precision: str | None, device: torch.device) -> torch.dtype:
    dtype = resolve_precision(precision, device)
    if device.type == "cpu" and dtype == torch.float16:
        raise ConfigError("precision fp16 is not supported on CPU; use fp32 (default) or bf16")
    return dtype


def default_batch_size(batch_size: int | None, device: torch.device) -> int:
    return check_batch_size(batch_size or (32 if device.type == "cuda" else 8))


def load_laion_clap(
    name: str = "laion_clap",
    *,
    checkpoint: str | None = None,
    hub_repo: str = HUB_REPO,
    filename: str = "630k-audioset-best.pt",
    amodel: str = "HTSAT-tiny",
    enable_fusion: bool = False,
    text_model: str = "roberta-base",
    long_audio: str | None = None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    shrink_antialias: bool = False,
    device: str | None = None,
    runtime: str | None = "auto",
    precision: str | None = "auto",
    batch_size: int | None = None,
) -> LaionClapEncoder:
    """Build the encoder and load the checkpoint strictly (CheckpointError lists key problems).
    ``runtime``/``precision``: `rag_flamingo.encoders.runtime` (``auto`` precision is fp32 on the CPU:
    bf16 parity of these models is not measured)."""
    config = LaionClapConfig(
        amodel=amodel,
        enable_fusion=enable_fusion,
        text_model=text_model,
        long_audio=long_audio or ("fusion" if enable_fusion else "mean"),
        shrink_antialias=shrink_antialias,
    )
    dev = best_device(device)
    (runtime, dtype), size = runtime_choice(runtime, precision, dev, False), default_batch_size(batch_size, dev)
    path = resolve_checkpoint(
        CheckpointSource(path=checkpoint, repo_id=hub_repo, filename=filename), what=f"LAION-CLAP checkpoint ({name})"
    )
    tokenizer, text_config = load_text_side(text_model)
    model = LaionClapModel(config, text_config)
    load_checkpoint_into(model, load_original_state_dict(path), str(path))
    model.eval().to(dev)
    backend: ClapBackend = model
    sha256 = checkpoint_sha256(path) if runtime == "openvino" else None
    if sha256 is not None:
        with torch.no_grad():  # not inference_mode: its tensors cannot be traced
            example = model.audio_tokens(torch.zeros(1, WINDOW_SAMPLES))  # fusion makes the same layout
        head = openvino_net(Forward(model, "audio_head"), example, path, sha256, "laion_clap-audio_head", dtype)
        backend = ConvertedAudioHead(model, head)
    return LaionClapEncoder(
        name=name,
        config=config,
        checkpoint_path=path,
        device=dev,
        dtype=dtype,
        batch_size=size,
        model=backend,
        tokenizer=tokenizer,
        max_seconds=check_max_seconds(max_seconds),
        runtime=runtime,
        _sha256=sha256,
    )


@register_encoder("laion_clap", options=load_laion_clap)
def _laion_clap(**options: Any) -> LaionClapEncoder:
    """HTSAT-tiny non-fusion, ``630k-audioset-best.pt``."""
    return load_laion_clap(**({"name": "laion_clap"} | options))


@register_encoder("laion_clap_fusion", options=load_laion_clap)
def _laion_clap_fusion(**options: Any) -> LaionClapEncoder:
    """HTSAT-tiny fusion, ``630k-audioset-fusion-best.pt`` (Audio Flamingo 1's retrieval model)."""
    defaults: dict[str, Any] = {
        "name": "laion_clap_fusion",
        "filename": "630k-audioset-fusion-best.pt",
        "enable_fusion": True,
    }
    return load_laion_clap(**(defaults | options))


@register_encoder("laion_clap_music", options=load_laion_clap)
def _laion_clap_music(**options: Any) -> LaionClapEncoder:
    """HTSAT-base non-fusion, ``music_audioset_epoch_15_esc_90.14.pt`` (also: music_speech_*)."""
    defaults: dict[str, Any] = {
        "name": "laion_clap_music",
        "filename": "music_audioset_epoch_15_esc_90.14.pt",
        "amodel": "HTSAT-base",
    }
    return load_laion_clap(**(defaults | options))

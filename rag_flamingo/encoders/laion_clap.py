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
- mono float32 at 48 kHz, int16 round-trip (``rag_flamingo.audio.int16_roundtrip``);
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
fp32), CPU in fp32.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..audio import int16_roundtrip
from ..errors import CheckpointError, ConfigError
from .base import autocast, best_device, check_batch_size, micro_batches, register_encoder, resolve_precision
from .checkpoints import (CheckpointSource, checkpoint_sha256, load_strict, load_text_tower, load_torch_file,
                          resolve_checkpoint)
from .htsat import HTSAT, HTSATConfig
from .laion_fusion import FusionMelConfig, FusionPatchEmbed, HTKLogMel, fusion_input, repeat_pad, rowwise
from .mel import LogMel, LogMelConfig
from .windows import end_aligned_starts

logger = logging.getLogger(__name__)

HUB_REPO = "lukewys/laion_clap"
SAMPLE_RATE = 48000
WINDOW_SAMPLES = 480000  # 10 s
TEXT_MAX_LENGTH = 77
DEFAULT_MAX_SECONDS = 60.0  # audio after this is not used (None: all of it)

# The original ``model_configs/HTSAT-{tiny,base}.json`` audio settings (48 kHz, hop 480, fmax 14 kHz).
_LAION_AUDIO = dict(sample_rate=SAMPLE_RATE, window_size=1024, hop_size=480, mel_bins=64, fmin=50.0, fmax=14000.0)
AMODELS: dict[str, HTSATConfig] = {
    "HTSAT-tiny": HTSATConfig(**_LAION_AUDIO),
    "HTSAT-base": HTSATConfig(**_LAION_AUDIO, embed_dim=128, depths=(2, 2, 12, 2)),
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
            raise ConfigError(f"long_audio='{self.long_audio}' is not valid for a "
                              f"{'fusion' if self.enable_fusion else 'non-fusion'} model; use one of "
                              f"{LONG_AUDIO_POLICIES[self.enable_fusion]}")

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
        patch_embed = (FusionPatchEmbed(h.spec_size, h.patch_size, h.patch_stride, h.embed_dim)
                       if config.enable_fusion else None)
        self.audio_branch = HTSAT(h, patch_embed=patch_embed)
        self.audio_projection = _projection(h.num_features, config.joint_dim)
        self.text_branch = RobertaModel(text_config, add_pooling_layer=True)
        self.text_projection = _projection(text_config.hidden_size, config.joint_dim)
        self.logit_scale_a = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.logit_scale_t = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.fusion_mel = HTKLogMel(config.fusion_mel) if config.enable_fusion else None

    needs_fixed_batches = False  # batch-invariant as is (small-M steps run row-wise)

    def embed_waveforms(self, waves: torch.Tensor) -> torch.Tensor:
        """Non-fusion: [B, 480000] -> normalised [B, joint_dim]."""
        return F.normalize(rowwise(self.audio_projection, self.audio_branch(waves)["embedding"]).float(), dim=-1)

    def embed_fusion(self, mel: torch.Tensor, longer: torch.Tensor) -> torch.Tensor:
        """Fusion: mel [B, 4, 1001, 64] (before bn0), longer [B] -> normalised [B, joint_dim]."""
        bn0 = self.audio_branch.bn0
        with torch.autocast(device_type=mel.device.type, enabled=False):
            mel = bn0(mel.float().transpose(1, 3)).transpose(1, 3)
        out = self.audio_branch.forward_mel(mel, longer=longer)
        return F.normalize(rowwise(self.audio_projection, out["embedding"]).float(), dim=-1)

    def embed_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.text_branch(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = rowwise(self.text_branch.pooler, hidden)  # RoBERTa pooler: tanh(dense(first token))
        return F.normalize(rowwise(self.text_projection, pooled).float(), dim=-1)


# ----------------------------------------------------------------------------------------------------
# checkpoint files


def load_original_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of an original LAION-CLAP checkpoint, ``module.`` prefix removed.

    Loaded with ``torch.load(weights_only=True)``: the pickle may hold numpy scalars, which are
    allowed by name; anything else is refused with a CheckpointError.
    """
    obj = load_torch_file(path, "LAION-CLAP checkpoint",
                          f"; use an original *.pt file from https://huggingface.co/{HUB_REPO}", allow_numpy=True)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: no tensor 'state_dict' inside; not a LAION-CLAP checkpoint")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
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
        raise CheckpointError(f"{source}: {POSITION_IDS_KEY} is not 0..{pos.numel() - 1}; the text branch "
                              "was trained with custom positions, which this loader does not support")
    try:
        load_strict(model, state, source, known_unused=KNOWN_UNUSED)
    except CheckpointError as exc:
        raise CheckpointError(str(exc) + _hint(model, state)) from None


def load_text_side(text_model: str):
    """(RobertaTokenizer, RobertaConfig) from a hub id or local dir; CheckpointError when unavailable."""
    from transformers import RobertaConfig, RobertaTokenizer

    return load_text_tower(text_model, lambda m: (RobertaTokenizer.from_pretrained(m),
                                                  RobertaConfig.from_pretrained(m)), hub_id="roberta-base")


# ----------------------------------------------------------------------------------------------------
# the encoder


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
    return [wave[s:s + WINDOW_SAMPLES] for s in starts]


@dataclass
class LaionClapEncoder:
    """Retrieval embedder over a LAION-CLAP checkpoint (see module docstring for the policies)."""

    name: str
    config: LaionClapConfig
    checkpoint_path: Path
    device: torch.device
    dtype: torch.dtype
    batch_size: int
    model: nn.Module = field(repr=False)  # LaionClapModel, or HFClapBackend for transformers conversions
    tokenizer: object = field(repr=False)
    sample_rate: int = SAMPLE_RATE
    dim: int = 512
    normalized: bool = True
    family: str = "laion_clap"  # "hf_clap": transformers.ClapModel weights, our frontend
    max_seconds: float | None = None  # audio after this is not used (the index builder reads no more)
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
        return self.device.type != "cpu" or bool(getattr(self.model, "needs_fixed_batches", True))

    @torch.inference_mode()
    def _embed_windows(self, windows: list[np.ndarray]) -> torch.Tensor:
        out = torch.empty(len(windows), self.dim)
        for rows, real in micro_batches(len(windows), self.batch_size, self._pad):
            batch = torch.stack([repeat_pad(torch.from_numpy(windows[r]), WINDOW_SAMPLES) for r in rows])
            with autocast(self.device, self.dtype):
                emb = self.model.embed_waveforms(batch.to(self.device))
            out[rows[0]:rows[0] + real] = emb[:real].float().cpu()
        return out

    @torch.inference_mode()
    def _embed_fusion(self, waves: list[np.ndarray]) -> torch.Tensor:
        out = torch.empty(len(waves), self.dim)
        mel_fn = self.model.fusion_mel
        for rows, real in micro_batches(len(waves), self.batch_size, self._pad):
            items = [fusion_input(torch.from_numpy(waves[r]).to(self.device), mel_fn) for r in rows[:real]]
            items += [items[-1]] * (len(rows) - real)
            mel = torch.stack([m for m, _ in items])
            longer = torch.tensor([lg for _, lg in items], device=self.device)
            with autocast(self.device, self.dtype):
                emb = self.model.embed_fusion(mel, longer)
            out[rows[0]:rows[0] + real] = emb[:real].float().cpu()
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
        tok = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=TEXT_MAX_LENGTH,
                             return_tensors="pt")
        out = torch.empty(len(texts), self.dim)
        for rows, real in micro_batches(len(texts), self.batch_size, self._pad):
            idx = torch.tensor(rows)
            with autocast(self.device, self.dtype):
                emb = self.model.embed_tokens(tok["input_ids"][idx].to(self.device),
                                              tok["attention_mask"][idx].to(self.device))
            out[rows[0]:rows[0] + real] = emb[:real].float().cpu()
        return out.numpy()

    # -- identity ------------------------------------------------------------------------------------

    def fingerprint(self) -> dict:
        if self._sha256 is None:
            self._sha256 = checkpoint_sha256(self.checkpoint_path)
        c = self.config
        long_audio = {"mean": "mean of normalised embeddings of 10 s windows at hop 10 s, last window "
                              "end-aligned, re-normalised",
                      "head": "first 10 s",
                      "center": "centred 10 s",
                      "fusion": "fusion: global shrink + chunks at first/middle/last start of each third"}
        fp = {
            "name": self.name,
            "family": self.family,
            "checkpoint": self.checkpoint_path.name,
            "checkpoint_sha256": self._sha256,
            "amodel": c.amodel,
            "enable_fusion": c.enable_fusion,
            "text_model": os.path.basename(str(c.text_model).rstrip("/")),
            "sample_rate": self.sample_rate,
            "window_samples": WINDOW_SAMPLES,
            "int16_roundtrip": True,
            "short_audio": "repeat-pad then zero-pad to 10 s",
            "max_seconds": self.max_seconds,
            "long_audio": f"{c.long_audio}: {long_audio[c.long_audio]}",
            "mel": {k: v for k, v in _LAION_AUDIO.items()} | {"frontend": "torchlibrosa (slaney)"},
            "dim": self.dim,
            "normalized": True,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "batch_size": self.batch_size,
        }
        if c.enable_fusion:
            fp["fusion_mel"] = c.fusion_mel.describe() | {"frontend": "torchaudio-style (htk, no norm)"}
        return fp


def _max_seconds(value: float | None) -> float | None:
    if value is not None and float(value) < WINDOW_SAMPLES / SAMPLE_RATE:
        raise ConfigError(f"max_seconds={value} is shorter than the 10 s encoder window; use >= 10 or null")
    return None if value is None else float(value)


def _precision(precision: str | None, device: torch.device) -> torch.dtype:
    dtype = resolve_precision(precision, device)
    if device.type == "cpu" and dtype == torch.float16:
        raise ConfigError("precision fp16 is not supported on CPU; use fp32 (default) or bf16")
    return dtype


def _batch_size(batch_size: int | None, device: torch.device) -> int:
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
    precision: str | None = None,
    batch_size: int | None = None,
) -> LaionClapEncoder:
    """Build the encoder and load the checkpoint strictly (CheckpointError lists key problems)."""
    config = LaionClapConfig(amodel=amodel, enable_fusion=enable_fusion, text_model=text_model,
                             long_audio=long_audio or ("fusion" if enable_fusion else "mean"),
                             shrink_antialias=shrink_antialias)
    dev = best_device(device)
    dtype, size = _precision(precision, dev), _batch_size(batch_size, dev)
    path = resolve_checkpoint(CheckpointSource(path=checkpoint, repo_id=hub_repo, filename=filename),
                              what=f"LAION-CLAP checkpoint ({name})")
    tokenizer, text_config = load_text_side(text_model)
    model = LaionClapModel(config, text_config)
    load_checkpoint_into(model, load_original_state_dict(path), str(path))
    model.eval().to(dev)
    return LaionClapEncoder(name=name, config=config, checkpoint_path=path, device=dev,
                            dtype=dtype, batch_size=size, model=model, tokenizer=tokenizer,
                            max_seconds=_max_seconds(max_seconds))


@register_encoder("laion_clap")
def _laion_clap(**options) -> LaionClapEncoder:
    """HTSAT-tiny non-fusion, ``630k-audioset-best.pt``."""
    return load_laion_clap(**({"name": "laion_clap"} | options))


@register_encoder("laion_clap_fusion")
def _laion_clap_fusion(**options) -> LaionClapEncoder:
    """HTSAT-tiny fusion, ``630k-audioset-fusion-best.pt`` (Audio Flamingo 1's retrieval model)."""
    defaults = {"name": "laion_clap_fusion", "filename": "630k-audioset-fusion-best.pt", "enable_fusion": True}
    return load_laion_clap(**(defaults | options))


@register_encoder("laion_clap_music")
def _laion_clap_music(**options) -> LaionClapEncoder:
    """HTSAT-base non-fusion, ``music_audioset_epoch_15_esc_90.14.pt`` (also: music_speech_*)."""
    defaults = {"name": "laion_clap_music", "filename": "music_audioset_epoch_15_esc_90.14.pt",
                "amodel": "HTSAT-base"}
    return load_laion_clap(**(defaults | options))


# ----------------------------------------------------------------------------------------------------
# Hugging Face conversions (transformers.ClapModel): laion/clap-htsat-fused, laion/clap-htsat-unfused
#
# The model is transformers' port; the audio frontend is ours (the original's torchlibrosa mel for
# non-fusion, the torchaudio-style mel and deterministic chunks for fusion), because the HF numpy
# feature extractor crops/chunks at random and its mel differs in details from the original (measured
# in tests/test_encoders_laion_hf.py). So hf_clap_* embeddings follow the same policies as laion_clap*.

HF_REPOS = {"hf_clap_fused": "laion/clap-htsat-fused", "hf_clap_unfused": "laion/clap-htsat-unfused"}


class HFClapBackend(nn.Module):
    """``transformers.ClapModel`` behind the same three calls as ``LaionClapModel``."""

    needs_fixed_batches = True  # the port's fusion and heads run over the whole batch: pad to fixed shapes

    def __init__(self, clap, fusion_mel: FusionMelConfig = FusionMelConfig()):
        super().__init__()
        a = _LAION_AUDIO
        self.clap = clap
        self.enable_fusion = bool(clap.config.audio_config.enable_fusion)
        self.logmel = LogMel(LogMelConfig(sample_rate=a["sample_rate"], n_fft=a["window_size"],
                                          hop_length=a["hop_size"], n_mels=a["mel_bins"], fmin=a["fmin"],
                                          fmax=a["fmax"]))
        self.fusion_mel = HTKLogMel(fusion_mel) if self.enable_fusion else None

    def embed_waveforms(self, waves: torch.Tensor) -> torch.Tensor:
        """Non-fusion models: [B, 480000] -> normalised [B, 512]."""
        return self.clap.get_audio_features(input_features=self.logmel(waves)).pooler_output.float()

    def embed_fusion(self, mel: torch.Tensor, longer: torch.Tensor) -> torch.Tensor:
        return self.clap.get_audio_features(input_features=mel.float(), is_longer=longer[:, None]).pooler_output.float()

    def embed_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.clap.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output.float()


_HF_RENAMES = (("text_branch", "text_model"), ("audio_branch", "audio_model.audio_encoder"),
               ("attn", "attention.self"), ("self.proj", "output.dense"), ("mlp.fc1", "intermediate.dense"),
               ("mlp.fc2", "output.dense"), ("norm1", "layernorm_before"), ("norm2", "layernorm_after"),
               ("bn0", "batch_norm"), ("_projection.0.", "_projection.linear1."),
               ("_projection.2.", "_projection.linear2."))
# Original keys with no counterpart in transformers.ClapModel, by rule: the torchlibrosa frontend
# matrices (the port computes features outside the model), the token-semantic head, the derived
# shifted-window masks and the training-only MLPs.
_HF_DROPPED = re.compile(r"audio_branch\.(spectrogram_extractor|logmel_extractor|tscam_conv|head)\..*"
                         r"|.*\.attn_mask|(audio|text)_transform\..*")
# ClapModel buffers that the original file does not hold: derived, taken from the fresh model.
_HF_DERIVED = ("text_model.embeddings.position_ids", "text_model.embeddings.token_type_ids")


def hf_clap_config(amodel: str, enable_fusion: bool, text_config):
    """The ``transformers.ClapConfig`` of an original LAION-CLAP model."""
    from transformers import ClapConfig

    h = AMODELS[amodel]
    text = {k: getattr(text_config, k) for k in ("vocab_size", "hidden_size", "num_hidden_layers",
                                                  "num_attention_heads", "intermediate_size",
                                                  "max_position_embeddings", "type_vocab_size",
                                                  "layer_norm_eps", "pad_token_id", "bos_token_id",
                                                  "eos_token_id", "hidden_act")}
    audio = dict(patch_embeds_hidden_size=h.embed_dim, depths=list(h.depths), num_attention_heads=list(h.num_heads),
                 hidden_size=h.num_features, enable_fusion=enable_fusion,
                 fusion_type="aff_2d" if enable_fusion else None)
    return ClapConfig(text_config=text, audio_config=audio, projection_dim=512)


def convert_original_to_transformers(checkpoint: str | Path, text_model: str = "roberta-base",
                                     amodel: str = "HTSAT-tiny", enable_fusion: bool = False):
    """An original LAION-CLAP ``*.pt`` as a ``transformers.ClapModel`` (strict: every key accounted for).

    Same renaming as transformers' own conversion script, which however loads non-strictly.
    Save the result with ``model.save_pretrained(dir)`` (and the RoBERTa tokenizer next to it).
    """
    from transformers import ClapModel

    _, text_config = load_text_side(text_model)
    model = ClapModel(hf_clap_config(amodel, enable_fusion, text_config)).eval()
    original = load_original_state_dict(checkpoint)
    original.pop(POSITION_IDS_KEY, None)
    state: dict[str, torch.Tensor] = {}
    for key, value in original.items():
        if _HF_DROPPED.fullmatch(key):
            continue
        for old, new in _HF_RENAMES:
            key = key.replace(old, new)
        key = key.replace("attention.self_mask", "attn_mask")
        if ".qkv." in key:
            for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                state[key.replace("qkv", name)] = part
        else:
            state[key] = value
    fresh = model.state_dict()
    state.update({k: fresh[k] for k in _HF_DERIVED if k in fresh})
    load_strict(model, state, str(checkpoint))
    return model


def _hf_weights_file(source: str) -> Path:
    local = Path(os.path.expanduser(source))
    names = ("model.safetensors", "pytorch_model.bin")
    if local.is_dir():
        for name in names:
            if (local / name).is_file():
                return local / name
        raise CheckpointError(f"{local}: no model.safetensors or pytorch_model.bin (save_pretrained output expected)")
    last: Exception | None = None
    for name in names:
        try:
            return resolve_checkpoint(CheckpointSource(repo_id=source, filename=name), what=f"CLAP model {source}")
        except CheckpointError as exc:
            last = exc
    raise CheckpointError(f"{last} (hf_clap: `hf download {source}` fetches the whole model folder)")


def load_hf_clap(name: str = "hf_clap_unfused", *, model: str | None = None, long_audio: str | None = None,
                 max_seconds: float | None = DEFAULT_MAX_SECONDS, shrink_antialias: bool = False,
                 device: str | None = None, precision: str | None = None,
                 batch_size: int | None = None) -> LaionClapEncoder:
    """A LAION-CLAP conversion in ``transformers`` format (hub id or local ``save_pretrained`` dir)."""
    from transformers import AutoTokenizer, ClapModel

    dev = best_device(device)
    dtype, size = _precision(precision, dev), _batch_size(batch_size, dev)
    source = model or HF_REPOS.get(name, HF_REPOS["hf_clap_unfused"])
    weights = _hf_weights_file(source)
    try:
        clap = ClapModel.from_pretrained(str(weights.parent))
        tokenizer = AutoTokenizer.from_pretrained(str(weights.parent))
    except Exception as exc:
        raise CheckpointError(f"{weights.parent}: cannot load a transformers ClapModel + tokenizer "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                              f"`hf download {source}` fetches the complete folder") from exc
    fusion = bool(clap.config.audio_config.enable_fusion)
    widths = {v.embed_dim: k for k, v in AMODELS.items()}
    amodel = widths.get(clap.config.audio_config.patch_embeds_hidden_size, "HTSAT-tiny")
    config = LaionClapConfig(amodel=amodel, enable_fusion=fusion, text_model=source,
                             long_audio=long_audio or ("fusion" if fusion else "mean"),
                             shrink_antialias=shrink_antialias)
    backend = HFClapBackend(clap, config.fusion_mel)
    backend.eval().to(dev)
    return LaionClapEncoder(name=name, config=config, checkpoint_path=weights, device=dev,
                            dtype=dtype, batch_size=size, model=backend,
                            tokenizer=tokenizer, family="hf_clap", max_seconds=_max_seconds(max_seconds))


@register_encoder("hf_clap_fused")
def _hf_clap_fused(**options) -> LaionClapEncoder:
    """``laion/clap-htsat-fused`` through transformers.ClapModel."""
    return load_hf_clap(**({"name": "hf_clap_fused"} | options))


@register_encoder("hf_clap_unfused")
def _hf_clap_unfused(**options) -> LaionClapEncoder:
    """``laion/clap-htsat-unfused`` through transformers.ClapModel."""
    return load_hf_clap(**({"name": "hf_clap_unfused"} | options))

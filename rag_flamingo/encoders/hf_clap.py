"""LAION-CLAP through ``transformers.ClapModel``: the hub conversions ``laion/clap-htsat-fused`` and
``laion/clap-htsat-unfused`` (encoders ``hf_clap_fused`` / ``hf_clap_unfused``), and a strict converter
from an original LAION-CLAP ``*.pt`` to a ``ClapModel``.

The model is transformers' port; the audio frontend is the one of ``laion_clap`` (the original's
torchlibrosa mel for non-fusion, the torchaudio-style mel and deterministic chunks for fusion), because
the HF numpy feature extractor crops/chunks at random and its mel differs in details from the original
(measured in tests/test_encoders_laion.py). So ``hf_clap_*`` embeddings follow the same policies,
decode length included, as ``laion_clap*``: the encoder is ``laion_clap.LaionClapEncoder`` with this
module's ``HFClapBackend`` as its model.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoints import CheckpointSource, load_strict, resolve_checkpoint
from ..errors import CheckpointError
from .base import best_device, register_encoder
from .laion_clap import (
    AMODELS,
    DEFAULT_MAX_SECONDS,
    LAION_AUDIO,
    POSITION_IDS_KEY,
    LaionClapConfig,
    LaionClapEncoder,
    check_max_seconds,
    default_batch_size,
    encoder_precision,
    load_original_state_dict,
    load_text_side,
)
from .laion_fusion import FusionMelConfig, HTKLogMel
from .mel import LogMel, LogMelConfig

HF_REPOS = {"hf_clap_fused": "laion/clap-htsat-fused", "hf_clap_unfused": "laion/clap-htsat-unfused"}


class HFClapBackend(nn.Module):
    """``transformers.ClapModel`` behind the same three calls as ``LaionClapModel``."""

    needs_fixed_batches = True  # the port's fusion and heads run over the whole batch: pad to fixed shapes

    def __init__(self, clap, fusion_mel: FusionMelConfig | None = None):
        super().__init__()
        a = LAION_AUDIO
        self.clap = clap
        self.enable_fusion = bool(clap.config.audio_config.enable_fusion)
        self.logmel = LogMel(
            LogMelConfig(
                sample_rate=a["sample_rate"],
                n_fft=a["window_size"],
                hop_length=a["hop_size"],
                n_mels=a["mel_bins"],
                fmin=a["fmin"],
                fmax=a["fmax"],
            )
        )
        self.fusion_mel = HTKLogMel(fusion_mel or FusionMelConfig()) if self.enable_fusion else None

    def embed_waveforms(self, waves: torch.Tensor) -> torch.Tensor:
        """Non-fusion models: [B, 480000] -> normalised [B, 512]."""
        return self.clap.get_audio_features(input_features=self.logmel(waves)).pooler_output.float()

    def embed_fusion(self, mel: torch.Tensor, longer: torch.Tensor) -> torch.Tensor:
        return self.clap.get_audio_features(input_features=mel.float(), is_longer=longer[:, None]).pooler_output.float()

    def embed_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.clap.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output.float()


_HF_RENAMES = (
    ("text_branch", "text_model"),
    ("audio_branch", "audio_model.audio_encoder"),
    ("attn", "attention.self"),
    ("self.proj", "output.dense"),
    ("mlp.fc1", "intermediate.dense"),
    ("mlp.fc2", "output.dense"),
    ("norm1", "layernorm_before"),
    ("norm2", "layernorm_after"),
    ("bn0", "batch_norm"),
    ("_projection.0.", "_projection.linear1."),
    ("_projection.2.", "_projection.linear2."),
)
# Original keys with no counterpart in transformers.ClapModel, by rule: the torchlibrosa frontend
# matrices (the port computes features outside the model), the token-semantic head, the derived
# shifted-window masks and the training-only MLPs.
_HF_DROPPED = re.compile(
    r"audio_branch\.(spectrogram_extractor|logmel_extractor|tscam_conv|head)\..*"
    r"|.*\.attn_mask|(audio|text)_transform\..*"
)
# ClapModel buffers that the original file does not hold: derived, taken from the fresh model.
_HF_DERIVED = ("text_model.embeddings.position_ids", "text_model.embeddings.token_type_ids")


def hf_clap_config(amodel: str, enable_fusion: bool, text_config):
    """The ``transformers.ClapConfig`` of an original LAION-CLAP model."""
    from transformers import ClapConfig

    h = AMODELS[amodel]
    text = {
        k: getattr(text_config, k)
        for k in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
            "layer_norm_eps",
            "pad_token_id",
            "bos_token_id",
            "eos_token_id",
            "hidden_act",
        )
    }
    audio = dict(
        patch_embeds_hidden_size=h.embed_dim,
        depths=list(h.depths),
        num_attention_heads=list(h.num_heads),
        hidden_size=h.num_features,
        enable_fusion=enable_fusion,
        fusion_type="aff_2d" if enable_fusion else None,
    )
    return ClapConfig(text_config=text, audio_config=audio, projection_dim=512)


def convert_original_to_transformers(
    checkpoint: str | Path, text_model: str = "roberta-base", amodel: str = "HTSAT-tiny", enable_fusion: bool = False
):
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


def load_hf_clap(
    name: str = "hf_clap_unfused",
    *,
    model: str | None = None,
    long_audio: str | None = None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    shrink_antialias: bool = False,
    device: str | None = None,
    precision: str | None = None,
    batch_size: int | None = None,
) -> LaionClapEncoder:
    """A LAION-CLAP conversion in ``transformers`` format (hub id or local ``save_pretrained`` dir)."""
    from transformers import AutoTokenizer, ClapModel

    dev = best_device(device)
    dtype, size = encoder_precision(precision, dev), default_batch_size(batch_size, dev)
    source = model or HF_REPOS.get(name, HF_REPOS["hf_clap_unfused"])
    weights = _hf_weights_file(source)
    try:
        clap = ClapModel.from_pretrained(str(weights.parent))
        tokenizer = AutoTokenizer.from_pretrained(str(weights.parent))
    except Exception as exc:
        raise CheckpointError(
            f"{weights.parent}: cannot load a transformers ClapModel + tokenizer "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            f"`hf download {source}` fetches the complete folder"
        ) from exc
    audio_config: Any = clap.config.audio_config
    fusion = bool(audio_config.enable_fusion)
    widths = {v.embed_dim: k for k, v in AMODELS.items()}
    amodel = widths.get(audio_config.patch_embeds_hidden_size, "HTSAT-tiny")
    config = LaionClapConfig(
        amodel=amodel,
        enable_fusion=fusion,
        text_model=source,
        long_audio=long_audio or ("fusion" if fusion else "mean"),
        shrink_antialias=shrink_antialias,
    )
    backend = HFClapBackend(clap, config.fusion_mel)
    backend.eval().to(dev)
    return LaionClapEncoder(
        name=name,
        config=config,
        checkpoint_path=weights,
        device=dev,
        dtype=dtype,
        batch_size=size,
        model=backend,
        tokenizer=tokenizer,
        family="hf_clap",
        max_seconds=check_max_seconds(max_seconds),
    )


@register_encoder("hf_clap_fused", options=load_hf_clap)
def _hf_clap_fused(**options: Any) -> LaionClapEncoder:
    """``laion/clap-htsat-fused`` through transformers.ClapModel."""
    return load_hf_clap(**({"name": "hf_clap_fused"} | options))


@register_encoder("hf_clap_unfused", options=load_hf_clap)
def _hf_clap_unfused(**options: Any) -> LaionClapEncoder:
    """``laion/clap-htsat-unfused`` through transformers.ClapModel."""
    return load_hf_clap(**({"name": "hf_clap_unfused"} | options))

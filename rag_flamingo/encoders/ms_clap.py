"""Microsoft CLAP (Elizalde et al. 2022/2023) audio and text embedders, loading the released
``microsoft/msclap`` checkpoints strictly, without the ``msclap`` package (which pins numpy<2 and
transformers<5 and needs torchaudio).

Key layout = the original ``msclap.models.clap.CLAP``: ``audio_encoder.base.*`` (CNN14 for 2022,
``.htsat.*`` HTS-AT for 2023), ``audio_encoder.projection.*``, ``caption_encoder.base.*`` (a
``transformers`` BertModel (2022) / GPT2Model (2023); config + tokenizer from ``bert-base-uncased`` /
``gpt2`` or a local dir, weights from the checkpoint), ``caption_encoder.projection.*``, ``logit_scale``.
Legacy buffers that old transformers versions saved (GPT-2 ``attn.bias``/``attn.masked_bias``, BERT
``embeddings.position_ids``) are accepted as known-unused keys; anything else must match exactly.

Audio (``msclap.CLAPWrapper.load_audio_into_tensor`` except where it is random):
- mono float32 at 44.1 kHz, no normalisation (as the original); files are decoded to the length
  ``torchaudio.transforms.Resample`` gives (``decode_length = 'torchaudio'``, see
  ``rag_flamingo.audio.torchaudio_length``). The original flattens a multi-channel file (channels one
  after the other); here channels are averaged, as for every encoder;
- up to ``duration`` (5 s 2022 / 7 s 2023): repeat-tiled and cut to exactly ``duration`` (original);
- longer (policy ``long_audio='mean'``, recorded in the fingerprint): consecutive ``duration``
  windows starting at 0, the last one aligned to the end of the clip; the embedding is the mean of the
  L2-normalised window embeddings, re-normalised. ``'head'``: the first ``duration`` only. The
  original takes one random crop (``random.randrange``), so its embeddings of long files vary per call.
``embed``/``embed_text`` return L2-normalised float32 (the original returns unnormalised vectors;
``audio_projections``/``text_projections`` give those). Forward passes run in fixed-size micro-batches
(the last padded by repeating its last row), so an item's embedding does not depend on what else is in
the call; CUDA runs under fp16/bf16 autocast (log-mel frontend and bn0 in fp32), CPU in fp32.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import (
    CheckpointSource,
    checkpoint_sha256,
    load_strict,
    load_text_tower,
    read_state_dict,
    resolve_checkpoint,
)
from ..errors import ConfigError
from .base import (
    autocast,
    best_device,
    check_batch_size,
    check_option,
    micro_batches,
    register_encoder,
)
from .cnn14 import Cnn14, Cnn14Config
from .htsat import HTSAT, HTSAT_TINY, HTSATConfig
from .runtime import autocast_dtype, split_network
from .runtime import resolve as runtime_choice
from .windows import end_aligned_starts

logger = logging.getLogger(__name__)

HUB_REPO = "microsoft/msclap"
SAMPLE_RATE = 44100

# Buffers that transformers < 4.31 wrote into state dicts and current versions no longer hold.
LEGACY_TEXT_BUFFERS = (
    r"caption_encoder\.base\.h\.\d+\.attn\.(bias|masked_bias)",
    r"caption_encoder\.base\.embeddings\.position_ids",
)


@dataclass(frozen=True)
class MSClapConfig:
    """One released MS-CLAP model (values from msclap's ``configs/config_<version>.yml``)."""

    version: str
    filename: str
    audio_backbone: str  # "cnn14" | "htsat"
    duration: int  # seconds per clip
    text_model: str  # hub id or local dir: config + tokenizer of the text tower
    text_len: int
    out_emb: int
    fmax: float = 14000.0  # CNN14 only: MS-CLAP's HTSAT uses HTS-AT's own frontend config
    sample_rate: int = SAMPLE_RATE
    transformer_embed_dim: int = 768
    d_proj: int = 1024
    htsat: HTSATConfig = HTSAT_TINY  # the HTS-AT backbone (its num_features is out_emb)

    @property
    def clip_samples(self) -> int:
        return self.duration * self.sample_rate


MSCLAP_2022 = MSClapConfig("2022", "CLAP_weights_2022.pth", "cnn14", 5, "bert-base-uncased", 100, 2048)
MSCLAP_2023 = MSClapConfig("2023", "CLAP_weights_2023.pth", "htsat", 7, "gpt2", 77, 768)


# ----------------------------------------------------------------------------- model


class Projection(nn.Module):
    """linear1 -> GELU -> linear2 (+ residual of linear1) -> LayerNorm (dropout is eval-off)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_out, bias=False)
        self.linear2 = nn.Linear(d_out, d_out, bias=False)
        self.layer_norm = nn.LayerNorm(d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embed1 = self.linear1(x)
        return self.layer_norm(embed1 + self.linear2(F.gelu(embed1)))


class HTSATWrapper(nn.Module):
    """msclap's ``HTSATWrapper``: holds the backbone under ``htsat``; returns the 768-d embedding.
    ``frontend`` (log-mel, bn0, patch embed) and ``network`` (the Swin stages) split it where
    ``runtime=openvino`` converts it."""

    def __init__(self, config: HTSATConfig = HTSAT_TINY):
        super().__init__()
        self.htsat = HTSAT(config)

    def frontend(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.htsat.tokens(self.htsat.mel(waveform))

    def network(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.htsat.forward_tokens(tokens)["embedding"]

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.network(self.frontend(waveform))


class Cnn14Wrapper(Cnn14):
    """CNN14's embedding; ``frontend`` (log-mel, bn0) and ``network`` (the convolutions) as for HTS-AT."""

    def frontend(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.mel(waveform)

    def network(self, mel: torch.Tensor) -> torch.Tensor:
        return self.forward_mel(mel)["embedding"]

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.network(self.frontend(waveform))


class MSClapAudioEncoder(nn.Module):
    """waveform [B, clip_samples] at 44.1 kHz -> projected embedding [B, d_proj] (not normalised).
    ``forward`` is ``network(frontend(waveform))``: the frontend runs in torch, the network in the
    encoder's runtime (`rag_flamingo.encoders.runtime.split_network`)."""

    def __init__(self, config: MSClapConfig):
        super().__init__()
        self.base: HTSATWrapper | Cnn14Wrapper
        if config.audio_backbone == "htsat":
            self.base = HTSATWrapper(config.htsat)
        else:
            self.base = Cnn14Wrapper(
                Cnn14Config(sample_rate=config.sample_rate, fmax=config.fmax, out_emb=config.out_emb)
            )
        self.projection = Projection(config.out_emb, config.d_proj)
        self.clip_samples = config.clip_samples

    def frontend(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.base.frontend(waveform)

    def network(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.base.network(x))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.network(self.frontend(waveform))


def audio_runner(
    audio: MSClapAudioEncoder, runtime: str, dtype: torch.dtype, checkpoint: Path, sha256: str | None, name: str
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The audio encoder as ``runtime`` runs it (its network converted for openvino, cached beside the
    checkpoint under ``name``); ``sha256``: the checkpoint's, needed for openvino."""
    if runtime == "torch":
        return audio
    assert sha256 is not None, "a converted network is keyed by its checkpoint's sha256"
    example = torch.zeros(1, audio.clip_samples)
    return split_network(audio, runtime, dtype, example, checkpoint, sha256, name)


class MSClapTextEncoder(nn.Module):
    """Text tower + projection. Pooling as msclap: GPT-2 -> hidden state at the last token whose id is
    not 0 (msclap counts ``input_ids != 0``; id 0 is the pad token '!'), BERT -> the [CLS] state."""

    def __init__(self, text_config, d_proj: int):
        super().__init__()
        from transformers import AutoModel

        self.kind = "gpt" if text_config.model_type == "gpt2" else "cls"
        self.base = AutoModel.from_config(text_config)
        self.projection = Projection(text_config.hidden_size, d_proj)

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.base(**tokens)[0]
        if self.kind == "gpt":
            last = torch.ne(tokens["input_ids"], 0).sum(-1) - 1
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        else:
            pooled = hidden[:, 0, :]
        return self.projection(pooled)


class MSClapModel(nn.Module):
    def __init__(self, config: MSClapConfig, text_config=None):
        super().__init__()
        self.config = config
        self.audio_encoder = MSClapAudioEncoder(config)
        self.caption_encoder = MSClapTextEncoder(text_config, config.d_proj) if text_config is not None else None
        self.logit_scale = nn.Parameter(torch.ones([]) * np.log(1 / 0.07))


# ----------------------------------------------------------------------------- text side


def text_config_and_tokenizer(text_model: str, hub_id: str) -> tuple[Any, Callable[..., Any]]:
    """(config, tokenizer) of the text tower from a hub id or a local dir (``hub_id``: the released one);
    CheckpointError with the fix when unavailable."""
    from transformers import AutoConfig, AutoTokenizer

    config, tokenizer = load_text_tower(
        text_model,
        lambda m: (AutoConfig.from_pretrained(m), AutoTokenizer.from_pretrained(m)),
        hub_id,
        note="; or build the encoder with with_text=False",
    )
    if config.model_type == "gpt2":
        tokenizer.add_special_tokens({"pad_token": "!"})
    return config, tokenizer


# ----------------------------------------------------------------------------- windows and batches


def repeat_pad(wave: np.ndarray, length: int) -> np.ndarray:
    """msclap: tile ``ceil(length/len)`` times and cut to ``length`` (for len <= length)."""
    reps = int(np.ceil(length / wave.shape[0]))
    return np.tile(wave, reps)[:length]


def crop_starts(num_samples: int, length: int, policy: str) -> list[int]:
    """Start samples of the ``length`` crops taken from a clip longer than ``length``."""
    if policy == "head":
        return [0]
    if policy != "mean":
        raise ConfigError(f"long_audio must be 'mean' or 'head', got {policy!r}")
    return end_aligned_starts(num_samples, length)


def clip_crops(wave: np.ndarray, length: int, policy: str) -> list[np.ndarray]:
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    if wave.shape[0] == 0:
        raise ConfigError("cannot embed an empty waveform")
    if wave.shape[0] <= length:
        return [repeat_pad(wave, length)]
    return [wave[s : s + length] for s in crop_starts(wave.shape[0], length, policy)]


def run_batched(fn, items: list[np.ndarray], batch_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Apply ``fn`` (tensor [b, ...] -> [b, d]) over equal-shape numpy items in fixed-size micro-batches
    (``base.micro_batches``), under autocast to ``dtype``."""
    outs = []
    for rows, real in micro_batches(len(items), batch_size):
        x = torch.from_numpy(np.stack([items[i] for i in rows])).to(device)
        with torch.inference_mode(), autocast(device, dtype):
            outs.append(fn(x)[:real].float().cpu())
    return torch.cat(outs)


# ----------------------------------------------------------------------------- encoder


class MSClapEncoder:
    """Retrieval encoder over an ``MSClapModel`` (see the module docstring for the policies)."""

    normalized = True
    sample_rate = SAMPLE_RATE
    decode_length = "torchaudio"  # msclap resamples files with torchaudio (audio.decode_rule)

    def __init__(
        self,
        config: MSClapConfig,
        checkpoint: str | None = None,
        hub_repo: str = HUB_REPO,
        filename: str | None = None,
        text_model: str | None = None,
        with_text: bool = True,
        long_audio: str = "mean",
        max_seconds: float | None = None,
        batch_size: int = 16,
        device: str | None = None,
        runtime: str | None = "auto",
        precision: str | None = "auto",
        name: str | None = None,
    ):
        released_text_model = config.text_model
        if text_model:
            config = replace(config, text_model=text_model)
        self.config = config
        self.name = name or f"ms_clap_{config.version}"
        self.dim = config.d_proj
        self.long_audio = long_audio
        crop_starts(2, 1, long_audio)  # validate the policy early
        # audio after max_seconds is not used (None: all of it); the index builder reads only that much
        check_option("max_seconds", max_seconds, gt=0)  # null: all of it
        self.max_seconds = float(max_seconds) if max_seconds is not None else None
        self.batch_size = check_batch_size(batch_size)
        self.source = CheckpointSource(checkpoint, hub_repo, filename or config.filename)
        self.checkpoint_path = resolve_checkpoint(self.source, f"MS-CLAP {config.version} checkpoint")
        self.tokenizer: Callable[..., Any] | None  # a transformers tokenizer; None without the text tower
        text_config, self.tokenizer = (
            text_config_and_tokenizer(config.text_model, released_text_model) if with_text else (None, None)
        )
        self.model = MSClapModel(config, text_config)
        unused = [] if with_text else [r"caption_encoder\..*"]
        load_strict(
            self.model,
            read_state_dict(self.checkpoint_path),
            str(self.checkpoint_path),
            known_unused=(*LEGACY_TEXT_BUFFERS, *unused),
        )
        self.device = best_device(device)
        # `encoders.runtime`; precision auto stays fp32 on the CPU (bf16 parity not measured for MS-CLAP)
        self.runtime, self.dtype = runtime_choice(runtime, precision, self.device, auto_bf16=False)
        self.model.eval().to(self.device)
        self._sha256: str | None = checkpoint_sha256(self.checkpoint_path) if self.runtime == "openvino" else None
        self.audio = audio_runner(
            self.model.audio_encoder, self.runtime, self.dtype, self.checkpoint_path, self._sha256, self.name
        )

    # -- audio
    def crops(self, wave: np.ndarray) -> list[np.ndarray]:
        """The ``clip_seconds`` crops embedded for one waveform (repeat-padded or policy windows)."""
        if self.max_seconds:
            wave = np.asarray(wave).reshape(-1)[: int(round(self.max_seconds * self.sample_rate))]
        return clip_crops(wave, self.config.clip_samples, self.long_audio)

    def audio_projections(self, waveforms: list[np.ndarray]) -> torch.Tensor:
        """The original's (unnormalised) projected embedding of every crop, [total crops, d_proj]
        (``crops(w)`` per waveform, in order)."""
        return self._project([c for w in waveforms for c in self.crops(w)])

    def _project(self, crops: list[np.ndarray]) -> torch.Tensor:
        return run_batched(self.audio, crops, self.batch_size, self.device, autocast_dtype(self.runtime, self.dtype))

    def embed(self, waveforms: list[np.ndarray]) -> np.ndarray:
        """float32 [N, d_proj], L2-normalised; long clips pooled by ``long_audio``."""
        if not waveforms:
            return np.zeros((0, self.dim), np.float32)
        per_clip = [self.crops(w) for w in waveforms]
        crops = F.normalize(self._project([c for clip in per_clip for c in clip]), dim=-1)
        pooled = torch.stack([part.mean(0) for part in torch.split(crops, [len(c) for c in per_clip])])
        return F.normalize(pooled, dim=-1).numpy().astype(np.float32)

    # -- text
    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """msclap ``preprocess_text``: GPT-2 texts get ' <|endoftext|>' appended; padded to text_len
        (truncated there too: the original fails on longer texts)."""
        encoder, tokenizer = self.model.caption_encoder, self.tokenizer
        if encoder is None or tokenizer is None:
            raise ConfigError(f"{self.name} was built with with_text=False")
        if encoder.kind == "gpt":
            texts = [t + " <|endoftext|>" for t in texts]
        tok = tokenizer(
            texts,
            add_special_tokens=True,
            max_length=self.config.text_len,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        )
        keys = ["input_ids", "attention_mask"] + (["token_type_ids"] if "token_type_ids" in tok else [])
        return {k: tok[k] for k in keys}

    def text_projections(self, texts: list[str]) -> torch.Tensor:
        """The original's (unnormalised) text embeddings [N, d_proj]."""
        tok = self.tokenize(texts)
        encoder = self.model.caption_encoder
        assert encoder is not None  # tokenize raised ConfigError otherwise
        outs = []
        for rows, real in micro_batches(len(texts), self.batch_size):
            idx = torch.tensor(rows)
            batch = {k: v[idx].to(self.device) for k, v in tok.items()}
            with torch.inference_mode(), autocast(self.device, self.dtype):
                outs.append(encoder(batch)[:real].float().cpu())
        return torch.cat(outs) if outs else torch.zeros((0, self.dim))

    def embed_text(self, texts: list[str]) -> np.ndarray:
        return F.normalize(self.text_projections(list(texts)), dim=-1).numpy().astype(np.float32)

    # -- identity
    def fingerprint(self) -> dict:
        if self._sha256 is None:
            self._sha256 = checkpoint_sha256(self.checkpoint_path)
        c = self.config
        return {
            "name": self.name,
            "family": "ms_clap",
            "version": c.version,
            "checkpoint": self.source.describe(),
            "checkpoint_sha256": self._sha256,
            "dim": self.dim,
            "sample_rate": c.sample_rate,
            "decode_length": self.decode_length,
            "clip_seconds": c.duration,
            "short_audio": "repeat-tile to clip_seconds (msclap)",
            "long_audio": {
                "mean": "mean of L2-normalised consecutive clip_seconds windows (last aligned "
                "to the end), re-normalised",
                "head": "first clip_seconds",
            }[self.long_audio],
            "max_seconds": self.max_seconds,
            "normalization": "none (float32 as decoded); output L2-normalised",
            "audio_backbone": c.audio_backbone,
            "text_model": c.text_model,
            "text_len": c.text_len,
            "runtime": self.runtime,
            "precision": str(self.dtype),
        }


def _factory(config: MSClapConfig):
    def build(**options) -> MSClapEncoder:
        return MSClapEncoder(config, **options)

    return build


register_encoder("ms_clap_2022", options=MSClapEncoder)(_factory(MSCLAP_2022))
register_encoder("ms_clap_2023", options=MSClapEncoder)(_factory(MSCLAP_2023))

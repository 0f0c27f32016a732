"""Test-only access to the original CLAP packages (installed with --no-deps from
requirements-test-oracles.txt) so parity tests can compare against them.

The originals cannot be imported on our stack as-is:
``msclap/__init__.py`` imports ``torchaudio`` (not installable beside CPU torch 2.13). Here, and only
here, a minimal stand-in ``torchaudio`` module is put in ``sys.modules`` before importing msclap;
its ``load``/``Resample`` use soundfile/soxr so the wrapper's file-list API works in benchmarks.
``Resample`` returns torchaudio's length (its expression, evaluated with torch: gcd-reduced rates,
``ceil`` of the float32 quotient; the last sample zero when soxr gives one fewer), so short resampled
files are tiled as the original tiles them; its values are soxr's, not torchaudio's sinc filter.
Library code never does this.

Each ``require_*`` helper calls ``pytest.skip`` with the reason when the oracle is not importable.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import math
import sys
import types
from pathlib import Path

import numpy as np
import torch


def _fake_torchaudio() -> types.ModuleType:
    import soundfile as sf
    import soxr

    ta = types.ModuleType("torchaudio")
    ta.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
    ta.__oracle_shim__ = True

    def load(path, *args, **kwargs):
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return torch.from_numpy(np.ascontiguousarray(data.T)), sr

    class Resample(torch.nn.Module):
        def __init__(self, orig_freq, new_freq, *args, **kwargs):
            super().__init__()
            self.orig, self.new = int(orig_freq), int(new_freq)

        def forward(self, wave):
            g = math.gcd(self.orig, self.new)
            # torchaudio.functional._apply_sinc_resample_kernel's output length
            size = int(torch.ceil(torch.as_tensor((self.new // g) * wave.shape[-1] / (self.orig // g))).long())
            out = np.zeros((wave.shape[0], size), np.float32)
            for i, ch in enumerate(wave):
                res = soxr.resample(ch.numpy(), self.orig, self.new, quality="HQ")[:size]
                out[i, : res.shape[0]] = res
            return torch.from_numpy(out)

    transforms = types.ModuleType("torchaudio.transforms")
    transforms.Resample = Resample
    ta.load = load
    ta.transforms = transforms
    return ta


def import_msclap():
    """Return the ``msclap`` package (with the torchaudio shim), or raise ImportError."""
    import transformers  # noqa: F401  (import before the shim: transformers probes torchaudio's spec)
    from transformers.utils import import_utils

    import_utils.is_torchaudio_available()  # cached False before the shim exists
    if "torchaudio" not in sys.modules:
        try:
            importlib.import_module("torchaudio")
        except Exception:
            shim = _fake_torchaudio()
            sys.modules["torchaudio"] = shim
            sys.modules["torchaudio.transforms"] = shim.transforms
    import msclap  # noqa: F401
    import msclap.models.clap  # noqa: F401
    import msclap.models.mapper  # noqa: F401

    return msclap


def require_msclap():
    import pytest

    try:
        return import_msclap()
    except Exception as exc:  # ImportError, or the package's own import-time failures
        pytest.skip(
            f"msclap oracle not importable ({exc!r}); install requirements-test-oracles.txt "
            "with pip --no-deps (WITH_TEST_ORACLES=1 scripts/setup.sh)"
        )


def build_msclap_clap(version: str, text_dir: str | Path):
    """The original ``msclap.models.clap.CLAP`` for ``version`` ('2022', '2023', 'clapcap') with random
    weights, built from the package's own yaml config; ``text_dir`` is a local HF model dir whose name
    contains 'bert' or 'gpt' (msclap dispatches on the name)."""
    import yaml

    msclap = import_msclap()
    cfg_name = "clapcap" if version == "clapcap" else version
    cfg = yaml.safe_load((Path(msclap.__file__).parent / "configs" / f"config_{cfg_name}.yml").read_text())
    return msclap.models.clap.CLAP(
        audioenc_name=cfg["audioenc_name"],
        sample_rate=cfg["sampling_rate"],
        window_size=cfg["window_size"],
        hop_size=cfg["hop_size"],
        mel_bins=cfg["mel_bins"],
        fmin=cfg["fmin"],
        fmax=cfg["fmax"],
        classes_num=cfg["num_classes"],
        out_emb=cfg["out_emb"],
        text_model=str(text_dir),
        transformer_embed_dim=cfg["transformer_embed_dim"],
        d_proj=cfg["d_proj"],
    ).eval()


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every float parameter/buffer except the fixed frontend matrices random values, so a parity
    test exercises all weights (BatchNorm running stats included; variances kept positive)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point() or "spectrogram_extractor" in name or "logmel_extractor" in name:
                continue
            if name.endswith("attn_mask"):
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 2.0)
            elif t.dim() <= 1 and ("norm" in name or "bn" in name or name.endswith("ln_f.weight")):
                t.copy_(1.0 + 0.1 * torch.randn(t.shape, generator=g))
            else:
                fan_in = t[0].numel() if t.dim() > 1 else 1
                t.copy_(torch.randn(t.shape, generator=g) / max(fan_in, 1) ** 0.5)
    return module


_CORPUS = [
    "a dog barks loudly in the park",
    "rain falls on a tin roof",
    "birds sing! a car passes by",
    "people talk and laugh in a busy cafe",
    "an engine starts and idles",
    "water drips into a sink",
]


def make_text_tower_dir(root: str | Path, kind: str, hidden: int = 768, seed: int = 0) -> Path:
    """A local Hugging Face model dir with a tiny random GPT-2 / BERT of the real classes (hidden size
    ``hidden``, one layer) and a tokenizer trained here (byte-level BPE with '!' = id 0 as in GPT-2, or
    WordPiece with [PAD] = 0). The dir name contains 'gpt'/'bert', as msclap dispatches on it."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast, GPT2Config, GPT2Model, GPT2TokenizerFast

    out = Path(root) / ("tiny-gpt2" if kind == "gpt2" else "tiny-bert-uncased")
    if (out / "config.json").is_file():
        return out
    torch.manual_seed(seed)
    if kind == "gpt2":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(
            _CORPUS * 4,
            trainers.BpeTrainer(
                vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
            ),
        )
        tokenizer = GPT2TokenizerFast(
            tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
        )
        model = GPT2Model(
            GPT2Config(
                vocab_size=len(tokenizer),
                n_positions=128,
                n_embd=hidden,
                n_layer=1,
                n_head=12,
                bos_token_id=len(tokenizer) - 1,
                eos_token_id=len(tokenizer) - 1,
            )
        )
    else:
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.train_from_iterator(
            _CORPUS * 4,
            trainers.WordPieceTrainer(
                vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False
            ),
        )
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
        )
        tokenizer = BertTokenizerFast(tokenizer_object=tok)
        model = BertModel(
            BertConfig(
                vocab_size=len(tokenizer),
                hidden_size=hidden,
                num_hidden_layers=1,
                num_attention_heads=12,
                intermediate_size=256,
                max_position_embeddings=128,
            )
        )
    randomize_(model, seed)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def msclap_wrapper(clap_model, version: str, text_dir: str | Path):
    """A ``msclap.CLAPWrapper`` around an already-built oracle model (its __init__ would download
    weights). Only what its preprocessing/embedding methods read is set. transformers 5 removed
    ``encode_plus``; the instance gets one that forwards to ``__call__`` with the same arguments."""
    import argparse
    import re

    import yaml
    from transformers import AutoTokenizer

    msclap = import_msclap()
    cfg = yaml.safe_load((Path(msclap.__file__).parent / "configs" / f"config_{version}.yml").read_text())
    cfg["text_model"] = str(text_dir)
    w = object.__new__(msclap.CLAP)
    w.args = argparse.Namespace(**cfg)
    w.clap = clap_model
    w.use_cuda = False
    w.np_str_obj_array_pattern = re.compile(r"[SaUO]")
    w.default_collate_err_msg_format = "default_collate: {}"
    w.token_keys = (
        ["input_ids", "attention_mask"] if "gpt" in str(text_dir) else ["input_ids", "token_type_ids", "attention_mask"]
    )
    tok = AutoTokenizer.from_pretrained(str(text_dir))
    if "gpt" in str(text_dir):
        tok.add_special_tokens({"pad_token": "!"})
    tok.encode_plus = lambda text, **kw: tok(text, **kw)
    w.tokenizer = tok
    return w


# ---------------------------------------------------------------- AF1's clapcap preprocessing, from the spec text


def reference_af1_clips(wave: np.ndarray, sr: int = 44100) -> tuple[np.ndarray, np.ndarray]:
    """AF1 data.py as specified: 33.25 s cap, peak-normalise, zero-pad, int16 round-trip, 7 s windows
    with 5.25 s overlap, 16 clips with all-zero clips for unused windows; returns (clips, mask)."""
    window_length, window_overlap, max_num_window = 7.0, 5.25, 16
    duration = max_num_window * (window_length - window_overlap) + window_overlap
    wave = wave[: int(duration * sr)].astype(np.float32)
    if wave.min() >= 0:
        wave = 2 * wave / wave.max() - 1.0
    else:
        wave = wave / max(abs(wave.max()), abs(wave.min()))
    win, hop = int(window_length * sr), int((window_length - window_overlap) * sr)
    t = len(wave)
    n = 1 if t <= win else 16 if t >= 16 * win - 15 * (win - hop) else 1 + math.ceil((t - win) / hop)
    full = np.zeros(n * win - (n - 1) * (win - hop), np.float32)
    full[:t] = wave
    full = (np.clip(full, -1, 1) * 32767.0).astype(np.int16).astype(np.float32) / 32767.0
    clips = np.zeros((16, win), np.float32)
    for i in range(n):
        clips[i] = full[i * hop : i * hop + win]
    return clips, np.array([1.0] * n + [0.0] * (16 - n), np.float32)

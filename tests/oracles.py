"""Test-only access to the original CLAP packages (installed with --no-deps from
requirements-test-oracles.txt) so parity tests can compare against them.

The originals cannot be imported on our stack as-is (see /work/shared/reference/dependencies.md):
``msclap/__init__.py`` imports ``torchaudio`` (not installable beside CPU torch 2.13). Here, and only
here, a minimal stand-in ``torchaudio`` module is put in ``sys.modules`` before importing msclap;
its ``load``/``Resample`` use soundfile/soxr so the wrapper's file-list API works in benchmarks.
Library code never does this.

Each ``require_*`` helper calls ``pytest.skip`` with the reason when the oracle is not importable.
"""

from __future__ import annotations

import importlib
import importlib.machinery
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
            out = [soxr.resample(ch.numpy(), self.orig, self.new, quality="HQ") for ch in wave]
            return torch.from_numpy(np.stack(out).astype(np.float32))

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
        pytest.skip(f"msclap oracle not importable ({exc!r}); install requirements-test-oracles.txt "
                    "with pip --no-deps (WITH_TEST_ORACLES=1 scripts/setup.sh)")


def build_msclap_clap(version: str, text_dir: str | Path):
    """The original ``msclap.models.clap.CLAP`` for ``version`` ('2022', '2023', 'clapcap') with random
    weights, built from the package's own yaml config; ``text_dir`` is a local HF model dir whose name
    contains 'bert' or 'gpt' (msclap dispatches on the name)."""
    import yaml

    msclap = import_msclap()
    cfg_name = "clapcap" if version == "clapcap" else version
    cfg = yaml.safe_load((Path(msclap.__file__).parent / "configs" / f"config_{cfg_name}.yml").read_text())
    return msclap.models.clap.CLAP(
        audioenc_name=cfg["audioenc_name"], sample_rate=cfg["sampling_rate"], window_size=cfg["window_size"],
        hop_size=cfg["hop_size"], mel_bins=cfg["mel_bins"], fmin=cfg["fmin"], fmax=cfg["fmax"],
        classes_num=cfg["num_classes"], out_emb=cfg["out_emb"], text_model=str(text_dir),
        transformer_embed_dim=cfg["transformer_embed_dim"], d_proj=cfg["d_proj"],
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

"""Test-only access to the original ``laion_clap`` 1.1.7 package as a parity oracle (and for the bench).

The package cannot run on our stack as-is (it imports torchvision and torchaudio, neither installable
beside the CPU torch wheel, and loads hub names at import time), so, here and only here:
- ``torchvision`` is replaced in ``sys.modules`` by a stand-in when it is not importable. Only
  ``transforms.Resize`` is ever called (fusion: shrinking the whole-clip mel); it is reproduced as
  torchvision's tensor path does it (``F.interpolate(..., 'bilinear', align_corners=False, antialias)``;
  ``antialias`` follows ``RESIZE_ANTIALIAS``: False = torchvision < 0.17 and the HF port).
- ``laion_clap.training.data.torchaudio`` (None without torchaudio) is set to a stand-in whose
  ``MelSpectrogram``/``AmplitudeToDB`` are computed with **librosa** (htk mel, no norm, centred
  reflect padding, power 2; ``10*log10(max(x, 1e-10))``): an implementation independent of ours.
- The hub names the package loads at import/construction time (``roberta-base``, ``bert-base-uncased``,
  ``facebook/bart-base``) resolve to small local folders: the calls run with the working directory set
  to a folder that holds them (``transformers`` treats an existing local path first).
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

RESIZE_ANTIALIAS = {"value": False}
_TEXTS = [
    "a dog barks in the distance",
    "rain falls on a tin roof while thunder rolls",
    "a man speaks and a crowd laughs",
    "birds chirping in the morning",
    "an engine idles then revs",
    "music plays softly with a piano and strings",
    "water running from a faucet",
    "glass breaking",
]


def _module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    mod.__oracle_shim__ = True
    mod.__dict__.update(attrs)
    return mod


class _Resize:
    def __init__(self, size, *args, **kwargs):
        self.size = list(size)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(
            x[None], size=self.size, mode="bilinear", align_corners=False, antialias=RESIZE_ANTIALIAS["value"]
        )[0]


def _install_torchvision_shim() -> None:
    try:
        import torchvision  # noqa: F401

        return
    except Exception:
        pass
    unused = type("Unused", (), {"__init__": lambda self, *a, **k: None})
    transforms = _module(
        "torchvision.transforms",
        Resize=_Resize,
        Normalize=unused,
        Compose=unused,
        RandomResizedCrop=unused,
        InterpolationMode=unused,
        ToTensor=unused,
        CenterCrop=unused,
    )
    misc = _module("torchvision.ops.misc", FrozenBatchNorm2d=torch.nn.BatchNorm2d)
    ops = _module("torchvision.ops", misc=misc)
    datasets = _module("torchvision.datasets")
    tv = _module("torchvision", transforms=transforms, ops=ops, datasets=datasets)
    sys.modules.update(
        {
            "torchvision": tv,
            "torchvision.transforms": transforms,
            "torchvision.ops": ops,
            "torchvision.ops.misc": misc,
            "torchvision.datasets": datasets,
        }
    )


def _librosa_torchaudio() -> types.ModuleType:
    import librosa

    class MelSpectrogram:
        def __init__(
            self,
            sample_rate,
            n_fft,
            win_length,
            hop_length,
            center,
            pad_mode,
            power,
            norm,
            onesided,
            n_mels,
            f_min,
            f_max,
        ):
            self.kw = dict(
                sr=sample_rate,
                n_fft=n_fft,
                win_length=win_length,
                hop_length=hop_length,
                center=center,
                pad_mode=pad_mode,
                power=power,
                norm=norm,
                n_mels=n_mels,
                fmin=f_min,
                fmax=f_max,
                htk=True,
            )

        def to(self, device):
            return self

        def __call__(self, wave: torch.Tensor) -> torch.Tensor:
            y = wave.detach().cpu().numpy().astype(np.float64)
            return torch.from_numpy(librosa.feature.melspectrogram(y=y, **self.kw).astype(np.float32))

    class AmplitudeToDB:
        def __init__(self, top_db=None):
            assert top_db is None

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return 10.0 * torch.log10(torch.clamp(x, min=1e-10))

    return _module(
        "torchaudio_librosa_standin",
        transforms=_module(
            "torchaudio_librosa_standin.transforms", MelSpectrogram=MelSpectrogram, AmplitudeToDB=AmplitudeToDB
        ),
    )


# -- small local stand-ins for the hub names the package loads ------------------------------------------


def _train_bpe(out_dir: Path) -> None:
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(
        _TEXTS * 4, vocab_size=400, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save_model(str(out_dir))


def make_hub_standins(root: Path, text_layers: int = 1, seed: int = 0) -> Path:
    """Create ``root/roberta-base`` (tokenizer + a random RobertaModel of hidden size 768),
    ``root/bert-base-uncased`` and ``root/facebook/bart-base`` (tokenizers only). Returns root."""
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    roberta = root / "roberta-base"
    if not (roberta / "config.json").exists():
        _train_bpe(roberta)
        tok = RobertaTokenizer.from_pretrained(str(roberta))
        tok.save_pretrained(str(roberta))
        torch.manual_seed(seed)
        cfg = RobertaConfig(
            vocab_size=len(tok),
            hidden_size=768,
            num_hidden_layers=text_layers,
            num_attention_heads=12,
            intermediate_size=256,
            max_position_embeddings=514,
            type_vocab_size=1,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
        )
        RobertaModel(cfg).save_pretrained(str(roberta))
        _train_bpe(root / "facebook" / "bart-base")
        bert = root / "bert-base-uncased"
        bert.mkdir(parents=True, exist_ok=True)
        words = sorted({w for t in _TEXTS for w in t.split()})
        (bert / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    return root


def import_laion_clap(standins: Path):
    """The ``laion_clap`` package with the stand-ins above, or raise ImportError."""
    _install_torchvision_shim()
    with contextlib.chdir(standins):
        import laion_clap
        import laion_clap.training.data as data
    data.torchaudio = _librosa_torchaudio()
    return laion_clap


def require_laion_clap(standins: Path):
    import pytest

    try:
        return import_laion_clap(standins)
    except Exception as exc:
        pytest.skip(
            f"laion_clap oracle not importable ({exc!r}); install requirements-test-oracles.txt "
            "with pip --no-deps (WITH_TEST_ORACLES=1 scripts/setup.sh)"
        )


def build_clap_module(standins: Path, amodel: str = "HTSAT-tiny", enable_fusion: bool = False, seed: int = 0):
    """The stock ``laion_clap.CLAP_Module`` with every weight random (BatchNorm statistics included)."""
    laion_clap = import_laion_clap(standins)
    with contextlib.chdir(standins):
        module = laion_clap.CLAP_Module(enable_fusion=enable_fusion, amodel=amodel, device="cpu")
    randomize_clap_(module.model, seed=seed)
    return module.eval()


def save_original_checkpoint(module, path: Path) -> Path:
    """Write ``module.model``'s weights the way the released files are: a pickle with 'state_dict'
    (keys prefixed ``module.``), the transformers<4.31 ``position_ids`` buffer, and numpy scalars."""
    state = {f"module.{k}": v.clone() for k, v in module.model.state_dict().items()}
    n_pos = module.model.text_branch.config.max_position_embeddings
    state["module.text_branch.embeddings.position_ids"] = torch.arange(n_pos).expand(1, -1).clone()
    torch.save(
        {
            "epoch": 45,
            "name": "random-test-model",
            "state_dict": state,
            "best_metric": np.float64(0.5),
            "step": np.int64(1234),
        },
        path,
    )
    return path


class PinnedRandom:
    """Pin the original's random choices to our deterministic policies (monkeypatch helpers).

    ``crop``: 'head' -> ``np.random.randint`` returns 0; 'center' -> overflow // 2.
    ``choice``: the fusion chunks -> first of the front third, middle of the middle third, last of the back.
    """

    def __init__(self, monkeypatch, crop: str = "head"):
        self.calls = 0

        def randint(low, high=None, *a, **k):
            return 0 if crop == "head" else (high - 1) // 2

        def choice(seq, *a, **k):
            seq = list(seq)
            pick = (seq[0], seq[len(seq) // 2], seq[-1])[self.calls % 3]
            self.calls += 1
            return pick

        monkeypatch.setattr(np.random, "randint", randint)
        monkeypatch.setattr(np.random, "choice", choice)


def randomize_clap_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights that keep a deep random CLAP informative (distinct inputs -> distinct embeddings):
    weights ~ N(0, 1/fan_in), small biases, norm scales near 1, BatchNorm statistics random; the fixed
    frontend matrices and index buffers are left as built."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if (
                not t.is_floating_point()
                or "spectrogram_extractor" in name
                or "logmel_extractor" in name
                or name.endswith("attn_mask")
                or name.endswith("position_ids")
            ):
                continue
            r = torch.randn(t.shape, generator=g)
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(r * 0.5)
            elif name.endswith("bias") and t.dim() == 1:
                t.copy_(r * 0.02)
            elif t.dim() <= 1:
                t.copy_(1.0 + 0.1 * r) if name.endswith("weight") else t.copy_(r * 0.5)
            elif "embeddings" in name or "relative_position_bias_table" in name:
                t.copy_(r * 0.5)
            else:
                t.copy_(r / t[0].numel() ** 0.5)
    return model

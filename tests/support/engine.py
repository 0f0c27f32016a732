"""Shared pieces for the engine / predictor / evaluate tests (no tests here).

- `TinyWindowEncoder`: a real (tiny) audio front end as a torch module: up to 4 windows of 0.5 s
  per clip, log band energies of each window's spectrum, a seeded linear projection to 32 dims.
  It serves as the model's window encoder for query audio and, mean-pooled, as a retrieval encoder.
- `build_store`: an index store written with the store module's own writer functions (real FAISS,
  real shards), with random 32-d "clapcap" window features for the shots, as the acceptance asks.
- `tiny_flamingo`: the af1_tiny random-weight model through the model package's loader.
"""

from __future__ import annotations

import math
from pathlib import Path

import faiss
import numpy as np
import torch
from torch import nn

from rag_flamingo.audio import load_audio
from rag_flamingo.store.features import write_features
from rag_flamingo.store.index_store import IndexStore, write_store
from rag_flamingo.store.items import item_record
from rag_flamingo.store.records import StoreInfo
from rag_flamingo.store.shards import write_shard
from rag_flamingo.vectors import normalize_rows

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
AF1_TINY = FIXTURES / "af1_tiny"


class TinyWindowEncoder(nn.Module):
    name = "tiny_windows"
    normalized = True

    def __init__(
        self,
        sample_rate: int = 16000,
        windows: int = 4,
        window_seconds: float = 0.5,
        dim: int = 32,
        bands: int = 48,
        seed: int = 0,
    ):
        super().__init__()
        self.sample_rate, self.windows, self.dim, self.bands, self.seed = sample_rate, windows, dim, bands, seed
        self.window = int(window_seconds * sample_rate)
        self.max_seconds = windows * window_seconds
        gen = torch.Generator().manual_seed(seed)
        self.proj = nn.Linear(bands, dim)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(dim, bands, generator=gen) / math.sqrt(bands))
            self.proj.bias.copy_(torch.randn(dim, generator=gen) * 0.1)

    def _band_energies(self, frames: torch.Tensor) -> torch.Tensor:
        spec = torch.fft.rfft(frames * torch.hann_window(self.window), dim=-1).abs() ** 2
        edges = torch.linspace(0, spec.shape[-1], self.bands + 1).long()
        return torch.stack([spec[:, a:b].mean(-1) for a, b in zip(edges[:-1], edges[1:])], -1)

    @torch.no_grad()
    def window_features(self, waveforms):
        n = len(waveforms)
        silent = self.proj(torch.zeros(self.bands))
        feats = silent.repeat(n, self.windows, 1)
        mask = torch.zeros(n, self.windows)
        for i, wave in enumerate(waveforms):
            wave = torch.as_tensor(np.asarray(wave, np.float32))[: self.windows * self.window]
            count = max(1, math.ceil(wave.shape[0] / self.window))
            frames = torch.nn.functional.pad(wave, (0, count * self.window - wave.shape[0])).view(count, self.window)
            feats[i, :count] = self.proj(torch.log1p(self._band_energies(frames)))
            mask[i, :count] = 1.0
        return feats, mask

    def embed(self, waveforms) -> np.ndarray:
        feats, mask = self.window_features(waveforms)
        pooled = (feats * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return torch.nn.functional.normalize(pooled, dim=1).numpy().astype(np.float32)

    def fingerprint(self) -> dict:
        return {"name": self.name, "seed": self.seed, "sample_rate": self.sample_rate, "dim": self.dim}


def embed_rows(encoder, rows: list[dict], audio_root: Path) -> np.ndarray:
    max_seconds = getattr(encoder, "max_seconds", None)
    waves = [load_audio(Path(audio_root) / r["path"], encoder.sample_rate, max_seconds=max_seconds) for r in rows]
    return np.asarray(encoder.embed(waves), np.float32)


def build_store(
    root: Path,
    rows: list[dict],
    embeddings: np.ndarray,
    encoder_fingerprint: dict,
    features: bool = True,
    windows: int = 4,
    dim: int = 32,
    seed: int = 0,
) -> IndexStore:
    """A complete store of ``rows`` (real FAISS + shards), optionally with random window features."""
    root = Path(root)
    records = [item_record(r) for r in rows]
    write_shard(root, 0, embeddings, records)
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(normalize_rows(embeddings))
    info = StoreInfo(
        encoder=encoder_fingerprint,
        dim=int(embeddings.shape[1]),
        count=len(rows),
        metric="cosine",
        index={"type": "Flat"},
    )
    if features:
        rng = np.random.default_rng(seed)
        feats = rng.standard_normal((len(rows), windows, dim)).astype(np.float32)
        mask = np.ones((len(rows), windows), np.float32)
        mask[::3, -1] = 0.0  # some shots with a padded last window
        write_features(root, "clapcap", 0, feats, mask)
        info.features = {"clapcap": {"windows": windows, "dim": dim, "dtype": "float32"}}
    write_store(root, info, index, records)
    return IndexStore.open(root)


def tiny_flamingo():
    from rag_flamingo.model import load_af1_tokenizer, load_audio_flamingo

    tokenizer = load_af1_tokenizer(str(AF1_TINY / "tokenizer"))
    model = load_audio_flamingo(AF1_TINY / "checkpoint.pt", AF1_TINY / "config.json", tokenizer)
    return model, tokenizer


def demo_engine_parts(store_dir: Path) -> dict:
    """The demo set, a store of its train split in ``store_dir`` (tiny window encoder, random cached
    features) and the tiny AF1: what the engine tests start from."""
    from rag_flamingo.datasets import demo
    from rag_flamingo.datasets.manifest import read_manifest

    root = demo.ensure_demo()
    train = read_manifest(root / "train.jsonl")
    test = read_manifest(root / "test.jsonl")
    enc = TinyWindowEncoder()
    store = build_store(store_dir, train, embed_rows(enc, train, root), enc.fingerprint())
    model, tok = tiny_flamingo()
    return dict(root=root, train=train, test=test, enc=enc, store=store, model=model, tok=tok)

"""The encoder interface and registry.

An encoder turns decoded waveforms (mono float32 at ``sample_rate``) into one float32 vector per
clip. Every retrieval embedder (aisfx, LAION-CLAP, MS-CLAP, clapcap) implements this, registers a
factory under its config name, and is built by ``build_encoder(name, **options)``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Iterator, Protocol, runtime_checkable

import numpy as np
import torch

from ..errors import ConfigError


@runtime_checkable
class AudioEncoder(Protocol):
    name: str
    sample_rate: int
    dim: int
    normalized: bool  # True: rows are L2-normalised (cosine == inner product)

    def embed(self, waveforms: list[np.ndarray]) -> np.ndarray:
        """float32 [N, dim] for N mono waveforms at ``sample_rate`` (any lengths)."""
        ...

    def fingerprint(self) -> dict:
        """What makes embeddings comparable: name, checkpoint hash, preprocessing, crop policy."""
        ...


@runtime_checkable
class TextEncoder(Protocol):
    def embed_text(self, texts: list[str]) -> np.ndarray:
        """float32 [N, dim] in the same space as the audio embeddings."""
        ...


_REGISTRY: dict[str, Callable[..., AudioEncoder]] = {}


def register_encoder(name: str):
    """Decorator: register a factory ``(**options) -> AudioEncoder`` under ``name``."""

    def wrap(factory):
        _REGISTRY[name] = factory
        return factory

    return wrap


def available_encoders() -> list[str]:
    _import_builtin()
    return sorted(_REGISTRY)


def build_encoder(name: str, **options) -> AudioEncoder:
    _import_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown encoder '{name}'; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**options)


def _import_builtin() -> None:
    # Importing the package registers every built-in encoder.
    import importlib

    importlib.import_module("rag_flamingo.encoders")


def best_device(device: str | None = None) -> torch.device:
    """``device`` if given ('cpu', 'cuda', 'cuda:1', ...), else CUDA when present, else CPU."""
    if device and device != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA (encoders are small; fp16 is the fastest there), fp32 on CPU."""
    return torch.float16 if device.type == "cuda" else torch.float32


_PRECISIONS = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
               "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def resolve_precision(precision: str | None, device: torch.device) -> torch.dtype:
    """An encoder's ``precision`` option as the dtype to autocast to: None/'auto' -> ``autocast_dtype``,
    else fp32/fp16/bf16 (or float32/float16/bfloat16). float32 means no autocast."""
    if precision in (None, "auto"):
        return autocast_dtype(device)
    if precision not in _PRECISIONS:
        raise ConfigError(f"precision '{precision}' not understood; use auto, fp32, fp16 or bf16")
    return _PRECISIONS[precision]


def autocast(device: torch.device, dtype: torch.dtype):
    """Autocast to ``dtype`` on ``device``; disabled for float32."""
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)


def check_batch_size(size: int) -> int:
    size = int(size)
    if size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {size}")
    return size


def micro_batches(n: int, size: int, pad: bool = True) -> Iterator[tuple[list[int], int]]:
    """Row indices of each micro-batch of ``size`` rows, with its number of real rows. With ``pad``
    the last one is padded to ``size`` by repeating its last row: fixed shapes keep each row's result
    independent of the others (CUDA and BLAS kernels are chosen by shape)."""
    for start in range(0, n, size):
        rows = list(range(start, min(start + size, n)))
        yield (rows + [rows[-1]] * (size - len(rows)) if pad else rows), len(rows)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()

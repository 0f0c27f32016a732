"""Devices and dtypes: which device to run on, and dtype names as configs spell them.

One table of dtype names serves the encoders' ``precision`` option, the model's ``dtype`` option and
checkpoint conversion.
"""

from __future__ import annotations

from pathlib import Path
from typing import overload

import torch

from .errors import ConfigError

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def best_device(device: str | None = None) -> torch.device:
    """``device`` if given ('cpu', 'cuda', 'cuda:1', ...), else CUDA when present, else CPU."""
    if device and device != "auto":
        try:
            chosen = torch.device(device)
        except RuntimeError:
            raise ConfigError(f"device={device}: not a device; use auto, cpu, cuda, cuda:N or mps") from None
        if chosen.type == "cuda" and (
            not torch.cuda.is_available() or (chosen.index or 0) >= torch.cuda.device_count()
        ):
            raise ConfigError(f"device={device}: torch sees no such CUDA device here; use device=auto or device=cpu")
        if chosen.type == "mps" and not torch.backends.mps.is_available():
            raise ConfigError(f"device={device}: torch sees no MPS device here; use device=auto or device=cpu")
        return chosen
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA (encoders are small; fp16 is the fastest there), fp32 on CPU."""
    return torch.float16 if device.type == "cuda" else torch.float32


def model_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA (the AF1 language model overflows in fp16), fp32 on CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


@overload
def parse_dtype(name: str | torch.dtype | None, setting: str, auto: torch.dtype) -> torch.dtype: ...
@overload
def parse_dtype(name: str | torch.dtype | None, setting: str, auto: None = None) -> torch.dtype | None: ...
def parse_dtype(name: str | torch.dtype | None, setting: str, auto: torch.dtype | None = None) -> torch.dtype | None:
    """A dtype option: a ``torch.dtype``, a name of `DTYPES`, or None/'auto' -> ``auto``.
    Another name is a ConfigError naming ``setting``."""
    if isinstance(name, torch.dtype):
        return name
    if name in (None, "auto"):
        return auto
    if name not in DTYPES:
        raise ConfigError(f"{setting}={name!r} is not a dtype; use auto, fp32, bf16 or fp16")
    return DTYPES[name]


def resolve_precision(precision: str | None, device: torch.device) -> torch.dtype:
    """An encoder's ``precision`` option as the dtype to autocast to: None/'auto' -> ``autocast_dtype``,
    else fp32/fp16/bf16 (or float32/float16/bfloat16). float32 means no autocast."""
    return parse_dtype(precision, "precision", autocast_dtype(device))


def cpu_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (x86 AVX512-BF16 or AMX tiles, Arm BF16). Elsewhere
    bf16 is emulated and slower than fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own CPU query
    if any(getattr(torch.cpu, name, lambda: False)() for name in checks):
        return True
    try:  # Arm (and a torch without the query): the kernel's CPU flags
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16", "bf16"))


def autocast(device: torch.device, dtype: torch.dtype):
    """Autocast to ``dtype`` on ``device``; disabled for float32."""
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)

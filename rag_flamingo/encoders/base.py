"""The encoder interface and registry.

An encoder turns decoded waveforms (mono float32 at ``sample_rate``) into one float32 vector per
clip. Every retrieval embedder (aisfx, LAION-CLAP, MS-CLAP, clapcap) implements this, registers a
factory under its config name, and is built by ``build_encoder(name, **options)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

import numpy as np

from ..devices import autocast, autocast_dtype, best_device, resolve_precision  # noqa: F401 (the encoder API)
from ..errors import ConfigError, did_you_mean


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
_OPTIONS: dict[str, Callable] = {}  # name -> the callable whose keyword parameters are its options


def register_encoder(name: str, options: Callable | None = None):
    """Decorator: register a factory ``(**options) -> AudioEncoder`` under ``name``; ``options``: the
    class or loader whose keyword parameters are the options it accepts (an unknown one is refused
    with a "did you mean" before anything loads; None: the factory's own signature)."""

    def wrap(factory):
        _REGISTRY[name] = factory
        _OPTIONS[name] = options or factory
        return factory

    return wrap


def option_defaults(name: str) -> dict:
    """The options ``name`` takes and their defaults (what ``build_encoder(name)`` uses when unset)."""
    import inspect

    _import_builtin()
    if name not in _REGISTRY:
        return {}
    params = inspect.signature(_OPTIONS.get(name) or _REGISTRY[name]).parameters.values()
    return {p.name: p.default for p in params if p.default is not p.empty}


def check_options(name: str, options: dict) -> None:
    """Refuse an option the encoder does not take (``+encoder.chekpoint=...``), naming the ones it does."""
    import inspect

    target = _OPTIONS.get(name) or _REGISTRY[name]
    params = inspect.signature(target).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return  # takes anything: its own checks apply
    known = [p.name for p in params if p.default is not p.empty]  # the required ones its factory passes
    for key in options:
        if key == "runtime" and key not in known:
            raise ConfigError(
                f"encoder {name} runs in torch only: it takes no option 'runtime' "
                f"(the encoders with runtime/precision options: {', '.join(encoders_taking('runtime'))})"
            )
        if key not in known:
            hint = did_you_mean(key, known) or f"; it takes {', '.join(sorted(known))}"
            raise ConfigError(f"encoder {name} has no option {key!r}{hint}")


def encoders_taking(option: str) -> list[str]:
    """The registered encoders that take ``option``."""
    import inspect

    _import_builtin()
    return sorted(n for n in _REGISTRY if option in inspect.signature(_OPTIONS.get(n) or _REGISTRY[n]).parameters)


def available_encoders() -> list[str]:
    _import_builtin()
    return sorted(_REGISTRY)


def build_encoder(name: str, **options) -> AudioEncoder:
    _import_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown encoder '{name}'; available: {', '.join(sorted(_REGISTRY))}")
    check_options(name, options)
    return _REGISTRY[name](**options)


def _import_builtin() -> None:
    # Importing the package registers every built-in encoder.
    import importlib

    importlib.import_module("rag_flamingo.encoders")


def check_option(option: str, value, nullable: bool = True, **rule):
    """An encoder option checked against a range (`rag_flamingo.config.Range`: ``gt``, ``ge``, ``le``,
    ``whole``) before anything loads: ``check_option("max_seconds", v, gt=0)``. Returns ``value``."""
    from ..config import Range

    if value is None and nullable:
        return None
    problem = Range(**rule).problem(value) if value is not None else "must be set"
    if problem:
        null = " (or null)" if nullable else ""
        raise ConfigError(f"encoder option {option}={value}: {problem}{null}")
    return value


def check_batch_size(size: int) -> int:
    return int(check_option("batch_size", size, nullable=False, whole=True, ge=1))


def micro_batches(n: int, size: int, pad: bool = True) -> Iterator[tuple[list[int], int]]:
    """Row indices of each micro-batch of ``size`` rows, with its number of real rows. With ``pad``
    the last one is padded to ``size`` by repeating its last row: fixed shapes keep each row's result
    independent of the others (CUDA and BLAS kernels are chosen by shape)."""
    for start in range(0, n, size):
        rows = list(range(start, min(start + size, n)))
        yield (rows + [rows[-1]] * (size - len(rows)) if pad else rows), len(rows)

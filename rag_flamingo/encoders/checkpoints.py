"""Finding and loading released checkpoint files, strictly.

- ``resolve_checkpoint``: a local path, or a Hugging Face hub id + filename fetched through
  ``huggingface_hub`` into its cache. Offline (``HF_HUB_OFFLINE=1`` or no network) and not cached ->
  ``CheckpointError`` saying exactly what to download and where to put it.
- ``read_state_dict``: ``torch.load(weights_only=True)``, unwrapping ``{'model': ...}`` as the
  MS-CLAP/clapcap releases store it.
- ``load_strict``: like ``load_state_dict(strict=True)`` but with explicit, named exceptions for keys
  that the released files carry and we deliberately do not use (``known_unused``: regexes) — everything
  else missing, unexpected or mis-shaped is an error that lists the keys.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, TypeVar

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from ..paths import cache_root
from .base import file_sha256

log = logging.getLogger(__name__)
T = TypeVar("T")

_MAX_LISTED = 25


@dataclass(frozen=True)
class CheckpointSource:
    """Where a checkpoint comes from: ``path`` (local file) wins over ``repo_id`` + ``filename``."""

    path: str | None = None
    repo_id: str | None = None
    filename: str | None = None
    revision: str | None = None

    def describe(self) -> str:
        if self.path:
            return str(self.path)
        return f"hf://{self.repo_id}/{self.filename}" + (f"@{self.revision}" if self.revision else "")


def resolve_checkpoint(source: CheckpointSource, what: str = "checkpoint") -> Path:
    """Return a local file for ``source``; raise CheckpointError with the fix when it is unavailable."""
    if source.path:
        path = Path(os.path.expanduser(str(source.path)))
        if not path.is_file():
            hint = (f" It is released as {source.repo_id}/{source.filename} on the Hugging Face hub: "
                    f"`hf download {source.repo_id} {source.filename} --local-dir {path.parent}`"
                    if source.repo_id and source.filename else "")
            raise CheckpointError(f"{what}: file not found: {path}.{hint}")
        return path
    if not (source.repo_id and source.filename):
        raise CheckpointError(f"{what}: give either a local checkpoint path or a hub repo_id + filename")
    from ..hub import hf_download

    try:
        return hf_download(source.repo_id, source.filename, revision=source.revision)
    except CheckpointError as exc:
        raise CheckpointError(f"{what}: {exc} (a local file goes in the encoder option `checkpoint`, "
                              f"e.g. encoder.checkpoint=/path/to/{source.filename})") from exc.__cause__


def load_torch_file(path: str | Path, what: str = "torch checkpoint", hint: str = "", allow_numpy: bool = False,
                    mmap: bool = False):
    """``torch.load(weights_only=True)`` of a user-supplied file; ``allow_numpy`` also admits the numpy
    scalars some releases pickle (`numpy_safe_globals`). CheckpointError naming the file, plus ``hint``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found{hint}")
    try:
        with torch.serialization.safe_globals(numpy_safe_globals() if allow_numpy else []):
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a loadable {what} (torch.load with weights_only=True: "
                              f"{str(exc).splitlines()[0][:300]}){hint or '; is it the released file, fully downloaded?'}"
                              ) from exc


def read_state_dict(path: str | Path, inner_key: str | None = "model", mmap: bool = False) -> dict[str, torch.Tensor]:
    """Load a torch checkpoint safely and unwrap ``{inner_key: state_dict}`` when present
    (``mmap``: tensors stay backed by the file until used, for large checkpoints)."""
    obj = load_torch_file(path, mmap=mmap)
    if inner_key and isinstance(obj, Mapping) and inner_key in obj and isinstance(obj[inner_key], Mapping):
        obj = obj[inner_key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict (expected {{'{inner_key}': {{name: tensor}}}})")
    return dict(obj)


def load_text_tower(text_model: str, load: Callable[[str], T], hub_id: str, note: str = "") -> T:
    """``load(text_model)``: the tokenizer/config of a CLAP text tower from a hub id or a local dir (its
    weights come from the CLAP checkpoint). Unavailable -> CheckpointError saying how to get them;
    ``hub_id``: the released text model, named in the fix when ``text_model`` is a local path."""
    try:
        return load(text_model)
    except Exception as exc:
        local = text_model.startswith((os.sep, ".", "~"))
        fetch = f"hf download {hub_id if local else text_model} --include '*.json' --include '*.txt'"
        fetch += f" --local-dir {text_model}" if local else ""
        raise CheckpointError(
            f"text model '{text_model}': tokenizer/config not available ({type(exc).__name__}: "
            f"{str(exc).strip().split(chr(10))[0][:200]}). Fix: on a machine with network run `{fetch}`, or "
            f"set text_model to a local dir holding them (only the tokenizer and config are read: the weights "
            f"come from the CLAP checkpoint){note}.") from exc


def numpy_safe_globals() -> list:
    """What released pickles (LAION-CLAP, aisfx) may reference besides tensors, for
    ``torch.serialization.safe_globals``: numpy scalars (also under their numpy 1.x module path) and dtypes."""
    scalar = np._core.multiarray.scalar
    dtypes = {type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDGUSO"}
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *sorted(dtypes, key=str)]


def _listing(title: str, keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_MAX_LISTED])
    more = f" ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return f"{title} ({len(keys)}): {shown}{more}"


def key_mismatch(state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]
                 ) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, wrong-shape) keys of ``state_dict`` against ``expected`` key -> shape;
    wrong-shape entries read ``key: expected [..], found [..]``. All empty: an exact match."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [f"{k}: expected {list(shape)}, found {list(state_dict[k].shape)}"
              for k, shape in expected.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(shape)]
    return missing, unexpected, shapes


def load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str,
                known_unused: Iterable[str] = ()) -> list[str]:
    """Load ``state_dict`` into ``module`` with every key accounted for.

    ``known_unused``: regexes (full match) for keys present in the released file that this module
    deliberately does not hold (e.g. clapcap's GPT-2 decoder). Returns the list of such keys.
    Raises CheckpointError listing missing, unexpected and mis-shaped keys.
    """
    patterns = [re.compile(p) for p in known_unused]
    expected = module.state_dict()
    unused = [k for k in state_dict if k not in expected and any(p.fullmatch(k) for p in patterns)]
    missing, unexpected, shapes = key_mismatch({k: v for k, v in state_dict.items() if k not in unused},
                                               {k: tuple(v.shape) for k, v in expected.items()})
    if missing or unexpected or shapes:
        parts = [f"{source}: checkpoint keys do not match {type(module).__name__}"]
        if missing:
            parts.append(_listing("missing", missing))
        if unexpected:
            parts.append(_listing("unexpected", unexpected))
        if shapes:
            parts.append(_listing("wrong shape", shapes))
        parts.append("Is this the right file for this encoder (version/config)?")
        raise CheckpointError("\n".join(parts))
    module.load_state_dict({k: state_dict[k] for k in expected}, strict=True)
    if unused:
        log.info("%s: %d known unused keys not loaded (%s ...)", source, len(unused), sorted(unused)[0])
    return unused


def checkpoint_sha256(path: str | Path) -> str:
    """sha256 of a checkpoint file, cached by (real path, size, mtime) under the cache root."""
    path = Path(path).resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    store = cache_root() / "checkpoint_sha256.json"
    try:
        table = json.loads(store.read_text())
    except (OSError, ValueError):
        table = {}
    if key not in table:
        table[key] = file_sha256(path)
        try:
            store.parent.mkdir(parents=True, exist_ok=True)
            tmp = store.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(table, indent=0))
            tmp.replace(store)
        except OSError:  # read-only cache: hash again next time
            pass
    return table[key]

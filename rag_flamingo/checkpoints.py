"""Checkpoint files: finding them (local path or Hugging Face hub) and reading them safely and strictly.

Finding:
- ``resolve_checkpoint(CheckpointSource)``: a local file, or a hub repo id + filename.
- ``hf_download`` / ``pretrained_dir``: one hub file / the tokenizer+config files of a hub repo.
  The local Hugging Face cache is looked at first; a miss then costs one quick request
  (``HUB_TIMEOUT_S``, no retries), so an offline machine (``HF_HUB_OFFLINE=1`` or no network) gets a
  ``CheckpointError`` naming the ``hf download`` command within seconds instead of a minute of
  retries. Only when the hub answers does the real download start.

Reading:
- ``load_torch_file``: ``torch.load(weights_only=True)``; a pickle holding code or objects beyond
  tensors is refused as untrusted. ``read_state_dict``: that, or a ``.safetensors`` file, unwrapped
  from ``{'model': ...}`` as the MS-CLAP/clapcap releases store it.
- ``key_mismatch`` / ``load_strict``: every key accounted for; the deliberate exceptions are named
  regexes (``known_unused``), everything else missing, unexpected or mis-shaped is an error listing keys.
- ``checkpoint_sha256``: the file hash for fingerprints, cached by (path, size, mtime).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from numpy._core.multiarray import scalar as numpy_scalar
from torch import nn

from .errors import CheckpointError
from .hashing import file_sha256
from .paths import cache_root

log = logging.getLogger(__name__)
T = TypeVar("T")

_MAX_LISTED = 25
# seconds the one reachability request to the hub may take before the machine counts as offline;
# HF_HUB_ETAG_TIMEOUT set in the environment overrides it
HUB_TIMEOUT_S = 2.0
# what a tokenizer + config of a transformers text model is made of (the weights are never read)
TOKENIZER_FILES = ("*.json", "*.txt")
CONVERT_HINT = (
    "Fix: if you trust its source, re-save only its tensors, as a plain state_dict "
    "(torch.save({name: tensor, ...}, path)), or convert an AF1 checkpoint to safetensors with "
    "scripts/convert_checkpoint.py"
)


# ---------------------------------------------------------------------- finding
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

    @classmethod
    def parse(cls, spec: str | Path | Mapping | CheckpointSource) -> CheckpointSource:
        """A source from ``hf://repo/id/file[@revision]``, a local path, or a mapping of the fields."""
        if isinstance(spec, CheckpointSource):
            return spec
        if isinstance(spec, Mapping):
            return cls(**{k: spec.get(k) for k in ("path", "repo_id", "filename", "revision")})
        text = str(spec)
        if text.startswith("hf://"):
            where, _, revision = text[5:].partition("@")
            repo_id, _, filename = where.rpartition("/")
            return cls(repo_id=repo_id, filename=filename, revision=revision or None)
        return cls(path=text)


def resolve_checkpoint(
    source: CheckpointSource,
    what: str = "checkpoint",
    cache_dir: str | None = None,
    local_option: str | None = None,
) -> Path:
    """A local file for ``source``; CheckpointError with the fix when it is unavailable.
    ``local_option``: the config option that takes a local file instead, named in the hub error
    (None: an encoder's ``checkpoint``, under the section it is used from)."""
    if source.path:
        path = Path(os.path.expanduser(str(source.path)))
        if not path.is_file():
            hint = (
                f" It is released as {source.repo_id}/{source.filename} on the Hugging Face hub: "
                f"`hf download {source.repo_id} {source.filename} --local-dir {path.parent}`"
                if source.repo_id and source.filename
                else ""
            )
            raise CheckpointError(f"{what}: file not found: {path}.{hint}")
        return path
    if not (source.repo_id and source.filename):
        raise CheckpointError(f"{what}: give either a local checkpoint path or a hub repo_id + filename")
    try:
        return hf_download(source.repo_id, source.filename, cache_dir=cache_dir, revision=source.revision)
    except CheckpointError as exc:
        where = (
            f"the option `{local_option}`, e.g. {local_option}=/path/to/{source.filename}"
            if local_option
            else "the encoder's `checkpoint` option of the section it is used from: encoder.checkpoint, "
            "features_encoder.checkpoint (build_index features=) or model.audio_encoder.checkpoint"
        )
        raise CheckpointError(f"{what}: {exc} (a local file goes in {where})") from exc.__cause__


def offline_help(
    repo_id: str, filename: str | None = None, revision: str | None = None, include: Iterable[str] = ()
) -> str:
    """Why a hub file is unavailable and the `hf download` command that fixes it."""
    from huggingface_hub import constants

    what = f"{repo_id}/{filename}" if filename else repo_id
    cmd = " ".join(
        [
            "hf download",
            repo_id,
            *([filename] if filename else []),
            *(f"--include '{p}'" for p in include),
            *([f"--revision {revision}"] if revision else []),
        ]
    )
    return (
        f"'{what}' is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and the hub "
        f"({constants.ENDPOINT}) cannot be reached (HF_HUB_OFFLINE={int(bool(constants.HF_HUB_OFFLINE))}). "
        f"Fix: on a machine with internet run `{cmd}` (it fills the cache; copy that cache here or point "
        f"HF_HUB_CACHE at it), or download the file{'s' if not filename else ''} and pass the local path "
        f"instead of the hub id."
    )


def _hub_timeout() -> float:
    return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or HUB_TIMEOUT_S)


def check_hub(
    repo_id: str, filename: str | None = None, revision: str | None = None, include: Iterable[str] = ()
) -> None:
    """One request, no retries: raise CheckpointError unless the hub answers that ``repo_id``
    (and ``filename``) exist. Offline mode raises without a request."""
    from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    if constants.HF_HUB_OFFLINE:
        raise CheckpointError(offline_help(repo_id, filename, revision, include))
    try:
        if filename:
            get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision), timeout=_hub_timeout())
        else:
            HfApi().model_info(repo_id, revision=revision, timeout=_hub_timeout())
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as exc:
        raise CheckpointError(
            f"'{repo_id}{'/' + filename if filename else ''}' is not on the Hugging Face hub "
            f"or not accessible ({type(exc).__name__}); check the name, or log in with "
            f"`hf auth login` for a gated repository"
        ) from exc
    except Exception as exc:  # connection refused, DNS, timeout, HTTP 5xx: the hub is not usable now
        raise CheckpointError(f"{offline_help(repo_id, filename, revision, include)} [{_first_line(exc)}]") from exc


def hf_download(repo_id: str, filename: str, cache_dir: str | None = None, revision: str | None = None) -> Path:
    """A hub file from the cache, else downloaded into it after one quick check that the hub answers."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
    if isinstance(cached, str):
        return Path(cached)
    check_hub(repo_id, filename, revision)
    return Path(
        _hub_call(
            lambda: hf_hub_download(repo_id, filename, cache_dir=cache_dir, revision=revision),
            offline_help(repo_id, filename, revision),
        )
    )


def pretrained_dir(
    name_or_path: str, what: str, include: Iterable[str] = TOKENIZER_FILES, cache_dir: str | None = None
) -> Path:
    """A local directory for a transformers ``from_pretrained``: ``name_or_path`` itself when it is a
    directory, else the files of hub repo ``name_or_path`` matching ``include`` (cache first, then
    one quick check that the hub answers, then the download)."""
    from huggingface_hub import snapshot_download

    local = Path(os.path.expanduser(name_or_path))
    if local.is_dir():
        return local
    if not looks_like_hub_id(name_or_path):
        raise CheckpointError(f"{what}: {name_or_path} is neither a local directory nor a hub repo id")
    include = list(include)
    try:
        return Path(snapshot_download(name_or_path, allow_patterns=include, cache_dir=cache_dir, local_files_only=True))
    except Exception:  # not (fully) cached: LocalEntryNotFoundError and friends
        pass
    check_hub(name_or_path, include=include)
    return Path(
        _hub_call(
            lambda: snapshot_download(name_or_path, allow_patterns=include, cache_dir=cache_dir),
            offline_help(name_or_path, include=include),
        )
    )


def load_pretrained(
    name_or_path: str,
    load: Callable[[str], T],
    what: str,
    include: Iterable[str] = TOKENIZER_FILES,
    cache_dir: str | None = None,
    fix: str = "",
) -> T:
    """``load(local_dir)`` on `pretrained_dir`; a failure is a CheckpointError naming the directory
    and ``fix`` (default: the `hf download` command for a hub id)."""
    include = list(include)
    folder = pretrained_dir(name_or_path, what, include, cache_dir)
    try:
        return load(str(folder))
    except Exception as exc:
        if not fix:
            fix = (
                f"Fix: run `hf download {name_or_path} {' '.join(f'--include {p!r}' for p in include)}`"
                if looks_like_hub_id(name_or_path)
                else "Fix: point it at a directory holding those files"
            )
        raise CheckpointError(f"{what}: cannot load from {folder} ({_first_line(exc)}). {fix}") from exc


def load_text_tower(text_model: str, load: Callable[[str], T], hub_id: str, note: str = "") -> T:
    """``load(dir)``: the tokenizer/config of a CLAP text tower from a hub id or a local dir (its
    weights come from the CLAP checkpoint). Unavailable -> CheckpointError saying how to get them;
    ``hub_id``: the released text model, named in the fix when ``text_model`` is a local path."""
    local = text_model.startswith((os.sep, ".", "~")) or Path(text_model).is_dir()
    fetch = f"hf download {hub_id if local else text_model} --include '*.json' --include '*.txt'"
    fetch += f" --local-dir {text_model}" if local else ""
    fix = (
        f"Fix: on a machine with network run `{fetch}`, or set text_model to a local dir holding them "
        f"(only the tokenizer and config are read: the weights come from the CLAP checkpoint){note}."
    )
    try:
        return load_pretrained(
            text_model, load, f"text model '{text_model}' (tokenizer/config)", cache_dir=None, fix=fix
        )
    except CheckpointError as exc:
        message = str(exc)
        raise CheckpointError(message if fix in message else f"{message} {fix}") from exc.__cause__


def _hub_call(fn: Callable[[], T], help_text: str) -> T:
    """A download after `check_hub` passed; a failure still becomes a CheckpointError with the fix."""
    try:
        return fn()
    except Exception as exc:
        raise CheckpointError(f"{help_text} [{_first_line(exc)}]") from exc


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"


def looks_like_hub_id(name: str) -> bool:
    """``owner/name`` that is not an existing path: what the hub (not the file system) must answer."""
    return not Path(name).exists() and name.count("/") == 1 and not name.startswith((".", "/", "~"))


# ---------------------------------------------------------------------- reading
def numpy_safe_globals() -> list:
    """What released pickles (LAION-CLAP, aisfx) may reference besides tensors, for
    ``torch.serialization.safe_globals``: numpy scalars (also under their numpy 1.x module path) and dtypes."""
    dtypes = {type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDGUSO"}
    return [numpy_scalar, (numpy_scalar, "numpy.core.multiarray.scalar"), np.dtype, *sorted(dtypes, key=str)]


def _torch_reason(exc: Exception) -> str:
    """The line of a torch.load error that says what failed, without torch's advice around it
    (``weights_only=False``, filing an issue, the documentation link)."""
    lines = [line.strip().split("WeightsUnpickler error:")[-1].strip() for line in str(exc).splitlines()]
    advice = ("Weights only load failed", "Please file an issue", "Check the documentation", "(")
    reason = (
        next((line for line in lines if "GLOBAL " in line), None)
        or next((line for line in lines if line and not line.startswith(advice)), None)
        or type(exc).__name__
    )
    return reason.split(" was not an allowed global")[0][:200]


def _refusal(path: Path, exc: Exception) -> str | None:
    """The message for a pickle that ``weights_only=True`` refused for what it references (None for
    other failures: a truncated or foreign file)."""
    detail = _torch_reason(exc)
    # torch names the refused reference "GLOBAL module.name" (a junk file fails on an operand instead)
    if not isinstance(exc, pickle.UnpicklingError) or "GLOBAL " not in detail:
        return None
    return (
        f"{path}: refused as untrusted: the pickle holds code or objects beyond tensors, which "
        f"torch.load(weights_only=True) does not run ({detail}). Loading it fully could execute "
        f"arbitrary code. {CONVERT_HINT}"
    )


def load_torch_file(
    path: str | Path, what: str = "torch checkpoint", hint: str = "", allow_numpy: bool = False, mmap: bool = False
):
    """``torch.load(weights_only=True)`` of a user-supplied file; ``allow_numpy`` also admits the numpy
    scalars some releases pickle (`numpy_safe_globals`). CheckpointError naming the file, plus ``hint``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found{hint}")
    try:
        with torch.serialization.safe_globals(numpy_safe_globals() if allow_numpy else []):
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:
        refused = _refusal(path, exc)
        if refused:
            raise CheckpointError(refused + hint) from exc
        raise CheckpointError(
            f"{path}: not a loadable {what} ({type(exc).__name__}: {_torch_reason(exc)})"
            f"{hint or '; is it the released file, fully downloaded?'}"
        ) from exc


def read_state_dict(path: str | Path, inner_key: str | None = "model", mmap: bool = False) -> dict[str, torch.Tensor]:
    """A state dict from a torch file (loaded safely; ``{inner_key: state_dict}`` unwrapped when present)
    or a ``.safetensors`` file (``mmap``: tensors stay backed by the file until used)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    obj = load_torch_file(path, mmap=mmap)
    if inner_key and isinstance(obj, Mapping) and inner_key in obj and isinstance(obj[inner_key], Mapping):
        obj = obj[inner_key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict (expected {{'{inner_key}': {{name: tensor}}}})")
    return dict(obj)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return load_file(str(path))
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read safetensors file ({type(exc).__name__}: {exc})") from exc


# ---------------------------------------------------------------------- strict keys
def _listing(title: str, keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_MAX_LISTED])
    more = f" ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return f"{title} ({len(keys)}): {shown}{more}"


def key_mismatch(
    state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]
) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, wrong-shape) keys of ``state_dict`` against ``expected`` key -> shape;
    wrong-shape entries read ``key: expected [..], found [..]``. All empty: an exact match."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k}: expected {list(shape)}, found {list(state_dict[k].shape)}"
        for k, shape in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(shape)
    ]
    return missing, unexpected, shapes


def load_strict(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, known_unused: Iterable[str] = ()
) -> list[str]:
    """Load ``state_dict`` into ``module`` with every key accounted for.

    ``known_unused``: regexes (full match) for keys present in the released file that this module
    deliberately does not hold (e.g. clapcap's GPT-2 decoder). Returns the list of such keys.
    Raises CheckpointError listing missing, unexpected and mis-shaped keys.
    """
    patterns = [re.compile(p) for p in known_unused]
    expected = module.state_dict()
    unused = [k for k in state_dict if k not in expected and any(p.fullmatch(k) for p in patterns)]
    missing, unexpected, shapes = key_mismatch(
        {k: v for k, v in state_dict.items() if k not in unused}, {k: tuple(v.shape) for k, v in expected.items()}
    )
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


# ---------------------------------------------------------------------- hashing
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

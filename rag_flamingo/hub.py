"""Hugging Face hub access (checkpoints, tokenizers, configs): downloads through the cache; offline or
unreachable and not cached -> a `CheckpointError` that says what to download and where it goes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, TypeVar

from .errors import CheckpointError

T = TypeVar("T")


def offline_help(repo_id: str, filename: str | None = None, revision: str | None = None) -> str:
    from huggingface_hub import constants

    what = f"{repo_id}/{filename}" if filename else repo_id
    cmd = f"hf download {repo_id}" + (f" {filename}" if filename else "") + (f" --revision {revision}" if revision else "")
    return (
        f"'{what}' is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and the hub cannot be reached "
        f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}). Fix: on a machine with internet run "
        f"`{cmd}` (it fills the cache; copy that cache here or point HF_HUB_CACHE at it), or download the "
        f"file{'s' if not filename else ''} and pass the local path instead of the hub id."
    )


def hub_call(fn: Callable[[], T], what: str, repo_id: str, filename: str | None = None) -> T:
    """Run a hub-backed loader; turn 'not in cache and offline/unreachable' into a CheckpointError."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        return fn()
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, OSError, ValueError) as e:
        if not _looks_like_hub_id(repo_id):  # a local path (or a typo of one): no hub advice
            raise CheckpointError(f"{repo_id}: cannot load {what} from this path ({type(e).__name__}: {e})") from e
        raise CheckpointError(f"cannot load {what}: {offline_help(repo_id, filename)} [{type(e).__name__}: {e}]") from e


def _looks_like_hub_id(name: str) -> bool:
    return not Path(name).exists() and name.count("/") == 1 and not name.startswith((".", "/"))


def hf_download(repo_id: str, filename: str, cache_dir: str | None = None, revision: str | None = None) -> Path:
    """`hf_hub_download` through the cache, or a CheckpointError saying what to download and where."""
    from huggingface_hub import constants, hf_hub_download

    return Path(
        hub_call(
            lambda: hf_hub_download(repo_id, filename, cache_dir=cache_dir, revision=revision,
                                    local_files_only=bool(constants.HF_HUB_OFFLINE)),
            what=f"{filename} from {repo_id}",
            repo_id=repo_id,
            filename=filename,
        )
    )

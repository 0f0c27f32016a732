"""Where things live: the Hydra config folders, the data root and the cache root.

Nothing in source files is ever edited to point at data: the roots come from config, and these
environment variables override the defaults:
  RAG_FLAMINGO_DATA_ROOT   where datasets live          (default: ~/.cache/rag_flamingo/data)
  RAG_FLAMINGO_CACHE_ROOT  generated data, indices       (default: ~/.cache/rag_flamingo)
  RAG_FLAMINGO_CONF        replaces the Hydra config folder (default: the ``conf`` folder shipped
                           inside this package, so a wheel install composes configs too)
  RAG_FLAMINGO_CONF_PATH   extra config folders, separated by ``os.pathsep`` (``:`` on Linux), with
                           the same layout: ``<folder>/dataset/mine.yaml`` adds ``dataset=mine``.
                           The main folder is searched first, so an extra file with a shipped name
                           is not used: give it a new name (it may extend the shipped one through
                           its own ``defaults: [esc50, _self_]``).
A ``hydra.searchpath=[file:///a/folder]`` override on the command line does the same as
RAG_FLAMINGO_CONF_PATH and replaces it.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError

CONF_ENV = "RAG_FLAMINGO_CONF"
CONF_PATH_ENV = "RAG_FLAMINGO_CONF_PATH"
SEARCHPATH_KEY = "hydra.searchpath"


def cache_root() -> Path:
    return Path(os.environ.get("RAG_FLAMINGO_CACHE_ROOT", Path.home() / ".cache" / "rag_flamingo"))


def data_root() -> Path:
    return Path(os.environ.get("RAG_FLAMINGO_DATA_ROOT", cache_root() / "data"))


def conf_dir() -> Path:
    """The main Hydra config folder: ``$RAG_FLAMINGO_CONF``, else the package's own ``conf``."""
    return Path(os.environ.get(CONF_ENV, Path(__file__).resolve().parent / "conf"))


def source_root() -> Path:
    """The folder that holds the ``rag_flamingo`` package: the repository root in a checkout,
    ``site-packages`` in a wheel install."""
    return Path(__file__).resolve().parents[1]


def user_conf_dirs() -> list[Path]:
    """The extra config folders named by ``$RAG_FLAMINGO_CONF_PATH``, in order; each must exist."""
    folders = [Path(p).expanduser().resolve() for p in os.environ.get(CONF_PATH_ENV, "").split(os.pathsep) if p]
    for folder in folders:
        if not folder.is_dir():
            raise ConfigError(
                f"{CONF_PATH_ENV} names {folder}, which is not a folder; create it "
                f"(with e.g. dataset/<name>.yaml inside) or remove it from {CONF_PATH_ENV}"
            )
    return folders


def with_user_conf(overrides: list[str]) -> list[str]:
    """``overrides`` plus a ``hydra.searchpath`` for ``user_conf_dirs()``; one already given wins."""
    if any(o.lstrip("+~").startswith(SEARCHPATH_KEY + "=") for o in overrides):
        return list(overrides)
    folders = user_conf_dirs()
    if not folders:
        return list(overrides)
    searchpath = ",".join(f"file://{folder.as_posix()}" for folder in folders)
    return [f"{SEARCHPATH_KEY}=[{searchpath}]", *overrides]


def default_store(cache: str | Path, dataset: str, split: str, encoder: str) -> Path:
    """Where ``build_index`` writes a dataset split's store by default, and where ``evaluate`` looks
    for it: ``<cache root>/indices/<dataset>-<split>-<encoder>`` (``dataset``: `sources.store_stem`,
    which names a folder of your own by its name and a hash of its path: ``folder-sounds-1a2b3c4d``)."""
    return Path(cache).expanduser() / "indices" / f"{dataset}-{split}-{encoder}"


def find_store(given: str, cache: str | Path | None = None) -> Path:
    """A ``store=`` value: a path, or the name of a store under ``<cache root>/indices``."""
    path = Path(given).expanduser()
    if not path.exists() and not path.is_absolute():
        named = Path(cache or cache_root()).expanduser() / "indices" / path
        if named.exists():
            path = named
    return store_folder(path)


def store_folder(path: Path) -> Path:
    """``path`` as a store's folder: refused when it is an existing file (a store is a directory)."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"store={path} is a file, not a store folder; name a folder (build_index creates it)")
    return path


def check_writable_folder(folder: Path, setting: str) -> None:
    """``folder`` is a folder, or can be made, and a file can be written in it: probed by making the
    missing folders and a file, then removing them again (what permission bits cannot tell: ``/proc``,
    a read-only mount, root). ConfigError naming ``setting`` as typed (``clips_dir=``, ``--out ``)."""
    import contextlib
    import tempfile

    folder = Path(folder).expanduser()
    chain = [folder, *folder.parents]
    existing = next(p for p in chain if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == folder else f"is under {existing}, a file"
        raise ConfigError(f"{setting}{folder}: {where}, not a folder; give a writable folder")
    made: list[Path] = []
    try:
        for missing in reversed(chain[: chain.index(existing)]):
            missing.mkdir()
            made.append(missing)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or exc
        raise ConfigError(
            f"{setting}{folder}: cannot be created or written ({reason}); give a writable folder"
        ) from None
    finally:
        for missing in reversed(made):
            with contextlib.suppress(OSError):
                missing.rmdir()


def config_path(p: str | None) -> str | None:
    """A path written in a config: from the working directory, else (when it exists there) from the
    repository root (``conf/model/tiny.yaml`` names the test fixtures so)."""
    if p is None:
        return None
    path = Path(str(p)).expanduser()
    if not path.is_absolute() and not path.exists() and (source_root() / path).exists():
        return str(source_root() / path)
    return str(path) if path.exists() else str(p)

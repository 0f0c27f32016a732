"""Shared test set-up: offline, deterministic, and no writes outside pytest's temp dirs."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture(autouse=True, scope="session")
def _isolated_roots(tmp_path_factory):
    """Point the cache and data roots at a session temp dir unless the caller set them."""
    root = tmp_path_factory.mktemp("rag_flamingo_roots")
    old = {k: os.environ.get(k) for k in ("RAG_FLAMINGO_CACHE_ROOT", "RAG_FLAMINGO_DATA_ROOT")}
    os.environ["RAG_FLAMINGO_CACHE_ROOT"] = str(root / "cache")
    os.environ["RAG_FLAMINGO_DATA_ROOT"] = str(root / "data")
    yield
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def folder_stores(tmp_path_factory):
    """Folders of real clips and aisfx stores built from them by ``build_index`` (see support.clips):
    ``train/`` and ``test/`` with one clip per class under the same names (``whistle/0.wav``),
    ``loo/`` with three per class; stores ``train_idx`` and ``loo_idx``."""
    from support.clips import build_folder_stores

    return build_folder_stores(tmp_path_factory.mktemp("folder_stores"))

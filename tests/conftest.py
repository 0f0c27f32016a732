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

"""resolve_split: demo, folder, a user's manifest, official datasets, and the errors users see."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from omegaconf import OmegaConf

from rag_flamingo import paths
from rag_flamingo.config import DatasetConfig, typed
from rag_flamingo.datasets import sources
from rag_flamingo.datasets.manifest import read_manifest, write_manifest
from rag_flamingo.errors import ConfigError, ManifestError


def ds(values) -> DatasetConfig:
    return typed(DatasetConfig, values)


def _wav(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.full(1600, 0.1, dtype=np.float32), 16000)


def test_demo_roles_and_cache():
    # the session's cache root (tests/conftest.py): the demo is generated once for the whole run
    cfg = OmegaConf.create({"name": "demo", "root": None, "splits": {"index": "train", "query": "test"}})
    manifest, root = sources.resolve_split(ds(cfg), "index")
    assert manifest == paths.cache_root() / "datasets" / "demo" / "train.jsonl" and root == manifest.parent
    query, _ = sources.resolve_split(ds(cfg), "query")
    rows = read_manifest(query, required=("label",))
    assert all((root / r["path"]).is_file() for r in rows)
    assert len({r["label"] for r in rows}) >= 10
    with pytest.raises(ConfigError, match="no split 'dev'.*train, test"):
        sources.resolve_split(ds(cfg), "dev")


def test_folder_manifest_is_cached_by_folder_path(tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_FLAMINGO_CACHE_ROOT", str(tmp_path / "cache"))
    data = tmp_path / "sounds"
    _wav(data / "cat" / "a.wav")
    cfg = {"name": "folder", "root": str(data), "splits": {"index": "all", "query": "all"}}
    manifest, root = sources.resolve_split(ds(cfg), "index")
    assert root == data.resolve() and manifest.parent.parent == tmp_path / "cache" / "datasets" / "folder"
    assert [r["id"] for r in read_manifest(manifest)] == ["cat/a"]
    _wav(data / "dog" / "b.wav")  # the folder changed: rescanned
    assert [r["label"] for r in read_manifest(sources.resolve_split(ds(cfg), "all")[0])] == ["cat", "dog"]
    other = tmp_path / "other"
    _wav(other / "c.wav")
    assert sources.resolve_split(ds(dict(cfg, root=str(other))), "all")[0] != manifest
    with pytest.raises(ConfigError, match="dataset.root is not set"):
        sources.resolve_split(ds({"name": "folder", "root": None}), "all")
    with pytest.raises(ConfigError, match="no split 'train'"):
        sources.resolve_split(ds(cfg), "train")


def test_user_manifest(tmp_path):
    write_manifest([{"id": "x", "path": "x.wav"}], tmp_path / "m" / "train.jsonl")
    cfg = {"name": "mine", "manifest": str(tmp_path / "m" / "{split}.jsonl"), "root": None}
    assert sources.resolve_split(ds(cfg), "train") == (tmp_path / "m" / "train.jsonl", tmp_path / "m")
    cfg = {"name": "folder", "manifest": {"train": str(tmp_path / "m" / "train.jsonl")}, "root": "/audio"}
    assert sources.resolve_split(ds(cfg), "train") == (tmp_path / "m" / "train.jsonl", Path("/audio"))
    with pytest.raises(ConfigError, match="no entry for split 'test'"):
        sources.resolve_split(ds(cfg), "test")
    with pytest.raises(ManifestError, match="manifest not found"):
        sources.resolve_split(ds({"name": "mine", "manifest": str(tmp_path / "nope.jsonl")}), "train")


def test_official_lookup_and_missing_manifest_message(tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_FLAMINGO_DATA_ROOT", str(tmp_path))
    cfg = {
        "name": "esc50",
        "root": None,
        "splits": {"index": "train", "query": "test", "available": ["train", "test", "fold1"]},
    }
    with pytest.raises(ManifestError) as err:
        sources.resolve_split(ds(cfg), "query")
    message = str(err.value)
    assert "no manifest for split 'test'" in message
    assert (
        f"python -m index_builder.manifests esc50 --metadata {tmp_path / 'esc50'} "
        f"--out {tmp_path / 'esc50' / 'manifests'}"
    ) in message
    assert "data_manifests/esc50/README.md" in message
    write_manifest(
        [{"id": "1", "path": "audio/1.wav", "label": "dog"}], tmp_path / "esc50" / "manifests" / "test.jsonl"
    )
    assert sources.resolve_split(ds(cfg), "query") == (
        tmp_path / "esc50" / "manifests" / "test.jsonl",
        tmp_path / "esc50",
    )
    with pytest.raises(ConfigError, match="no split 'fold9'"):
        sources.resolve_split(ds(cfg), "fold9")
    with pytest.raises(ConfigError, match="dataset.splits.index is not set"):
        sources.resolve_split(ds({"name": "esc50"}), "index")


def test_collapse_groups():
    rows = [
        {"id": "1", "path": "a.wav", "group": "a", "captions": ["one"]},
        {"id": "2", "path": "a.wav", "group": "a", "captions": ["two"]},
        {"id": "3", "path": "b.wav", "group": "b", "captions": ["three"]},
        {"id": "4", "path": "c.wav", "label": "x"},
    ]
    out = sources.collapse_groups(rows)
    assert [(r["id"], r.get("captions")) for r in out] == [("1", ["one", "two"]), ("3", ["three"]), ("4", None)]
    assert rows[0]["captions"] == ["one"]  # input untouched
    assert json.dumps(out)

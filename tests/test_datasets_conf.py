"""rag_flamingo/conf/dataset/*.yaml: every dataset has a config whose roots, splits and tasks are usable."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from index_builder.manifests import DATASETS
from rag_flamingo import paths
from rag_flamingo.config import DatasetConfig, typed
from rag_flamingo.datasets.manifest import read_manifest
from rag_flamingo.datasets.sources import resolve_split
from rag_flamingo.tasks import TASKS

CONF = Path(__file__).resolve().parents[1] / "rag_flamingo" / "conf" / "dataset"
REPO_MANIFESTS = Path(__file__).resolve().parents[1] / "data_manifests"


def ds(values) -> DatasetConfig:
    return typed(DatasetConfig, values)


@pytest.mark.parametrize("name", DATASETS + ("demo", "folder"))
def test_dataset_config(name, monkeypatch, tmp_path):
    monkeypatch.setenv("RAG_FLAMINGO_DATA_ROOT", str(tmp_path / "data"))
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    assert cfg.name == name
    assert cfg.tasks and all(t in TASKS for t in cfg.tasks)
    if name in DATASETS:
        assert Path(cfg.root) == paths.data_root() / name
        assert cfg.splits.index in cfg.splits.available and cfg.splits.query in cfg.splits.available
        assert cfg.splits.index != cfg.splits.query
        assert (REPO_MANIFESTS / name / "README.md").is_file()


def test_official_root_default_follows_cache_root(monkeypatch, tmp_path):
    monkeypatch.delenv("RAG_FLAMINGO_DATA_ROOT", raising=False)
    monkeypatch.setenv("RAG_FLAMINGO_CACHE_ROOT", str(tmp_path))
    assert Path(OmegaConf.load(CONF / "esc50.yaml").root) == paths.data_root() / "esc50" == tmp_path / "data" / "esc50"


def test_demo_config_resolves():
    cfg = OmegaConf.load(CONF / "demo.yaml")
    manifest, root = resolve_split(ds(cfg), "query")
    assert len(read_manifest(manifest, required=("label", "captions"))) == 48 and root.is_dir()


def test_official_root_follows_a_data_root_key_of_the_primary_config(monkeypatch, tmp_path):
    monkeypatch.setenv("RAG_FLAMINGO_DATA_ROOT", str(tmp_path / "env"))
    cfg = OmegaConf.merge({"data_root": str(tmp_path / "cfg")}, {"dataset": OmegaConf.load(CONF / "us8k.yaml")})
    assert Path(cfg.dataset.root) == tmp_path / "cfg" / "us8k"

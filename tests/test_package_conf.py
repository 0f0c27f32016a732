"""The Hydra configs ship inside the package; RAG_FLAMINGO_CONF replaces them and
RAG_FLAMINGO_CONF_PATH adds user config folders (rag_flamingo/paths.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra.errors import MissingConfigException

import rag_flamingo
from rag_flamingo import paths
from rag_flamingo.cli import compose_config
from rag_flamingo.errors import ConfigError

PACKAGE_CONF = Path(rag_flamingo.__file__).resolve().parent / "conf"


def _user_dataset(folder: Path, name: str) -> Path:
    (folder / "dataset").mkdir(parents=True)
    (folder / "dataset" / f"{name}.yaml").write_text(
        f"defaults:\n  - folder\n  - _self_\nname: {name}\nroot: /my/sounds\n"
    )
    return folder


def test_conf_dir_is_the_package_folder(monkeypatch):
    monkeypatch.delenv(paths.CONF_ENV, raising=False)
    assert paths.conf_dir() == PACKAGE_CONF
    assert (PACKAGE_CONF / "build_index.yaml").is_file() and (PACKAGE_CONF / "evaluate.yaml").is_file()
    assert not (paths.source_root() / "conf").exists(), "configs live in rag_flamingo/conf only"


def test_rag_flamingo_conf_replaces_the_folder(monkeypatch, tmp_path):
    own = tmp_path / "conf"
    shutil.copytree(PACKAGE_CONF, own)
    text = (own / "build_index.yaml").read_text()
    assert "shard_size: 1000" in text
    (own / "build_index.yaml").write_text(text.replace("shard_size: 1000", "shard_size: 7"))
    monkeypatch.setenv(paths.CONF_ENV, str(own))
    assert compose_config("build_index", []).shard_size == 7


def test_conf_path_adds_a_dataset(monkeypatch, tmp_path):
    monkeypatch.delenv(paths.CONF_ENV, raising=False)
    with pytest.raises(ConfigError, match="dataset=mine is not a known dataset"):
        compose_config("build_index", ["dataset=mine"])
    first, second = _user_dataset(tmp_path / "a", "mine"), _user_dataset(tmp_path / "b", "theirs")
    monkeypatch.setenv(paths.CONF_PATH_ENV, f"{first}:{second}")
    cfg = compose_config("build_index", ["dataset=mine"])
    assert cfg.dataset.name == "mine" and cfg.dataset.source == "folder"
    assert cfg.dataset.root == "/my/sounds"
    assert compose_config("build_index", ["dataset=theirs"]).dataset.name == "theirs"
    assert compose_config("evaluate", ["dataset=mine"]).dataset.name == "mine"
    # the shipped configs are still found, and an explicit hydra.searchpath replaces the variable
    assert compose_config("build_index", ["dataset=esc50"]).dataset.name == "esc50"
    override = [f"hydra.searchpath=[file://{second}]", "dataset=mine"]
    with pytest.raises((MissingConfigException, ConfigError)):
        compose_config("build_index", override)


def test_conf_path_folder_must_exist(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.CONF_PATH_ENV, str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="RAG_FLAMINGO_CONF_PATH names .*missing, which is not a folder"):
        compose_config("build_index", [])

"""rag_flamingo/conf/build_index.yaml composition: defaults, overrides, environment roots, the console script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from index_builder.cli import load_config
from rag_flamingo.errors import ConfigError
from rag_flamingo.indexing.pipeline import resolve


def test_defaults_compose(monkeypatch, tmp_path):
    monkeypatch.setenv("RAG_FLAMINGO_CACHE_ROOT", str(tmp_path / "cache"))
    monkeypatch.delenv("RAG_FLAMINGO_DATA_ROOT", raising=False)
    cfg = load_config([])
    assert cfg.dataset.name == "demo" and cfg.encoder["name"] == "aisfx" and cfg.index.type == "auto"
    assert cfg.split == "index" and cfg.store is None and cfg.data_root == str(tmp_path / "cache" / "data")
    build = resolve(cfg)  # the role "index" is the dataset's index split; the store its default folder
    assert build.split == "train" and build.output == tmp_path / "cache" / "indices" / "demo-train-aisfx"
    assert build.mode == "build" and build.index.metric == "cosine" and build.encoder["max_seconds"] == 10.0


def test_overrides_as_in_the_issue(monkeypatch, tmp_path):
    monkeypatch.setenv("RAG_FLAMINGO_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_FLAMINGO_CACHE_ROOT", str(tmp_path / "cache"))
    cfg = load_config(["dataset=clotho"])
    build = resolve(cfg)
    assert build.split == "dev" and str(build.output).endswith("indices/clotho-dev-aisfx")
    assert cfg.dataset.root == str(tmp_path / "data" / "clotho")
    cfg = load_config(["dataset=clotho", "encoder=ms_clap_2023", "index=hnsw", f"store={tmp_path / 'x'}"])
    assert cfg.encoder["name"] == "ms_clap_2023" and cfg.index.type == "hnsw"
    assert cfg.index.recall_target == 0.99 and cfg.store == str(tmp_path / "x")
    assert load_config([f"output={tmp_path / 'y'}"]).store == str(tmp_path / "y")  # the old name, an alias
    for kind in ("flat", "ivf_flat", "ivf_pq"):
        assert load_config([f"index={kind}"]).index.type == kind
    cfg = load_config(["dataset=folder", f"dataset.root={tmp_path}", "index.memory_budget=1G", "shard_size=10"])
    assert resolve(cfg).split == "all" and cfg.index.memory_budget == "1G" and cfg.shard_size == 10
    with pytest.raises(ConfigError, match="mode"):
        from rag_flamingo.indexing.pipeline import run

        run(resolve(load_config(["mode=merge"])))


def test_console_script_finds_conf_and_leaves_no_hydra_outputs(tmp_path):
    script = shutil.which("build_index", path=str(Path(sys.executable).parent)) or shutil.which("build_index")
    assert script, "the build_index console script is not installed (pip install -e .)"
    env = dict(os.environ, RAG_FLAMINGO_CACHE_ROOT=str(tmp_path / "c"))
    proc = subprocess.run(
        [script, "--cfg", "job", "--resolve", "dataset=esc50", "index=ivf_pq"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "name: esc50" in proc.stdout and "type: ivf_pq" in proc.stdout and str(tmp_path / "c") in proc.stdout
    bad = subprocess.run([script, "encoder=nope"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "nope" in bad.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"] or not (tmp_path / "outputs").exists()
    assert not (tmp_path / "outputs").exists() and not (tmp_path / ".hydra").exists()

"""The built wheel works on its own: installed into a fresh virtual environment (no editable
install, no checkout on the path), its console scripts compose the shipped configs and build the
demo index from another working directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# what a wheel is built from: the sources, never the checkout's environments, caches or tests
NOT_SOURCES = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "tests",
    "outputs",
    "multirun",
    ".cache",
    ".pytest_cache",
    "runs",
)


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 300) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def build_wheel(tmp: Path) -> Path:
    """``pip wheel`` of a copy of the working tree (the build writes nothing into the checkout)."""
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=NOT_SOURCES)
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist", src],
        cwd=tmp,
    )
    (wheel,) = (tmp / "dist").glob("rag_flamingo-*.whl")
    return wheel


def fresh_venv_with_current_deps(path: Path) -> Path:
    """A new venv whose ``.pth`` puts this environment's site-packages on ``sys.path`` as plain
    folders: the dependencies import, while that folder's own ``.pth`` files (the editable
    ``__editable__`` finder of rag-flamingo among them) are not run. Returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=path).strip()
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    Path(purelib, "current_dependencies.pth").write_text("".join(f"{d}\n" for d in deps))
    return python


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "RAG_FLAMINGO_"))}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1", HF_HUB_OFFLINE="1", **extra)
    return env


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_wheel_installs_and_builds_the_demo_index(tmp_path):
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "rag_flamingo/conf/build_index.yaml" in names and "rag_flamingo/conf/dataset/demo.yaml" in names
    assert "rag_flamingo/conf/model/tiny.yaml" in names and not any(n.startswith("tests/") for n in names)

    python = fresh_venv_with_current_deps(tmp_path / "venv")
    env = clean_env(RAG_FLAMINGO_CACHE_ROOT=str(tmp_path / "cache"))
    _run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", wheel],
        cwd=tmp_path,
        env=env,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = "import rag_flamingo, index_builder; print(rag_flamingo.__file__, index_builder.__file__)"
    installed = _run([python, "-c", where], cwd=work, env=env)
    assert all(Path(p).is_relative_to(tmp_path / "venv") for p in installed.split()), installed

    build_index = tmp_path / "venv" / "bin" / "build_index"
    composed = _run([build_index, "--cfg", "job", "--resolve", "dataset=demo", "index=flat"], cwd=work, env=env)
    assert "name: demo" in composed and "type: flat" in composed and str(tmp_path / "cache") in composed

    summary = _run([build_index, "dataset=demo", "num_workers=0"], cwd=work, env=env, timeout=500)
    store = tmp_path / "cache" / "indices" / "demo-train-aisfx"
    assert "96 indexed, 0 rejected" in summary and str(store) in summary
    assert {"index.faiss", "items.parquet", "store.json"} <= {p.name for p in store.iterdir()}
    assert sorted(p.name for p in work.iterdir()) == [], "a run leaves nothing in its working directory"

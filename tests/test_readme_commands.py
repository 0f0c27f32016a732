"""Every command in README.md and data_manifests/*/README.md, as pasted.

The fenced ``bash`` blocks are read (continuation lines joined, comments dropped), the documented
placeholders below are replaced by tiny fixtures (real audio files in a scratch folder), and each
command runs in README order:

- ``build_index`` / ``evaluate`` / ``rag_classify`` / ``rag_app`` (also behind ``torchrun`` / ``srun``):
  with ``--check`` it must compose as written and reach the preflight's table (exit 0: every artifact
  there; exit 2: one line naming the missing ones, each with its fetch command); a command whose
  artifacts are all there and that needs no model weights then runs for real (the folder builds,
  ``rag_classify``); a suite runs its plan (``suite.dry_run=true``, which writes nothing);
- the manifest makers and the checkpoint converter: run on a folder without the official files, they
  must answer with one line (exit 2) naming what is missing, not an argument error;
- ``scripts/demo.sh`` / ``scripts/test.sh`` are the two entry commands (CI runs the second; the first is
  the demo), shell-only lines of the SLURM example (``head=$(scontrol ...)``) need a cluster, ``hf
  download`` needs the hub, and ``export RAG_FLAMINGO_DATA_ROOT=...`` is set by the test itself.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from index_builder.cli import main as build_index
from index_builder.manifests.__main__ import main as make_manifests
from index_builder.manifests.video_audio import main as video_audio
from rag_flamingo.app.main import main as rag_app
from rag_flamingo.classify import main as rag_classify
from rag_flamingo.evaluate import main as evaluate

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "data_manifests").glob("*/README.md"))]
CLIS = {"build_index": build_index, "evaluate": evaluate, "rag_classify": rag_classify, "rag_app": rag_app}
MODULES = {"index_builder": "build_index", "rag_flamingo.evaluate": "evaluate"}
ENTRY = ("scripts/demo.sh", "scripts/test.sh")
REAL_RUNS = ("build_index", "rag_classify")  # offline and quick on the fixtures; evaluate runs via the suite's dry run

# The README's placeholders and what stands for them here (relative ones resolve in the scratch folder).
PLACEHOLDERS = {
    "/path/to/sounds": "clips",
    "/path/to/audio": "clips",
    "/path/to/{split}.jsonl": "manifests/{split}.jsonl",
    "/path/to/my_index": "my_index",
    "/data/idx/clotho": "idx/clotho",
    "/shared/indices/audiocaps": "idx/audiocaps",
    "/ckpt/foundation-hf": "ckpt/foundation-hf",
    "/models/music-flamingo": "models/music-flamingo",
    "/data/audiocaps": "data/audiocaps",
}


def fenced_commands(path: Path) -> list[str]:
    """The commands of a markdown file's ``bash`` blocks (continuations joined, comments and blank lines dropped)."""
    out = []
    for body in re.findall(r"```bash\n(.*?)```", path.read_text(), re.S):
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                out.append(line)
    return out


def _tone(path: Path, freq: float, seconds: float = 1.0, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(int(freq)).standard_normal(t.size) * 0.01
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32), rate)


def _fixtures(work: Path) -> None:
    """The folders the README's examples name: labelled clips, new clips, new recordings, one clip."""
    for i, label in enumerate(("door_knock", "kettle", "microwave")):
        for j in range(3):
            _tone(work / "clips" / label / f"{j}.wav", 300.0 * (i + 1) + 20 * j)
            _tone(work / "new_clips" / f"new_{label}" / f"{j}.wav", 350.0 * (i + 1) + 20 * j)
        _tone(work / "new_recordings" / f"rec{i}.wav", 310.0 * (i + 1))
    _tone(work / "clip.wav", 620.0)


def _argv(words: list[str]) -> tuple[str, list[str]]:
    """(program, arguments) with launchers (srun, torchrun and their options) peeled off."""
    while words and words[0] in ("srun", "torchrun"):
        words = words[1:]
        while words and words[0].startswith("--"):
            words = words[1:]
        if words[:1] == ["-m"]:
            return MODULES[words[1]], words[2:]
    if words[:2] == ["python", "-m"]:
        return words[2], words[3:]
    if words[:1] == ["python"]:
        return words[1], words[2:]
    return words[0], words[1:]


def _substitute(line: str, work: Path) -> list[str]:
    for placeholder, fixture in PLACEHOLDERS.items():
        line = line.replace(placeholder, str(work / fixture))
    return shlex.split(line, comments=True)


def _script(name: str):
    """A script of scripts/ as a module (they are files, not a package)."""
    from support.scripts import load_script

    return load_script(name)


def _one_line_error(capsys, prog_hint: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0] and "usage:" not in err[0], (prog_hint, err)
    return err[0]


@pytest.mark.timeout(600)
def test_every_documented_command_runs_as_pasted(tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    _fixtures(work)
    monkeypatch.chdir(work)
    monkeypatch.setenv("RAG_FLAMINGO_CACHE_ROOT", str(tmp_path / "cache"))
    monkeypatch.setenv("RAG_FLAMINGO_DATA_ROOT", str(tmp_path / "data"))
    seen: dict[str, str] = {}
    for doc in DOCS:
        for line in fenced_commands(doc):
            words = _substitute(line, work)
            where = f"{doc.relative_to(ROOT)}: {line.strip()}"
            assert not any(w.startswith("[-") for w in words), f"{where}: an optional part in brackets fails as pasted"
            if words[0] in ENTRY or words[0].startswith("head="):
                seen[where] = "entry script or cluster shell"
                continue
            if words[0] == "export":  # the data root's default, set once (the test sets it)
                assert words[1].startswith("RAG_FLAMINGO_DATA_ROOT=${RAG_FLAMINGO_DATA_ROOT:-"), where
                seen[where] = "shell setup"
                continue
            if words[:2] == ["hf", "download"]:  # the weights (the hub is not reachable from the tests)
                seen[where] = "download"
                continue
            prog, args = _argv([w.replace("$RAG_FLAMINGO_DATA_ROOT", str(tmp_path / "data")) for w in words])
            if prog == "evaluate" and any(a.startswith("suite=") for a in args):  # a suite: its plan is its check
                plan = [*args, "suite.dry_run=true"] if "suite.dry_run=true" not in args else args
                assert evaluate(plan) == 0 and "| run | setting | status |" in capsys.readouterr().out, where
                seen[where] = "ran" if plan is args else "suite plan"
            elif prog in CLIS and "--cfg" in args:
                assert CLIS[prog](args) == 0 and "cache_root:" in capsys.readouterr().out, where
                seen[where] = "ran"
            elif prog in CLIS:
                code = CLIS[prog](["--check", *args])
                out, err = capsys.readouterr()
                assert "| artifact | where | status | fetch |" in out, (where, out, err)
                assert code == 0 or (code == 2 and err.count("\n") == 1 and "missing" in err), (where, err)
                seen[where] = "check" if code else "all present"
                if code == 0 and prog in REAL_RUNS:
                    assert CLIS[prog](args) == 0, (where, capsys.readouterr().err)
                    capsys.readouterr()
                    seen[where] = "ran"
            elif prog == "index_builder.manifests":
                assert make_manifests(args) == 2, where
                assert "not found" in _one_line_error(capsys, where), where
                seen[where] = "maker: metadata named"
            elif prog == "index_builder.manifests.video_audio":
                assert video_audio(args) == 2, where
                _one_line_error(capsys, where)
                seen[where] = "extractor: videos named"
            elif prog == "scripts/convert_checkpoint.py":
                assert _script("convert_checkpoint").main(args) == 2, where
                _one_line_error(capsys, where)
                seen[where] = "converter: checkpoint named"
            else:
                raise AssertionError(f"{where}: no rule for {prog!r}; add one here")
    assert sum(v == "ran" for v in seen.values()) >= 3, seen  # the folder build, rag_classify, the dry run
    assert len(seen) > 50, len(seen)


def test_every_documented_import_imports():
    """The Python snippets' ``from rag_flamingo... import ...`` lines name what the package holds."""
    lines = [
        line.strip()
        for line in (Path(__file__).resolve().parents[1] / "README.md").read_text().splitlines()
        if re.fullmatch(
            r"\s*(from (rag_flamingo|index_builder)\S* import [\w, ]+|import (rag_flamingo|index_builder)\S*)", line
        )
    ]
    assert len(lines) >= 5
    for line in lines:
        exec(line, {})  # an ImportError names the line

"""Folders of small, clearly distinct synthetic clips on disk (real wav files) for end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SR = 22050
KINDS = ("whistle", "hum", "clicks", "noise")


def synth(kind: str, seed: int) -> np.ndarray:
    """1.2-2 s of one of `KINDS`, varied by ``seed``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * rng.uniform(1.2, 2.0))) / SR
    if kind == "whistle":
        f = rng.uniform(2500, 3200)
        x = np.sin(2 * np.pi * f * t + 3 * np.sin(2 * np.pi * 6 * t))
    elif kind == "hum":
        f = rng.uniform(90, 120)
        x = sum(np.sin(2 * np.pi * f * h * t) / h for h in range(1, 6))
    elif kind == "clicks":
        x = np.zeros_like(t)
        x[:: int(SR / rng.uniform(8, 12))] = 1.0
        x = np.convolve(x, np.exp(-np.arange(200) / 20), mode="same")
    else:  # "noise": bursts of white noise
        x = rng.standard_normal(t.size) * (np.sin(2 * np.pi * 3 * t) > 0)
    x = x + 0.01 * rng.standard_normal(t.size)
    return (0.8 * x / np.max(np.abs(x))).astype(np.float32)


def write_class(folder: Path, kind: str, count: int, seed0: int, name: str = "{kind}_{i}.wav") -> None:
    """``count`` clips of ``kind`` in ``folder`` (named by ``name``, with ``kind`` and ``i`` from 0)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        sf.write(folder / name.format(kind=kind, i=i), synth(kind, seed0 + i), SR)


FOLDER_KINDS = ("whistle", "hum", "clicks")


def build_folder_stores(root: Path) -> Path:
    """The layout of the ``folder_stores`` fixture (tests/conftest.py), built under ``root``."""
    from index_builder.cli import main as build_index

    for n, kind in enumerate(FOLDER_KINDS):
        write_class(root / "train" / kind, kind, 1, seed0=100 * n, name="{i}.wav")
        write_class(root / "test" / kind, kind, 1, seed0=100 * n + 50, name="{i}.wav")  # same names, other clips
        write_class(root / "loo" / kind, kind, 3, seed0=100 * n + 70, name="{i}.wav")
    for name in ("train", "loo"):
        assert (
            build_index(
                [
                    "dataset=folder",
                    f"dataset.root={root / name}",
                    f"store={root / (name + '_idx')}",
                    "progress=false",
                    "num_workers=0",
                ]
            )
            == 0
        )
    return root


def evaluate_folder_queries(stores: Path, *extra: str, store: str = "train_idx", queries: str = "test") -> int:
    """``evaluate`` of the ``folder_stores`` fixture's ``queries`` folder against its ``store``."""
    from rag_flamingo.evaluate import main as evaluate

    args = [f"store={stores / store}", "dataset=folder", f"dataset.root={stores / queries}", "progress=false"]
    return evaluate([*args, *extra])

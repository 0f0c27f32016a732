"""The ``folder`` dataset: any directory of audio files becomes manifest rows.

Rules (deterministic; rows sorted by path):
- every file whose extension is in ``rag_flamingo.audio.AUDIO_EXTENSIONS`` (case-insensitive),
  found recursively (symlinked folders are not followed); hidden files and folders (name
  starting with ``.``) are skipped, other files ignored;
- ``id`` = path relative to the folder, without extension (``dog/bark_01``); ``path`` = path
  relative to the folder (the folder is the audio root);
- ``label`` = the first-level sub-folder the file is in (no label for files at the top level);
- ``captions`` = the non-empty lines of a same-name ``.txt`` file next to the audio
  (``bark_01.wav`` + ``bark_01.txt``), when there is one;
- splits: when every top-level sub-folder is a split name (``train``, ``test``, ``val``,
  ``valid``, ``validation``, ``dev``, ``eval``) and no audio sits at the top level, each of them is
  a split and labels come from the sub-folder *inside* the split folder
  (``train/dog/x.wav`` -> split ``train``, label ``dog``). Split ``all`` always holds every row.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..audio import AUDIO_EXTENSIONS
from ..errors import ManifestError

ALL_SPLIT = "all"
SPLIT_DIR_NAMES = ("train", "test", "val", "valid", "validation", "dev", "eval")


def list_audio_files(root: str | Path) -> list[Path]:
    """Audio files under ``root`` (relative paths, sorted), skipping hidden files and folders."""
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{root}: folder not found (set dataset.root to a directory of audio files)")
    extensions = {e.lower() for e in AUDIO_EXTENSIONS}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in extensions:
                found.append((Path(dirpath) / name).relative_to(root))
    return sorted(found, key=lambda p: p.as_posix())


def folder_splits(files: list[Path]) -> list[str]:
    """The split folders of a layout (empty when the folder is one split, ``all``)."""
    top = {f.parts[0] for f in files if len(f.parts) > 1}
    if files and all(len(f.parts) > 1 for f in files) and top <= set(SPLIT_DIR_NAMES):
        return sorted(top)
    return []


def scan_folder(root: str | Path) -> dict[str, list[dict]]:
    """Manifest rows of a folder, by split: ``{"all": [...], "train": [...], ...}``.

    Raises ManifestError when the folder has no audio, or two files map to one id
    (``a.wav`` and ``a.flac`` in one folder).
    """
    root = Path(root)
    files = list_audio_files(root)
    if not files:
        raise ManifestError(f"{root}: no audio files found (looked for {', '.join(AUDIO_EXTENSIONS)} recursively)")
    split_dirs = folder_splits(files)
    splits: dict[str, list[dict]] = {ALL_SPLIT: []}
    splits.update({s: [] for s in split_dirs})
    seen: dict[str, str] = {}
    for rel in files:
        row = _row(root, rel, label_depth=1 if split_dirs else 0)
        if row["id"] in seen:
            raise ManifestError(
                f"{root}: {seen[row['id']]} and {rel.as_posix()} both map to id "
                f"{row['id']!r}; rename or remove one of them"
            )
        seen[row["id"]] = rel.as_posix()
        splits[ALL_SPLIT].append(row)
        if split_dirs:
            splits[rel.parts[0]].append(row)
    return splits


def _row(root: Path, rel: Path, label_depth: int) -> dict:
    row: dict = {"id": rel.with_suffix("").as_posix(), "path": rel.as_posix()}
    if len(rel.parts) > label_depth + 1:
        row["label"] = rel.parts[label_depth]
    captions = _read_captions(root / rel.with_suffix(".txt"))
    if captions:
        row["captions"] = captions
    return row


def _read_captions(path: Path) -> list[str]:
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: caption file is not UTF-8 text ({exc}); re-save it as UTF-8") from exc
    return [line.strip() for line in text.splitlines() if line.strip()]

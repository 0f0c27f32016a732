"""Helpers shared by the manifest makers: finding official files, reading CSVs, naming labels."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path

from rag_flamingo.audio import AUDIO_EXTENSIONS
from rag_flamingo.errors import ConfigError, ManifestError

Splits = dict[str, list[dict]]


def find_file(root: Path, name: str, subdirs: Iterable[str] = ()) -> Path:
    """``root/<subdir>/name`` for the first subdir where it exists (``root/name`` is tried first)."""
    candidates = [root / name] + [root / d / name for d in subdirs]
    for path in candidates:
        if path.is_file():
            return path
    raise ManifestError(
        f"{name} not found; looked for: {', '.join(str(p) for p in candidates)} "
        f"(point --metadata at the extracted dataset, see its data_manifests README)"
    )


def find_dir(root: Path, names: Iterable[str]) -> Path:
    """The first existing folder among ``root/<name>`` (``.`` means root itself)."""
    names = list(names)
    for name in names:
        path = root / name
        if path.is_dir():
            return path
    raise ManifestError(
        f"none of {', '.join(str(root / n) for n in names)} exists "
        f"(point --metadata at the extracted dataset, see its data_manifests README)"
    )


def read_csv(path: Path, columns: Iterable[str], header: bool = True, delimiter: str = ",") -> list[dict[str, str]]:
    """Rows of a CSV as dicts; ManifestError naming the file when a required column is missing.

    ``header=False``: the file has no header line; ``columns`` names its columns in order.
    """
    columns = list(columns)
    try:
        return _read_csv(path, columns, header, delimiter)
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None


def not_utf8(path: Path, exc: UnicodeDecodeError) -> ManifestError:
    """The error for a metadata file that is not UTF-8 text: the file, the byte, and the fix."""
    return ManifestError(
        f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
        f"the official files are UTF-8: re-extract it, or convert it (e.g. iconv -f latin1 -t utf-8)"
    )


def read_text(path: Path) -> str:
    """A metadata text file (UTF-8); ManifestError naming the file when it is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None


def _read_csv(path: Path, columns: list[str], header: bool, delimiter: str) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, fieldnames=None if header else columns, delimiter=delimiter)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise ManifestError(
                f"{path}: missing column(s) {', '.join(missing)} "
                f"(found: {', '.join(reader.fieldnames or [])}); is this the official file?"
            )
        rows = []
        for lineno, row in enumerate(reader, 2 if header else 1):
            if None in row or any(row.get(c) is None for c in columns):
                raise ManifestError(f"{path}: line {lineno} has the wrong number of fields")
            rows.append(row)
    if not rows:
        raise ManifestError(f"{path}: no rows")
    return rows


def read_json(path: Path) -> object:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc


def readable(name: str) -> str:
    """An official class name as answer text: underscores become spaces (``dog_bark`` -> ``dog bark``)."""
    return " ".join(name.replace("_", " ").split())


def to_int(value: str, path: Path, column: str) -> int:
    try:
        return int(float(value))
    except ValueError as exc:
        raise ManifestError(f"{path}: column {column} has {value!r}, expected a number") from exc


def audio_files(folder: Path) -> list[Path]:
    """Audio files directly in ``folder`` (sorted), by ``rag_flamingo.audio.AUDIO_EXTENSIONS`` (+ .au)."""
    extensions = {e.lower() for e in AUDIO_EXTENSIONS} | {".au"}
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions
    )


def fold_splits(rows: list[dict], folds: Iterable[int], query_fold: int | str) -> Splits:
    """``fold<k>`` for every fold, plus ``train`` (all other folds) and ``test`` (``query_fold``,
    the maker option: a number among ``folds``, else ConfigError naming it)."""
    folds = list(folds)
    span = f"{folds[0]}..{folds[-1]}"
    try:
        query_fold = int(str(query_fold).strip())
    except ValueError:
        raise ConfigError(
            f"query_fold={query_fold}: not a fold number; use one of {span} (--option query_fold=N)"
        ) from None
    if query_fold not in folds:
        raise ConfigError(f"query_fold={query_fold}: the folds are {span}; use one of them (--option query_fold=N)")
    splits: Splits = {f"fold{k}": [r for r in rows if r["fold"] == k] for k in folds}
    splits["train"] = [r for r in rows if r["fold"] != query_fold]
    splits["test"] = list(splits[f"fold{query_fold}"])
    return splits


def speaker_splits(rows: list[dict], test_speakers: Iterable[int], key: str = "actor") -> Splits:
    """``train`` / ``test`` by speaker (``row[key]``): no speaker is in both; ``all`` holds every row."""
    test = {int(s) for s in test_speakers}
    return {
        "all": list(rows),
        "train": [r for r in rows if int(r[key]) not in test],
        "test": [r for r in rows if int(r[key]) in test],
    }


def parse_speakers(value: str | Iterable[int] | None, path_hint: str) -> list[int] | None:
    """A maker option naming speakers: ``"1,5,9"`` or a list of numbers; None stays None."""
    if value is None or value == "":
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        return sorted({int(str(s).strip()) for s in items if str(s).strip()})
    except ValueError as exc:
        raise ManifestError(f"{path_hint}: speakers must be numbers separated by commas, got {value!r}") from exc

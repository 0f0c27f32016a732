"""FSD50K: ``FSD50K.ground_truth/{dev,eval,vocabulary}.csv`` + ``FSD50K.{dev,eval}_audio/<fname>.wav``.

``dev.csv``: fname, labels, mids, split (train/val); ``eval.csv``: fname, labels, mids;
``vocabulary.csv``: no header, (index, label, mid). 51,197 clips (0.3-30 s, 44.1 kHz), 200 classes
of the AudioSet ontology, multi-label: ``labels`` keeps the official order (leaf classes first,
then their ancestors: specific to general, as the AF1 prompt asks) with ``_`` as a space, ``mids``
the AudioSet ids. Splits: ``train`` / ``val`` (the dev split column), ``dev`` (both: the index)
and ``eval`` (the query).
"""

from __future__ import annotations

from pathlib import Path

from rag_flamingo.errors import ManifestError

from .common import Splits, find_file, read_csv, readable

GT_DIRS = ["FSD50K.ground_truth"]


def make(metadata: Path) -> Splits:
    vocabulary = _vocabulary(find_file(metadata, "vocabulary.csv", GT_DIRS))
    dev_csv = find_file(metadata, "dev.csv", GT_DIRS)
    eval_csv = find_file(metadata, "eval.csv", GT_DIRS)
    dev = [
        _row(dev_csv, r, "FSD50K.dev_audio", vocabulary)
        for r in read_csv(dev_csv, ["fname", "labels", "mids", "split"])
    ]
    evaluation = [
        _row(eval_csv, r, "FSD50K.eval_audio", vocabulary) for r in read_csv(eval_csv, ["fname", "labels", "mids"])
    ]
    return {
        "train": [r for r in dev if r["dev_split"] == "train"],
        "val": [r for r in dev if r["dev_split"] == "val"],
        "dev": dev,
        "eval": evaluation,
    }


def _vocabulary(path: Path) -> set[str]:
    return {r["label"] for r in read_csv(path, ["index", "label", "mid"], header=False)}


def _row(csv_path: Path, r: dict[str, str], audio_dir: str, vocabulary: set[str]) -> dict:
    labels = [x for x in r["labels"].split(",") if x]
    unknown = [x for x in labels if x not in vocabulary]
    if unknown or not labels:
        raise ManifestError(f"{csv_path}: clip {r['fname']}: label(s) {unknown or '(none)'} not in vocabulary.csv")
    row = {
        "id": r["fname"],
        "path": f"{audio_dir}/{r['fname']}.wav",
        "labels": [readable(x) for x in labels],
        "mids": r["mids"].split(","),
    }
    if r.get("split"):
        row["dev_split"] = r["split"]
    return row

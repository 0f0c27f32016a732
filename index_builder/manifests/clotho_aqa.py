"""Clotho-AQA: ``clotho_aqa_<split>.csv`` (file_name, QuestionText, answer, confidence) + ``audio_files/``.

Layout (Zenodo record 6473207, extracted into one folder)::

    clotho_aqa_train.csv   clotho_aqa_val.csv   clotho_aqa_test.csv   audio_files/<file_name>

1,991 Clotho clips (15-30 s), 6 questions each, every question answered by 3 annotators (3 CSV
lines). One manifest row per (clip, question): ``question``, ``answer`` (the annotators' majority;
on a three-way tie the first annotator's), ``answers`` (all three, in file order), ``unanimous``,
``binary`` (the answer is yes/no), ``numerical`` (the answer is a number: digits, or an English
number word from zero to twenty, or a ten up to ninety, or hundred). All questions of a clip share
``group`` (the clip's path): one recording, never its own shot. Splits ``train`` (index), ``val``,
``test`` (query), and the subsets AF1 reports (poster, in-domain table: ClothoAQA unanimous,
non-binary, numerical):

- ``<split>_unanimous``: the questions all three annotators answered alike;
- ``<split>_non_binary``: unanimous questions whose answer is not yes/no;
- ``<split>_numerical``: unanimous questions whose answer is a number.

AF1 defines none of the three in its poster or released code (the paper's text could not be read
here); the definitions above are OUR reading (docs/af1_prompts.md, "ClothoAQA subsets"): the
non-binary and numerical subsets are taken inside the unanimous one because AF1's headline ClothoAQA
figure is on the unanimous questions.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from rag_flamingo.errors import ManifestError
from rag_flamingo.metrics.aqa import YES_NO

from .common import Splits, read_csv

SPLITS = ("train", "val", "test")
COLUMNS = ("file_name", "QuestionText", "answer")
AUDIO_DIR = "audio_files"
NUMBER_WORDS = frozenset(
    [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
        "thirty",
        "forty",
        "fifty",
        "sixty",
        "seventy",
        "eighty",
        "ninety",
        "hundred",
    ]
)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


def make(metadata: Path, audio_dir: str = AUDIO_DIR) -> Splits:
    splits: Splits = {}
    for split in SPLITS:
        csv_path = metadata / f"clotho_aqa_{split}.csv"
        if not csv_path.is_file():
            continue
        rows = _questions(csv_path, audio_dir)
        splits[split] = rows
        splits[f"{split}_unanimous"] = [r for r in rows if r["unanimous"]]
        splits[f"{split}_non_binary"] = [r for r in rows if r["unanimous"] and not r["binary"]]
        splits[f"{split}_numerical"] = [r for r in rows if r["unanimous"] and r["numerical"]]
    if not splits:
        raise ManifestError(
            f"{metadata}: no clotho_aqa_<train|val|test>.csv found "
            "(download them and audio_files.zip from Zenodo record 6473207 into this folder)"
        )
    return splits


def normalize_answer(text: str) -> str:
    """An annotator's answer as answer text: stripped, lower-cased, no trailing full stop."""
    return " ".join(text.strip().lower().rstrip(".").split())


def is_number(answer: str) -> bool:
    """Whether an (already normalised) answer is a number: ``3``, ``2.5``, ``three``, ``twenty``."""
    return bool(_NUMBER.fullmatch(answer)) or answer in NUMBER_WORDS


def _questions(csv_path: Path, audio_dir: str) -> list[dict]:
    by_question: dict[tuple[str, str], list[str]] = {}
    for row in read_csv(csv_path, COLUMNS):
        name, question = row["file_name"].strip(), " ".join(row["QuestionText"].split())
        if not name or not question:
            raise ManifestError(f"{csv_path}: a line has an empty file_name or QuestionText")
        by_question.setdefault((name, question), []).append(normalize_answer(row["answer"]))
    out, per_clip = [], Counter[str]()
    for (name, question), answers in by_question.items():
        per_clip[name] += 1
        path = f"{audio_dir}/{name}"
        answer = _majority([a for a in answers if a] or [""])
        if not answer:
            raise ManifestError(f"{csv_path}: {name!r} question {question!r} has no answer")
        out.append(
            {
                "id": f"{Path(name).stem}#{per_clip[name]}",
                "path": path,
                "group": path,
                "question": question,
                "answer": answer,
                "answers": answers,
                "unanimous": len(set(answers)) == 1,
                "binary": answer in YES_NO,
                "numerical": is_number(answer),
            }
        )
    return out


def _majority(answers: list[str]) -> str:
    counts = Counter(answers)
    best = max(counts.values())
    return next(a for a in answers if counts[a] == best)  # ties: the first annotator's

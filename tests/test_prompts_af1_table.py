"""docs/af1_prompts.md: every suite=af1 run has a row; each row's "ours" is the engine's prompt for that
dataset's task byte for byte (prompts.build_prompt, the eval template the engine uses by default); "ours"
equals "reference" wherever the row says equal or assumed."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from rag_flamingo.config import EvaluateConfig
from rag_flamingo.prompts import build_prompt

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "af1_prompts.md"
SUITE = ROOT / "rag_flamingo" / "conf" / "suite" / "af1.yaml"


def _code(cell: str) -> str | None:
    match = re.fullmatch(r"`(.*)`", cell.strip())
    return match.group(1).replace("\\n", "\n") if match else None


def _rows() -> list[dict]:
    lines = [line for line in TABLE.read_text().splitlines() if line.startswith("| ") and "`</s>" in line]
    rows = []
    for line in lines:
        cells = [c.strip() for c in re.split(r" \| ", line.strip()[2:-2])]
        dataset, task, question, options, ours, reference, status = cells[:7]
        rows.append(
            {
                "dataset": dataset,
                "task": task,
                "question": _code(question),
                "options": None if options == "-" else [o.strip() for o in options.split(", ")],
                "ours": _code(ours),
                "reference": _code(reference),
                "status": status,
            }
        )
    return rows


def test_every_row_is_the_engines_prompt_byte_for_byte():
    rows = _rows()
    assert len(rows) >= 14
    for row in rows:
        item = {"id": "q", "label": "x", "captions": ["x"], "labels": ["x"], "answer": "yes"}
        if row["question"]:
            item["question"] = row["question"]
        ours = build_prompt(row["task"], item, [], row["options"]).text
        assert ours == row["ours"], row["dataset"]
        assert ours.startswith("</s>the task is ") and ours.endswith("\nanswer:<SEP>")
        assert row["status"] in ("equal", "assumed", "differs"), row
        if row["status"] == "differs":
            assert row["reference"] is None  # the reference's prompt is not reproducible: said in the note
        else:
            assert row["reference"] == ours, row["dataset"]


def test_every_af1_suite_run_has_its_row_and_the_engine_default_is_the_eval_template():
    covered = {(r["dataset"], r["task"]) for r in _rows()}
    runs = yaml.safe_load(SUITE.read_text())["runs"]
    assert {(r["dataset"], r["task"]) for r in runs} <= covered
    assert EvaluateConfig().flamingo.template == "eval"

"""A query loses only its own recording: same source and group, or an exact copy of its audio.

The repro of the self-exclusion bug: ``train/`` and ``test/`` folders, each with one clip per class
under the same relative names (``whistle/1.wav``): evaluate must find the train clip of the query's
class and agree with rag_classify; a copy of a train file among the queries is excluded and counted.
"""

from __future__ import annotations

import json
import shutil

import pytest

from rag_flamingo.classify import main as rag_classify
from support.clips import FOLDER_KINDS as KINDS
from support.clips import evaluate_folder_queries, write_class


@pytest.fixture
def folders(folder_stores):
    return folder_stores


def run_evaluate(folders, store, queries, out, *extra) -> dict:
    assert evaluate_folder_queries(folders, f"output_dir={folders / out}", *extra, store=store, queries=queries) == 0
    return json.loads((folders / out / "metrics.json").read_text())


def records(folders, out) -> list[dict]:
    return [json.loads(line) for line in (folders / out / "predictions.jsonl").read_text().splitlines()]


def test_same_relative_paths_in_another_folder_are_not_excluded(folders, tmp_path, capsys):
    metrics = run_evaluate(folders, "train_idx", "test", "eval_test", "predictor=[knn,prototype]", "shots=1")
    assert {(r["predictor"], r["accuracy"]) for r in metrics["results"]} == {("knn", 1.0), ("prototype", 1.0)}
    assert metrics["queries_with_copies_in_store"] == 0
    for r in records(folders, "eval_test"):
        if r["predictor"] == "knn":  # the train clip of its own class, though it has the query's name
            assert r["shot_ids"][0]["id"] == r["id"] and "copies" not in r
    capsys.readouterr()
    assert rag_classify([f"store={folders / 'train_idx'}", f"audio={folders / 'test'}", "k=1"]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert sorted((path.split("/")[-2], label) for path, label, _ in lines) == [(k, k) for k in sorted(KINDS)]


def test_leave_one_out_never_sees_the_query(folders):
    metrics = run_evaluate(folders, "loo_idx", "loo", "eval_loo", "predictor=[knn,prototype]", "shots=2")
    preds = records(folders, "eval_loo")
    assert len(preds) == 2 * 9
    for r in preds:
        assert r["id"] not in {s["id"] for s in r["shot_ids"]}
        if r["predictor"] == "knn":
            assert len(r["shot_ids"]) == 2
    by = {r["predictor"]: r for r in metrics["results"]}
    assert by["knn"]["accuracy"] == 1.0 and by["prototype"]["accuracy"] == 1.0


def test_exact_copy_across_folders_is_excluded_and_counted(folders, capsys):
    dup = folders / "dup"
    write_class(dup / "hum", "hum", 1, seed0=999, name="{i}.wav")
    (dup / "whistle").mkdir(parents=True)
    shutil.copy(folders / "train" / "whistle" / "0.wav", dup / "whistle" / "copied.wav")  # a leak
    metrics = run_evaluate(folders, "train_idx", "dup", "eval_dup", "predictor=[knn,prototype]", "shots=1")
    assert metrics["queries_with_copies_in_store"] == 1
    copied = [r for r in records(folders, "eval_dup") if r["id"] == "whistle/copied"]
    assert len(copied) == 2 and all(r["copies"] == 1 for r in copied)
    knn = next(r for r in copied if r["predictor"] == "knn")
    assert knn["shot_ids"][0]["id"] != "whistle/0"  # its copy is never its evidence
    prototype = next(r for r in copied if r["predictor"] == "prototype")
    assert "whistle" not in prototype["label_scores"]  # the only whistle row is the copy
    assert "leak: 1 queries have an exact copy" in capsys.readouterr().out

"""An output folder holds one run: resumed only by the same run key, refused otherwise (no stale results)."""

from __future__ import annotations

import json

from support.clips import evaluate_folder_queries


def run(folder_stores, out, *extra, store="train_idx") -> int:
    return evaluate_folder_queries(folder_stores, "predictor=knn", "shots=1", f"output_dir={out}", *extra, store=store)


def test_a_reused_folder_is_refused_for_another_run_and_restarted_on_request(folder_stores, tmp_path, capsys):
    out = tmp_path / "eval"
    assert run(folder_stores, out) == 0
    first = json.loads((out / "run.json").read_text())
    before = (out / "predictions.jsonl").read_text()
    capsys.readouterr()
    assert run(folder_stores, out) == 0  # the same run: resumed, nothing redone
    assert (out / "predictions.jsonl").read_text() == before

    for extra, differs in (
        ([f"store={folder_stores / 'loo_idx'}"], "store"),
        (["retrieval=random"], "retrieval"),
        (["predictors.knn.temperature=0.5"], "predictors"),
        (["flamingo.template=train"], "flamingo"),
    ):
        assert run(folder_stores, out, *extra) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"differs in: {differs}" in err and "overwrite=true" in err
        assert json.loads((out / "run.json").read_text()) == first  # untouched

    assert run(folder_stores, out, "overwrite=true", store="loo_idx") == 0
    second = json.loads((out / "run.json").read_text())
    assert second["key"] != first["key"] and second["settings"]["store"]["path"].endswith("loo_idx")
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert {s["id"].split("/")[-1] for r in preds for s in r["shot_ids"]} <= {"0", "1", "2"}
    assert len(preds) == 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run_key"] == second["key"] and metrics["store"].endswith("loo_idx")


def test_the_default_folder_is_named_by_the_run_key(folder_stores, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert evaluate_folder_queries(folder_stores, "predictor=prototype") == 0
    (folder,) = (tmp_path / "outputs" / "evaluate").iterdir()
    key = json.loads((folder / "run.json").read_text())["key"]
    assert folder.name == f"folder-event_classification-all-{key[:8]}"

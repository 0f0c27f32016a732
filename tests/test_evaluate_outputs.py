"""An output folder holds one run: resumed only by the same run key, refused otherwise (no stale results)."""

from __future__ import annotations

import json
import shutil

import pytest
import soundfile as sf

from support.clips import SR, evaluate_folder_queries, synth


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


def test_a_query_whose_audio_changed_is_redone_and_only_that_one(folder_stores, tmp_path):
    """Rerunning into the same folder after query files changed: the changed queries are predicted
    again (their old records dropped), the others kept as they are; run.json says what audio it was."""
    queries = tmp_path / "queries"
    shutil.copytree(folder_stores / "test", queries)
    good_clicks = (queries / "clicks" / "0.wav").read_bytes()
    (queries / "clicks" / "0.wav").write_bytes(b"RIFF not really a wav")  # rejected at first
    out = tmp_path / "eval"
    args = ("predictor=[knn,prototype]", "shots=1", f"output_dir={out}")
    assert evaluate_folder_queries(folder_stores, *args, queries=str(queries)) == 0
    first = {(r["predictor"], r["id"]): r for r in records(out / "predictions.jsonl")}
    assert {i for _, i in first} == {"hum/0", "whistle/0"}
    assert [r["id"] for r in records(out / "rejected.jsonl")] == ["clicks/0"]
    audio_before = json.loads((out / "run.json").read_text()).get("query_audio")

    sf.write(queries / "whistle" / "0.wav", synth("hum", 4242), SR)  # now a hum: knn must say so
    (queries / "clicks" / "0.wav").write_bytes(good_clicks)  # repaired
    assert evaluate_folder_queries(folder_stores, *args, queries=str(queries)) == 0
    second = {(r["predictor"], r["id"]): r for r in records(out / "predictions.jsonl")}
    assert set(second) == {(p, i) for p in ("knn", "prototype") for i in ("clicks/0", "hum/0", "whistle/0")}
    assert records(out / "rejected.jsonl") == []
    for key in first:
        if key[1] == "hum/0":
            assert second[key] == first[key]  # unchanged audio: kept as it was
    assert second["knn", "whistle/0"]["output"] == "hum" != first["knn", "whistle/0"]["output"]
    assert second["knn", "whistle/0"]["content"] != first["knn", "whistle/0"]["content"]
    metrics = json.loads((out / "metrics.json").read_text())
    by = {r["predictor"]: r for r in metrics["results"]}
    assert by["knn"]["n"] == 3 and by["knn"]["accuracy"] == pytest.approx(2 / 3)  # not the stale 1.0
    run = json.loads((out / "run.json").read_text())
    assert audio_before["files"] == 3 and audio_before["unreadable"] == 0  # broken bytes still hash
    assert run["query_audio"]["content_digest"] != audio_before["content_digest"]
    assert metrics["query_audio"] == run["query_audio"] and metrics["run_key"] == run["key"]
    assert run["query_audio"]["content_digest"] in (out / "results.md").read_text()


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_merge_keeps_the_records_of_the_current_audio_from_any_rank(tmp_path):
    from rag_flamingo.runner import ResultFolder

    def rec(i, content, output):
        return {"predictor": "knn", "shots": 1, "id": i, "content": content, "output": output}

    folder = ResultFolder(tmp_path, rank=1)
    folder.append([rec("a", "old", "stale"), rec("b", "b1", "kept")], [])  # an earlier run on 2 ranks
    ResultFolder(tmp_path, rank=0).append([rec("a", "new", "fresh"), rec("z", "z1", "not queried now")], [])
    legacy = {"predictor": "knn", "shots": 1, "id": "c", "output": "no content"}  # before records named it
    ResultFolder(tmp_path, rank=0).append([legacy], [{"id": "d", "path": None, "reason": "x", "content": "d0"}])
    contents = {"a": "new", "b": "b1", "c": "c1", "d": "d1"}
    done, rejected = ResultFolder(tmp_path).done(contents)
    assert done == {"knn|1|a", "knn|1|b", "knn|1|z"} and rejected == set()
    preds, rej = ResultFolder(tmp_path).merge({"a": 0, "b": 1, "c": 2, "d": 3}, contents)
    assert [(r["id"], r["output"]) for r in preds] == [("a", "fresh"), ("b", "kept"), ("z", "not queried now")]
    assert rej == []

"""evaluate: tiny Flamingo + baselines end to end, resume after a crash, rejected queries, ranks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from rag_flamingo.cli import expand_overrides
from rag_flamingo.components import prepare
from rag_flamingo.datasets import demo
from rag_flamingo.datasets.manifest import read_manifest, write_manifest
from rag_flamingo.distributed import Ranks
from rag_flamingo.engine import RagFlamingo
from rag_flamingo.errors import ConfigError
from rag_flamingo.evaluate import LIST_KEYS, evaluate, load_config, run_queries
from rag_flamingo.model import GenerationSettings
from rag_flamingo.runner import ResultFolder
from support.engine import TinyWindowEncoder, build_store, embed_rows, tiny_flamingo


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = demo.ensure_demo()
    train = read_manifest(root / "train.jsonl")
    enc = TinyWindowEncoder()
    store = build_store(tmp_path_factory.mktemp("store"), train, embed_rows(enc, train, root), enc.fingerprint())
    model, tok = tiny_flamingo()
    return dict(root=root, enc=enc, store=store, model=model, tok=tok)


def engine_for(setup):
    return RagFlamingo(
        setup["store"],
        setup["model"],
        setup["tok"],
        setup["enc"],
        setup["enc"],
        generation=GenerationSettings(max_new_tokens=4),
    )


def config(setup, tmp_path, *extra):
    return load_config(
        [
            "dataset=demo",
            "task=classification",
            f"store={setup['store'].root}",
            f"output_dir={tmp_path / 'eval'}",
            "progress=false",
            *extra,
        ]
    )


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_flamingo_and_baselines_end_to_end(setup, tmp_path):
    cfg = config(setup, tmp_path, "predictor=[flamingo,knn,prototype]", "shots=[0,2]", "limit=12", "batch_size=5")
    summary = evaluate(cfg, encoder=setup["enc"], engine=engine_for(setup))
    out = tmp_path / "eval"
    preds = lines(out / "predictions.jsonl")
    combos = {(r["predictor"], r["shots"]) for r in preds}
    assert combos == {("flamingo", 0), ("flamingo", 2), ("knn", 2), ("prototype", None)}  # knn 0 skipped
    assert len(preds) == 4 * 12
    for r in preds:
        assert r["target"] and isinstance(r["output"], str)
        if r["predictor"] == "flamingo":
            assert r["prompt"].count("<audio>") == r["shots"] + 1 and len(r["shot_ids"]) == r["shots"]
            assert "options:" in r["prompt"]  # the store's label set is offered to the query
        if r["predictor"] == "knn":
            assert len(r["shot_ids"]) == 2 and r["output"] in setup["store"].label_set()
    by = {(r["predictor"], r["shots"]): r for r in summary["results"]}
    assert by[("flamingo", 2)]["n"] == 12 and 0.0 <= by[("flamingo", 2)]["accuracy"] <= 1.0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["results"]) == 4
    assert "| flamingo | 2 | 12 |" in (out / "results.md").read_text()
    # chance next to the results: 12 demo labels; majority = the most frequent target of the 12 queries
    targets = [r["target"] for r in preds if r["predictor"] == "knn"]
    majority = max(targets.count(t) for t in targets) / len(targets)
    assert metrics["chance"] == {"uniform": 1 / 12, "majority": majority, "options": 12}
    assert f"chance: {1 / 12:.4f} (uniform over 12 options)" in (out / "results.md").read_text()
    assert (out / "metric_vs_shots.png").stat().st_size > 1000  # two shot counts for flamingo


def test_resume_after_a_crash_redoes_only_the_missing_queries(setup, tmp_path):
    cfg = config(setup, tmp_path, "predictor=flamingo", "shots=1", "limit=10", "batch_size=3")
    eng = engine_for(setup)
    calls = []
    real = eng.generate

    def crashing(task, items, *args, **kw):
        calls.append([it["id"] for it in items])
        if len(calls) == 3:
            raise RuntimeError("simulated crash (e.g. the job was killed)")
        return real(task, items, *args, **kw)

    eng.generate = crashing
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate(cfg, encoder=setup["enc"], engine=eng)
    part = tmp_path / "eval" / "parts" / "predictions-rank0.jsonl"
    first = lines(part)
    assert len(first) == 6  # two batches of 3 were written before the crash
    with open(part, "a") as f:
        f.write('{"predictor": "flamingo", "shots": 1, "id": "cut mid-li')  # a line cut by the kill
    calls.clear()
    eng.generate = real
    eng.generate = lambda task, items, *a, **kw: calls.append([it["id"] for it in items]) or real(task, items, *a, **kw)
    summary = evaluate(cfg, encoder=setup["enc"], engine=eng)
    redone = [i for c in calls for i in c]
    assert len(redone) == 4 and not set(redone) & {r["id"] for r in first}
    final = lines(tmp_path / "eval" / "predictions.jsonl")
    assert len(final) == 10 and len({r["id"] for r in final}) == 10
    assert [r for r in final if r["id"] in {x["id"] for x in first}] == first  # earlier records kept as is
    assert summary["results"][0]["n"] == 10
    calls.clear()
    evaluate(cfg, encoder=setup["enc"], engine=eng)  # everything done: nothing is generated again
    assert calls == []


def test_bad_query_audio_is_rejected_not_fatal(setup, tmp_path):
    qdir = tmp_path / "queries"
    (qdir / "audio").mkdir(parents=True)
    rows = read_manifest(setup["root"] / "test.jsonl")[:3]
    for r in rows:
        shutil.copy(setup["root"] / r["path"], qdir / "audio" / f"{r['id'].replace('/', '_')}.wav")
        r["path"] = f"audio/{r['id'].replace('/', '_')}.wav"
    sf.write(qdir / "audio" / "silent.wav", np.zeros(16000, np.float32), 16000)
    (qdir / "audio" / "broken.wav").write_bytes(b"RIFF not really a wav")
    rows += [
        {"id": "silent", "path": "audio/silent.wav", "label": "bell"},
        {"id": "missing", "path": "audio/nope.wav", "label": "bell"},
        {"id": "broken", "path": "audio/broken.wav", "label": "bell"},
        {"id": "nolabel", "path": rows[0]["path"]},
    ]
    write_manifest(rows, qdir / "test.jsonl")
    cfg = config(setup, tmp_path, "predictor=knn", "shots=3", f"dataset.manifest={qdir / 'test.jsonl'}")
    summary = evaluate(cfg, encoder=setup["enc"])
    rejected = {r["id"]: r["reason"] for r in lines(tmp_path / "eval" / "rejected.jsonl")}
    assert set(rejected) == {"silent", "missing", "broken", "nolabel"}
    assert "silent" in rejected["silent"] and "not found" in rejected["missing"]
    assert summary["rejected"] == 4 and summary["results"][0]["n"] == 3


def test_ranks_split_queries_and_rank0_merges(setup, tmp_path):
    cfg = config(setup, tmp_path, "predictor=[knn,prototype]", "shots=2", "limit=7")
    ev = prepare(cfg, encoder=setup["enc"])
    root = tmp_path / "eval"
    for rank in (1, 0):  # what torchrun's two ranks do before the barrier
        run_queries(ev, ResultFolder(root, rank), Ranks(rank, 2), progress=False)
    rank1 = {r["id"] for r in lines(root / "parts" / "predictions-rank1.jsonl")}
    assert rank1 == {r["id"] for r in ev.rows[1::2]}
    preds, _ = ResultFolder(root, 0).merge({r["id"]: i for i, r in enumerate(ev.rows)})
    assert [r["id"] for r in preds if r["predictor"] == "knn"] == [r["id"] for r in ev.rows]
    assert not list((root / "parts").glob("*.jsonl"))


def test_overrides_expand_grid_in_one_run_and_other_sweeps_per_run():
    assert expand_overrides(["-m", "predictor=knn,prototype", "shots=1,4,8", "dataset=demo"], LIST_KEYS) == [
        ["predictor=[knn,prototype]", "shots=[1,4,8]", "dataset=demo"]
    ]
    runs = expand_overrides(["retrieval=knn,random", "shots=1,4"], LIST_KEYS)
    assert runs == [["shots=[1,4]", "retrieval=knn"], ["shots=[1,4]", "retrieval=random"]]


def test_flamingo_built_from_the_config(setup, tmp_path):
    """The config path: the `model` group (rag_flamingo/conf/model/tiny.yaml: checkpoint + config + tokenizer files),
    a window encoder named by _target_, decoding from model.generation."""
    cfg = config(
        setup,
        tmp_path,
        "predictor=flamingo",
        "shots=1",
        "limit=2",
        "model=tiny",
        "model.generation.max_new_tokens=3",
        "model.audio_encoder={_target_:support.engine.TinyWindowEncoder}",
    )
    summary = evaluate(cfg, encoder=setup["enc"])
    assert summary["results"][0]["predictor"] == "flamingo" and summary["results"][0]["n"] == 2
    records = lines(tmp_path / "eval" / "predictions.jsonl")
    assert all(r["prompt"].count("<audio>") == 2 and isinstance(r["output"], str) for r in records)
    # a misspelt decoding setting is a config error naming it, not a TypeError
    with pytest.raises(ConfigError, match="num_beam"):
        evaluate(
            config(
                setup,
                tmp_path,
                "predictor=flamingo",
                "shots=1",
                "limit=1",
                "model=tiny",
                "+model.generation.num_beam=3",
                "output_dir=" + str(tmp_path / "y"),
                "model.audio_encoder={_target_:support.engine.TinyWindowEncoder}",
            ),
            encoder=setup["enc"],
        )
    # the default model (foundation, hub weights) offline: a clear error with what to download
    with pytest.raises(Exception, match="download"):
        evaluate(
            config(setup, tmp_path, "predictor=flamingo", "output_dir=" + str(tmp_path / "x")), encoder=setup["enc"]
        )


def test_rag_classify_with_flamingo(setup, tmp_path, capsys):
    from rag_flamingo.classify import classify
    from rag_flamingo.classify import load_config as classify_config

    audio = tmp_path / "in"
    audio.mkdir()
    for r in read_manifest(setup["root"] / "test.jsonl")[:2]:
        shutil.copy(setup["root"] / r["path"], audio / r["path"].rsplit("/", 1)[-1])
    cfg = classify_config(
        [
            f"store={setup['store'].root}",
            f"audio={audio}",
            "predictor=flamingo",
            "k=2",
            f"out={tmp_path / 'labels.jsonl'}",
        ]
    )
    records = classify(cfg, encoder=setup["enc"], engine=engine_for(setup))
    assert len(records) == 2 and all(len(r["shots"]) == 2 and isinstance(r["label"], str) for r in records)
    assert lines(tmp_path / "labels.jsonl") == records
    assert capsys.readouterr().out.count("\n") == 2
    # the model is the evaluate config's `model` group, chosen by name, then key=value settings
    chosen = classify_config(["store=x", "audio=y", "model=tiny", "model.generation.max_new_tokens=2"]).model
    assert chosen["name"] == "af1_tiny" and chosen["generation"]["max_new_tokens"] == 2
    assert classify_config(["store=x", "audio=y"]).model["name"] == "af1_foundation"


def test_a_transductive_adapt_predicts_every_query_together(setup, tmp_path):
    """adapt=center: one batch whatever batch_size (its statistics are the whole query set's), the
    setting in the run key, refused on several ranks."""
    outputs = {}
    for batch in (3, 50):
        extra = ("predictor=[knn,lda]", "shots=2", "limit=10", "adapt=center", f"batch_size={batch}")
        cfg = config(setup, tmp_path / str(batch), *extra)
        summary = evaluate(cfg, encoder=setup["enc"])
        assert summary["run"]["adapt"] == "center"
        outputs[batch] = [
            (r["predictor"], r["id"], r["output"]) for r in lines(tmp_path / str(batch) / "eval" / "predictions.jsonl")
        ]
    assert outputs[3] == outputs[50] and len(outputs[3]) == 20
    plain = evaluate(config(setup, tmp_path / "plain", "predictor=lda", "limit=10"), encoder=setup["enc"])
    assert "adapt" not in plain["run"] and plain["run_key"] != summary["run_key"]
    ev = prepare(config(setup, tmp_path / "ranks", "predictor=lda", "limit=10", "adapt=center"), encoder=setup["enc"])
    with pytest.raises(ConfigError, match="one process"):
        run_queries(ev, ResultFolder(tmp_path / "ranks" / "eval", 0), Ranks(0, 2), progress=False)


def test_a_resumed_transductive_run_labels_every_query_again(setup, tmp_path, caplog):
    """A transductive run cut short (records of some queries missing): the rerun labels all queries
    as one batch again, so its records equal a fresh run's, not those of a batch of the leftovers."""
    extra = ("predictor=lda", "limit=10", "adapt=center")
    evaluate(config(setup, tmp_path / "fresh", *extra), encoder=setup["enc"])
    fresh = lines(tmp_path / "fresh" / "eval" / "predictions.jsonl")
    evaluate(config(setup, tmp_path / "cut", *extra), encoder=setup["enc"])
    cut = tmp_path / "cut" / "eval" / "predictions.jsonl"
    cut.write_text("".join(json.dumps(r) + "\n" for r in lines(cut)[:3]))  # 7 of 10 queries lost
    with caplog.at_level("WARNING", logger="rag_flamingo.evaluate"):
        evaluate(config(setup, tmp_path / "cut", *extra), encoder=setup["enc"])
    assert "7 of 10 are new or changed, so all are labelled again" in caplog.text
    assert [(r["id"], r["output"], r["label_scores"]) for r in lines(cut)] == [
        (r["id"], r["output"], r["label_scores"]) for r in fresh
    ]

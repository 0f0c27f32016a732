"""`evaluate suite=...`: the plan on a fresh clone, and a whole suite end to end on tiny fake datasets
of three families (classification, captioning, AQA) in their official layouts, with stores built by
the real pipeline (tiny window encoder) and the tiny random-weight Audio Flamingo."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from index_builder.manifests import make_manifests
from rag_flamingo.datasets.manifest import read_manifest
from rag_flamingo.encoders.base import _REGISTRY
from rag_flamingo.evaluate import main
from support.engine import TinyWindowEncoder

RATE = 16000
TINY_MODEL = [
    "model=tiny",
    "model.audio_encoder={_target_:support.engine.TinyWindowEncoder}",
    "model.generation.max_new_tokens=3",
    "progress=false",
]


def _tone(path: Path, freq: float, seed: int, seconds: float = 1.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * RATE)) / RATE
    noise = np.random.default_rng(seed).standard_normal(t.size) * 0.02
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32), RATE)


def _csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _datasets(data: Path) -> None:
    """nonspeech7k (classification), clotho (captioning), clotho_aqa (AQA): official layouts + manifests."""
    ns = data / "nonspeech7k"
    for split, n in (("train", 4), ("test", 2)):
        rows = []
        for i in range(n):
            for label, freq in (("cough", 300.0), ("laugh", 1200.0)):
                _tone(ns / split / f"{label}{i}.wav", freq * (1 + 0.05 * i), i)
                rows.append([f"{label}{i}.wav", label.capitalize()])
        _csv(ns / f"metadata of {split} set.csv", ["Filename", "Classname"], rows)
    cl = data / "clotho"
    header = ["file_name"] + [f"caption_{i}" for i in range(1, 6)]
    for official, n in (("development", 4), ("evaluation", 2)):
        rows = []
        for i in range(n):
            _tone(cl / official / f"clip{i}.wav", 200.0 * (i + 1), i)
            rows.append([f"clip{i}.wav", *[f"a tone number {i} caption {k}" for k in range(5)]])
        _csv(cl / f"clotho_captions_{official}.csv", header, rows)
    aqa = data / "clotho_aqa"
    for split, n in (("train", 3), ("test", 2)):
        rows = []
        for i in range(n):
            _tone(aqa / "audio_files" / f"{split}{i}.wav", 500.0 + 100 * i, i)
            rows += [[f"{split}{i}.wav", "Is it a tone?", "yes", "yes"]] * 3
            rows += [[f"{split}{i}.wav", "What is it?", "tone", "yes"]] * 3
        _csv(aqa / f"clotho_aqa_{split}.csv", ["file_name", "QuestionText", "answer", "confidence"], rows)
    for name in ("nonspeech7k", "clotho", "clotho_aqa"):
        make_manifests(name, data / name, data / name / "manifests")


SUITE = """
name: mini
dry_run: false
output_dir: null
features: tiny_windows
overrides: [encoder=tiny_windows]
build_overrides: [num_workers=0, batch_size=4]
baselines: {classification: [knn, prototype], tagging: [knn, prototype], captioning: [knn], aqa: []}
baseline_shots: [2]
costs:
  cpu:
    source: made up for the test
    embed: {tiny_windows: 0.5}
    features: {tiny_windows: 0.25}
    query: {flamingo: 2.0}
runs:
  - dataset: nonspeech7k
    setting: in-domain
    shots: [0]
    paper: {value: 50.0, scale: percent, source: "a test figure (Table 0)"}
    paper_other:
      - {value: 40.0, scale: percent, metric: "accuracy (a subset)", comparable: false, note: "subset not run"}
    reproduced: [{value: 0.5, source: "a reproduction"}, {value: null, source: "unreadable", note: "cut off"}]
  - {dataset: clotho, setting: zero-shot, shots: [0, 2], paper: {value: null, source: null}}
  - {dataset: clotho_aqa, task: aqa, setting: in-domain, shots: [0, 1]}
  - {dataset: crema_d, setting: zero-shot, shots: [0]}
"""


@pytest.fixture
def suite_env(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    (conf / "suite").mkdir(parents=True)
    (conf / "encoder").mkdir()
    (conf / "suite" / "mini.yaml").write_text(SUITE)
    (conf / "encoder" / "tiny_windows.yaml").write_text("name: tiny_windows\n")
    monkeypatch.setenv("RAG_FLAMINGO_CONF_PATH", str(conf))
    monkeypatch.setitem(_REGISTRY, "tiny_windows", lambda checkpoint=None, **options: TinyWindowEncoder(**options))
    data, cache, out = tmp_path / "data", tmp_path / "cache", tmp_path / "suite_out"
    roots = [f"data_root={data}", f"cache_root={cache}", f"suite.output_dir={out}"]
    return {"data": data, "cache": cache, "out": out, "roots": roots}


def test_af1_dry_run_on_a_fresh_clone(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAG_FLAMINGO_DATA_ROOT", str(tmp_path / "no_data"))
    assert main(["suite=af1", "suite.dry_run=true", f"cache_root={tmp_path / 'cache'}"]) == 0
    out = capsys.readouterr().out
    assert "suite af1: 17 runs" in out  # the 13 sets; ClothoAQA's 3 subsets and NSynth's 3 tasks are runs
    for name in (
        "clotho_aqa-aqa",
        "music_avqa-aqa",
        "nonspeech7k-event_classification",
        "crema_d-emotion_classification",
        "ravdess-emotion_classification",
        "audiocaps-captioning",
        "medley_solos_db-instrument_classification",
        "clotho_aqa-aqa-non_binary",
        "clotho_aqa-aqa-numerical",
        "nsynth-instrument_classification",
        "nsynth-quality_classification",
        "nsynth-source_classification",
    ):
        assert f"| {name} |" in out
    assert out.count("skip: dataset") == 17 and "python -m index_builder.manifests clotho_aqa" in out
    assert "no manifest for split 'test_numerical'" in out and "no manifest for split 'test_source'" in out
    assert "skipped: 17" in out and not (tmp_path / "cache").exists()  # nothing built, nothing loaded
    # every run prints the published figure(s) with scale and source, and others' reproductions
    rows = [line for line in out.splitlines() if line.startswith("| ") and "skip: dataset" in line]
    head = next(line for line in out.splitlines() if line.startswith("| run |")).split(" | ")
    paper, reproduced = head.index("paper"), head.index("reproduced |")
    assert len(rows) == 17 and all("[poster, " in row.split(" | ")[paper] for row in rows)
    for cell in (
        "86.9 % accuracy (unanimous) @0 shots [poster, in-domain table]",
        "86.7 % accuracy (unanimous) @0 shots [#9]",
        "| 0.465 CIDEr @0 shots [poster, in-domain table (Clotho-v2)] | 0.461 CIDEr @0 shots [#9] |",
        "0.538 CIDEr (paper's 8 shots) @7 shots [poster, retrieval-augmented captioning table]",
        "≈94.7 % accuracy (paper's 8 shots) @7 shots [poster, ICL-improvement plot]",
        "n/a @0 shots (row not readable in the stored copy) [#9]",
    ):
        assert cell in out, cell
    assert reproduced > paper


def test_unknown_suite_and_settings_are_one_line_errors(capsys):
    assert main(["suite=af2"]) == 2
    assert "suite=af2 is not a known suite" in capsys.readouterr().err
    assert main(["suite.dry_run=true"]) == 2  # no suite chosen: suite has no such key
    assert "suite.dry_run needs a suite: pick one with suite=<name> (e.g. suite=demo suite.dry_run=true)" in (
        capsys.readouterr().err
    )


def _records(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.mark.slow
def test_suite_end_to_end_with_the_tiny_model(suite_env, capsys, monkeypatch):
    import rag_flamingo.model as model_pkg

    loads = []
    real_load = model_pkg.load_model
    monkeypatch.setattr(model_pkg, "load_model", lambda mc, *a, **k: loads.append(mc) or real_load(mc, *a, **k))
    _datasets(suite_env["data"])
    args = ["suite=mini", *suite_env["roots"], *TINY_MODEL]
    # the plan only: three stores to build, one dataset without data listed as skipped
    assert main([*args, "suite.dry_run=true"]) == 0
    plan = capsys.readouterr().out
    assert "| nonspeech7k-event_classification | in-domain | build | 4 | 8 | [0] | knn, prototype @ [2] |" in plan
    # 8 items x (0.5 + 0.25) s to build; 4 queries x (2 calls x 0.5 + 1 shot count x 2.0) s to answer
    assert "build 6 s, queries 12 s" in plan
    assert "| crema_d-emotion_classification | zero-shot | skip: dataset 'crema_d': no manifest" in plan
    assert "stores to build: 3" in plan and not suite_env["cache"].exists()

    assert main(args) == 0
    assert len(loads) == 1  # three runs with the model (six evaluations): one load for the suite
    out = suite_env["out"]
    results = json.loads((out / "results.json").read_text())
    runs = {r["dataset"]: r for r in results["runs"]}
    assert [r["status"] for r in results["runs"]] == ["done", "done", "done", "skip"]
    ns = runs["nonspeech7k"]
    ours = {(e["predictor"], e["shots"]): e for e in ns["ours"]}
    assert set(ours) == {("flamingo", 0), ("knn", 2), ("prototype", None)}
    # every number of ours is the run folder's own score (metrics.json written by evaluate)
    metrics = json.loads((Path(ns["output_dir"]) / "metrics.json").read_text())
    assert {(r["predictor"], r["shots"]): r["accuracy"] for r in metrics["results"]} == {
        k: e["value"] for k, e in ours.items()
    }
    assert ours[("prototype", None)]["value"] == 1.0  # two far-apart tones: the centroids separate them
    assert ns["metric"] == "accuracy" and ns["paper"]["value"] == 50.0 and ns["paper"]["scale"] == "percent"
    decoding = json.loads((Path(ns["output_dir"]) / "run.json").read_text())["decoding"]
    assert decoding["backend"] == "RagFlamingo" and decoding["effective"]["max_new_tokens"] == 3
    # ours against every published figure: the flamingo result at the figure's shots, with its interval
    flamingo = next(r for r in metrics["results"] if r["predictor"] == "flamingo")
    lo, hi = flamingo["ci"]["accuracy"]
    assert lo <= flamingo["accuracy"] <= hi and flamingo["bootstrap"]["resamples"] == 1000
    verdicts = [(v["kind"], v["published"], v["verdict"]) for v in ns["versus_paper"]]
    inside = "inside" if lo <= 0.5 <= hi else "outside"
    assert verdicts == [
        ("paper", 0.5, inside),
        ("paper", 0.4, "not comparable: subset not run"),
        ("reproduced", 0.5, inside),
        ("reproduced", None, "no published value (cut off)"),
    ]
    assert {(e["predictor"], e["shots"]) for e in runs["clotho"]["ours"]} == {
        ("flamingo", 0),
        ("flamingo", 2),
        ("knn", 2),
    }
    assert runs["clotho"]["metric"] == "cider_d"
    assert {(e["predictor"], e["shots"]) for e in runs["clotho_aqa"]["ours"]} == {("flamingo", 0), ("flamingo", 1)}
    preds = _records(Path(runs["clotho_aqa"]["output_dir"]) / "predictions.jsonl")
    one_shot = [p for p in preds if p["shots"] == 1]
    assert len(preds) == 8 and all(p["prompt"].count("<audio>") == 2 for p in one_shot)
    assert all(
        p["prompt"].startswith("</s>Here are similar examples. The task is audio question answering.") for p in one_shot
    )
    # a question never gets a shot of its own clip (its group), and the store holds the model's features
    store_items = read_manifest(suite_env["data"] / "clotho_aqa" / "manifests" / "train.jsonl")
    assert all(
        s["id"] not in {r["id"] for r in store_items if r["path"].endswith(p["id"].split("#")[0] + ".wav")}
        for p in one_shot
        for s in p["shot_ids"]
    )
    assert json.loads((Path(runs["clotho_aqa"]["store"]) / "store.json").read_text())["features"]["tiny_windows"]
    table = (out / "results.md").read_text()
    assert "| nonspeech7k | event_classification | in-domain | accuracy |" in table
    assert "| 50.0 % | 0.5000 | a test figure (Table 0) | done |" in table and "| n/a | n/a | n/a | done |" in table
    assert (
        "| nonspeech7k | event_classification | paper | accuracy | 0 | "
        f"{flamingo['accuracy']:.4f} [{lo:.4f}, {hi:.4f}] | 50.0 % (0.5000) | "
        f"a test figure (Table 0) | {inside} |" in table
    )
    assert "| crema_d |" in table and "skip (dataset 'crema_d'" in table
    assert (out / "ours_vs_paper.png").stat().st_size > 0
    capsys.readouterr()

    # rerun: every store is reused, every evaluation resumes with nothing left to do
    done = {name: Path(r["output_dir"]) / "predictions.jsonl" for name, r in runs.items() if r["status"] == "done"}
    before = {name: path.read_text() for name, path in done.items()}
    assert main(args) == 0
    again = capsys.readouterr().out
    assert "| nonspeech7k-event_classification | in-domain | ready |" in again and "stores to build: 0" in again
    assert {name: path.read_text() for name, path in done.items()} == before


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: bad\nbaseline_shot: [1]\nruns: [{dataset: demo}]\n",
            "unknown key 'suite.baseline_shot' (did you mean 'baseline_shots'?)",
        ),
        ("name: bad\nruns:\n  - {dataset: demo, tsak: captioning}\n", "unknown key 'tsak' (did you mean 'task'?)"),
        (
            "name: bad\nruns:\n  - {dataset: demo, paper: {value: 50, scale: percnt}}\n",
            "run demo.paper.scale=percnt: must be one of fraction, percent (did you mean 'percent'?)",
        ),
        (
            "name: bad\nruns:\n  - {dataset: demo, paper: {vlaue: 50}}\n",
            "unknown key 'paper.vlaue' (did you mean 'value'?)",
        ),
        (
            "name: bad\nruns:\n  - {dataset: demo, shots: [abc]}\n",
            "shots[0]: Value 'abc' of type 'str' could not be converted",
        ),
        ("name: bad\nruns: [\n  - {dataset: demo\n", "bad.yaml:3: not valid YAML"),
        (
            "name: bad\nbaselines: {clasification: [knn]}\nruns: [{dataset: demo}]\n",
            "baselines.clasification is not a task family (did you mean 'classification'?)",
        ),
        ("name: bad\nbaseline_shots: [-1]\nruns: [{dataset: demo}]\n", "baseline_shots=[-1]: shot counts must be >= 0"),
        ("name: bad\nruns: [{dataset: demo, shots: [0, -4]}]\n", "runs[0].shots=[0, -4]: shot counts must be >= 0"),
        (
            "name: bad\nruns:\n  - {dataset: demo, metric: acuracy}\n",
            "run demo-event_classification: metric=acuracy is not a classification metric (did you mean 'accuracy'?)",
        ),
    ],
)
def test_a_suite_file_is_checked_against_its_schema(tmp_path, capsys, monkeypatch, text, expected):
    (tmp_path / "conf" / "suite").mkdir(parents=True)
    (tmp_path / "conf" / "suite" / "bad.yaml").write_text(text)
    monkeypatch.setenv("RAG_FLAMINGO_CONF_PATH", str(tmp_path / "conf"))
    assert main(["suite=bad", "suite.dry_run=true", f"cache_root={tmp_path / 'cache'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


def test_a_dry_run_writes_nothing_and_names_runs_that_cannot_run(tmp_path, capsys, monkeypatch):
    """suite=demo on a fresh cache: the plan counts the demo's rows without generating it; an unknown
    predictor is an error of its run in the plan, and the command exits 2 naming it."""
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    assert main(["suite=demo", "suite.dry_run=true", f"cache_root={cache}"]) == 0
    plan = capsys.readouterr().out
    assert "| demo-event_classification | demo | build | 48 | 96 |" in plan
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no cache, no outputs/, nothing
    (tmp_path / "conf" / "suite").mkdir(parents=True)
    (tmp_path / "conf" / "suite" / "typo.yaml").write_text(
        "name: typo\nbaselines: {classification: [knn, prototyp]}\nruns: [{dataset: demo, shots: []}]\n"
    )
    monkeypatch.setenv("RAG_FLAMINGO_CONF_PATH", str(tmp_path / "conf"))
    assert main(["suite=typo", "suite.dry_run=true", f"cache_root={cache}"]) == 2
    out, err = capsys.readouterr()
    assert "| demo-event_classification |  | error: unknown predictor 'prototyp' (did you mean 'prototype'?)" in out
    assert err.count("\n") == 1 and "suite typo: 1 of 1 runs did not run: demo-event_classification error" in err
    # the store's build_index command line is checked in the plan, not after the runs before it
    (tmp_path / "conf" / "suite" / "workers.yaml").write_text(
        "name: workers\nbuild_overrides: [num_workers=-1]\nruns: [{dataset: demo, shots: []}]\n"
    )
    assert main(["suite=workers", "suite.dry_run=true", f"cache_root={cache}"]) == 2
    assert "build_index: num_workers=-1: must be >= 0" in capsys.readouterr().err
    assert not cache.exists()


def _ours(out: Path) -> dict:
    runs = json.loads((out / "results.json").read_text())["runs"]
    return {
        r["name"]: (r["status"], sorted((e["predictor"], e["shots"] or 0, e["value"]) for e in r["ours"])) for r in runs
    }


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_the_demo_suite_under_torchrun_equals_one_process(tmp_path):
    """Two ranks build the store and split every run's queries; the numbers equal a plain run's (one
    process group for the suite's steps, the ranks meeting before each run)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1", RAG_FLAMINGO_CACHE_ROOT=str(tmp_path / "cache"))
    two, one = tmp_path / "two", tmp_path / "one"
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "rag_flamingo.evaluate"]
    # two ranks first (they build the store), then one process on the same store and queries
    for command, out in ((launch, two), ([sys.executable, "-m", "rag_flamingo.evaluate"], one)):
        run = subprocess.run(
            [*command, "suite=demo", f"suite.output_dir={out}", "progress=false"],
            capture_output=True,
            text=True,
            env=env,
            timeout=350,
            cwd=tmp_path,
        )
        assert run.returncode == 0, run.stderr[-3000:]
    assert _ours(two) == _ours(one) and all(status == "done" for status, _ in _ours(one).values())

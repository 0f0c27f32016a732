"""Training-free predictors: vote/centroid arithmetic, and far-above-chance on the demo set with aisfx."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rag_flamingo.errors import ConfigError
from rag_flamingo.predictors import (
    KnnPredictor,
    PrototypePredictor,
    Query,
    ZeroShotPredictor,
    labels_from_scores,
    typical_tag_count,
)
from rag_flamingo.retrieval import Shot
from rag_flamingo.tasks import get_task
from support.engine import TinyWindowEncoder, build_store


def shot(label, score, row=0, **extra):
    return Shot(row, f"id{row}", score, {"id": f"id{row}", "label": label, **extra})


def query(shots=(), embedding=None, options=None):
    return Query(
        "q", {"id": "q"}, {}, np.asarray(embedding if embedding is not None else [1.0, 0.0]), list(shots), options
    )


def test_knn_vote_is_similarity_weighted():
    knn = KnnPredictor(temperature=0.1)
    shots = [shot("dog", 0.9, 0), shot("cat", 0.8, 1), shot("cat", 0.8, 2)]
    votes = knn.vote(shots)
    w_dog, w_cat = 1.0, 2 * math.exp(-1.0)  # exp((s - s_max) / 0.1)
    assert votes["dog"] == pytest.approx(w_dog / (w_dog + w_cat))
    assert votes["cat"] == pytest.approx(w_cat / (w_dog + w_cat))
    pred = knn.predict([query(shots, options=["bird", "cat", "dog"])], "classification")[0]
    assert pred.output == "dog" and pred.label_scores["bird"] == 0.0 and len(pred.shots) == 3
    # a high temperature makes it a plain majority vote
    assert KnnPredictor(temperature=100).predict([query(shots)], "classification")[0].output == "cat"


def test_knn_captioning_returns_the_nearest_caption():
    shots = [shot(None, 0.5, 0, captions=["far away"]), shot(None, 0.9, 1, captions=["a dog barks"])]
    pred = KnnPredictor().predict([query(shots)], "captioning")[0]
    assert pred.output == "a dog barks" and pred.score == pytest.approx(0.9)
    with pytest.raises(ConfigError, match="classification/tagging"):
        KnnPredictor().predict([query(shots)], "aqa")


def test_label_answers_for_tagging_and_mapped_emotions():
    scores = {"rain": 0.9, "wind": 0.7, "thunder": 0.1}
    assert labels_from_scores(get_task("tagging"), scores, n_tags=2).output == "rain, wind"
    assert labels_from_scores(get_task("classification"), scores).output == "rain"
    assert labels_from_scores(get_task("emotion_classification"), {"joy": 0.8, "anger": 0.1}).output == "happy"
    assert typical_tag_count([{"labels": ["a", "b"]}, {"labels": ["a", "b", "c"]}, {"labels": ["a"]}]) == 2


def test_prototype_is_the_nearest_class_mean(tmp_path):
    rows = [{"id": f"{lab}{i}", "path": f"{lab}{i}.wav", "label": lab} for lab in ("a", "b") for i in range(2)]
    emb = np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 0, 1], [0, 0.6, 0.8]], np.float32)
    store = build_store(tmp_path / "s", rows, emb, {"name": "toy"}, features=False)
    proto = PrototypePredictor(store)
    mean_a = np.array([1.8, 0.6, 0]) / np.linalg.norm([1.8, 0.6, 0])
    np.testing.assert_allclose(proto.centroids[0], mean_a, rtol=1e-6)
    preds = proto.predict([query(embedding=[0.9, 0.1, 0]), query(embedding=[0, 0.2, 1])], "classification")
    assert [p.output for p in preds] == ["a", "b"]
    assert preds[0].score == pytest.approx(float(mean_a @ (np.array([0.9, 0.1, 0]) / np.linalg.norm([0.9, 0.1, 0]))))
    only_b = proto.predict([query(embedding=[1, 0, 0], options=["b"])], "classification")[0]
    assert only_b.output == "b" and set(only_b.label_scores) == {"b"}


def test_zero_shot_needs_a_clap_encoder():
    with pytest.raises(ConfigError, match="text embeddings"):
        ZeroShotPredictor(TinyWindowEncoder(), ["dog", "cat"])


@pytest.mark.slow
def test_knn_and_prototype_far_above_chance_on_demo_with_aisfx(tmp_path, capsys):
    """The demo commands as a user runs them after install: build_index with defaults, then evaluate."""
    from index_builder.cli import main as build_index
    from rag_flamingo.evaluate import main as evaluate

    build_index(["progress=false", "num_workers=0"])
    out = tmp_path / "eval"
    assert (
        evaluate(
            [
                "dataset=demo",
                "task=classification",
                "predictor=knn,prototype",
                "shots=1,4,8",
                f"output_dir={out}",
                "progress=false",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| knn | 4 | 48 |" in printed and "| prototype | – | 48 |" in printed
    results = json.loads((out / "metrics.json").read_text())["results"]
    assert {(r["predictor"], r["shots"]) for r in results} == {("knn", 1), ("knn", 4), ("knn", 8), ("prototype", None)}
    chance = 1 / 12
    for r in results:
        assert r["n"] == 48 and r["accuracy"] >= 0.75 > 5 * chance, r
    assert (out / "metric_vs_shots.png").is_file() and (out / "results.md").is_file()


def test_prototype_leaves_the_querys_own_recording_out(tmp_path):
    rows = [
        {"id": "a0", "path": "a0.wav", "label": "a"},
        {"id": "a1", "path": "a1.wav", "label": "a"},
        {"id": "b0", "path": "b0.wav", "label": "b"},
        {"id": "b1", "path": "b1.wav", "label": "b"},
    ]
    emb = np.array([[1, 0, 0], [0, 0.6, 0.8], [0.6, 0.8, 0], [0.6, 0.8, 0]], np.float32)
    proto = PrototypePredictor(build_store(tmp_path / "s", rows, emb, {"name": "toy"}, features=False))
    outside = Query("new", {"id": "new"}, {}, np.array([1.0, 0, 0]))
    inside = Query("a0", {"id": "a0"}, {}, np.array([1.0, 0, 0]), own_rows=frozenset({0}))  # a0 is row 0
    assert proto.predict([outside], "classification")[0].output == "a"  # a0 itself pulls 'a' close
    held_out = proto.predict([inside], "classification")[0]
    assert held_out.output == "b" and held_out.label_scores["a"] == pytest.approx(0.0, abs=1e-6)

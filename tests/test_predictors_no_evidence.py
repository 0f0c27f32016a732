"""No predictor answers without evidence: with no shot left, or no support example left once the
query's own rows are out, the answer is nothing (unmatched, counted wrong), never a guessed label.

End to end on real aisfx stores built by ``build_index``: a one-item store queried leave-one-out,
and the ``folder_stores`` leave-one-out store with every shot filtered as a near duplicate.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from rag_flamingo.config import PredictorOptions
from rag_flamingo.predictors import (
    KnnPredictor,
    PredictorContext,
    Query,
    ZeroShotPredictor,
    build_predictor,
    predictor_names,
)
from rag_flamingo.retrieval import Shot
from support.clips import evaluate_folder_queries, write_class
from support.engine import TinyWindowEncoder, build_store

SUPPORT_PREDICTORS = ["prototype", "simpleshot", "tip_adapter", "lda", "fusion"]


@pytest.fixture(scope="module")
def one_item(tmp_path_factory):
    """A folder with one clip and the aisfx store built from it (``one/`` and ``one_idx``)."""
    from index_builder.cli import main as build_index

    root = tmp_path_factory.mktemp("one_item")
    write_class(root / "one" / "whistle", "whistle", 1, seed0=7, name="{i}.wav")
    args = ["dataset=folder", f"dataset.root={root / 'one'}", f"store={root / 'one_idx'}", "progress=false"]
    assert build_index([*args, "num_workers=0"]) == 0
    return root


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_every_predictor_gives_no_answer_when_the_query_is_the_whole_store(one_item, tmp_path):
    out = tmp_path / "eval"
    predictors = ",".join(["knn", *SUPPORT_PREDICTORS])
    assert (
        evaluate_folder_queries(
            one_item, f"predictor=[{predictors}]", "shots=1", f"output_dir={out}", store="one_idx", queries="one"
        )
        == 0
    )
    preds = records(out / "predictions.jsonl")
    assert sorted(r["predictor"] for r in preds) == sorted(["knn", *SUPPORT_PREDICTORS])
    for r in preds:
        assert r["output"] == "" and r["score"] is None and r["shot_ids"] == [], r
    results = json.loads((out / "metrics.json").read_text())["results"]
    for r in results:  # wrong, and reported as unmatched
        assert (r["n"], r["accuracy"], r["unmatched"]) == (1, 0.0, 1), r


def test_knn_gives_no_answer_when_every_shot_is_filtered_and_the_support_predictors_still_answer(
    folder_stores, tmp_path
):
    out = tmp_path / "eval"
    assert (
        evaluate_folder_queries(
            folder_stores,
            "predictor=[knn,prototype,lda,fusion]",
            "shots=2",
            "retrieval.near_duplicate_threshold=1e-6",  # aisfx cosines are > 0: no shot survives
            f"output_dir={out}",
            store="loo_idx",
            queries="loo",
        )
        == 0
    )
    preds = records(out / "predictions.jsonl")
    by = {r["predictor"]: r for r in json.loads((out / "metrics.json").read_text())["results"]}
    knn = [r for r in preds if r["predictor"] == "knn"]
    assert len(knn) == 9 and all(r["output"] == "" and r["shot_ids"] == [] for r in knn)
    assert (by["knn"]["accuracy"], by["knn"]["unmatched"]) == (0.0, 9)
    for name in ("prototype", "lda", "fusion"):  # their evidence is the support (own rows out), not the shots
        assert all(r["output"] for r in preds if r["predictor"] == name)
        assert by[name]["unmatched"] == 0 and by[name]["accuracy"] == 1.0, by[name]


def shot(label, score, row=0):
    return Shot(row, f"id{row}", score, {"id": f"id{row}", "label": label})


def test_knn_answers_only_labels_a_shot_voted_for():
    knn = KnnPredictor()
    none_offered = knn.predict(
        [Query("q", {"id": "q"}, {}, np.ones(2), [shot("cat", 0.9)], ["bird", "dog"])], "classification"
    )
    assert none_offered[0].output == "" and none_offered[0].score is None  # not 'bird' at score 0
    tags = KnnPredictor(n_tags=3).predict(
        [Query("q", {"id": "q"}, {}, np.ones(2), [shot("rain", 0.9)], ["rain", "wind", "dog"])], "tagging"
    )[0]
    assert tags.output == "rain" and tags.label_scores == {"rain": 1.0, "wind": 0.0, "dog": 0.0}
    assert knn.predict([Query("q", {"id": "q"}, {}, np.ones(2))], "classification")[0].output == ""


def test_support_predictors_with_every_labelled_row_their_own(tmp_path):
    """Unit level, every registered label predictor: a query whose own rows are the whole support."""
    rows = [{"id": f"r{i}", "path": f"r{i}.wav", "label": lab} for i, lab in enumerate(["a", "b"])]
    store = build_store(tmp_path / "s", rows, np.eye(2, 3, dtype=np.float32), {"name": "toy"}, features=False)
    query = Query("q", {"id": "q"}, {}, np.array([1.0, 0, 0]), options=["a", "b"], own_rows=frozenset({0, 1}))
    for name in SUPPORT_PREDICTORS:
        pred = build_predictor(name, PredictorContext(PredictorOptions(), store, None, None, lambda: None))
        (answer,) = pred.predict([query], "classification")
        assert answer.output == "" and answer.score is None, name
        (other,) = pred.predict(
            [Query("n", {"id": "n"}, {}, np.array([1.0, 0, 0]), options=["a", "b"])], "classification"
        )
        assert other.output == "a", name  # outside the store the same predictor answers
    assert set(predictor_names()) == {"knn", "flamingo", "zero_shot", *SUPPORT_PREDICTORS}  # every one checked


class TextEncoder(TinyWindowEncoder):
    """A tiny encoder with text embeddings: the label's name hashed to a fixed unit vector."""

    def embed_text(self, texts):
        return np.stack([np.random.default_rng(sum(map(ord, t))).standard_normal(3) for t in texts])


def test_zero_shot_needs_no_support_its_evidence_is_the_label_text():
    zs = ZeroShotPredictor(TextEncoder(), ["a", "b"])
    text = zs.text
    (answer,) = zs.predict(
        [Query("q", {"id": "q"}, {}, text[1], options=["a", "b"], own_rows=frozenset({0, 1}))], "classification"
    )
    assert answer.output == "b" and answer.score == pytest.approx(1.0)

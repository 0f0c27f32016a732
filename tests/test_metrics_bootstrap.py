"""Bootstrap intervals: each statistic recomputes its metric on a resample exactly as the metric
function does on the resampled corpus written out (duplicated queries), CIDEr-D's corpus IDF included;
the intervals are seeded; evaluate's results carry them and the table prints them."""

from __future__ import annotations

import random

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from rag_flamingo.metrics import aqa_accuracy, classification_metrics, multilabel_metrics
from rag_flamingo.metrics.bootstrap import (
    bootstrap,
    classification_statistic,
    mean_statistic,
    tagging_statistic,
    weighted_map,
)
from rag_flamingo.metrics.captioning import captioning_metrics, captioning_statistic
from rag_flamingo.report import markdown_table, score_predictions
from rag_flamingo.tasks import get_task

WORDS = ["a", "dog", "barks", "loudly", "while", "cars", "pass", "by", "the", "street", "and", "birds", "rain"]


def _draw(n: int, seed: int) -> tuple[list[int], np.ndarray]:
    idx = np.random.default_rng(seed).integers(0, n, size=n)
    return list(idx), np.bincount(idx, minlength=n).astype(float)


def test_classification_statistic_is_the_metric_on_the_resampled_queries():
    options = ["cat", "dog", "bird", "cow"]
    rng = random.Random(1)
    truth = [rng.choice(options) for _ in range(40)]
    outputs = [t if rng.random() < 0.6 else rng.choice([*options, "no idea"]) for t in truth]
    full = classification_metrics(outputs, truth, options)
    stat = classification_statistic(truth, full.predictions)
    assert stat(np.ones(40)) == pytest.approx({"accuracy": full.accuracy, "macro_f1": full.macro_f1}, abs=1e-12)
    for seed in range(5):
        idx, w = _draw(40, seed)
        again = classification_metrics([outputs[i] for i in idx], [truth[i] for i in idx], options)
        assert stat(w) == pytest.approx({"accuracy": again.accuracy, "macro_f1": again.macro_f1}, abs=1e-12)


def test_tagging_statistic_is_the_metric_on_the_resampled_queries():
    labels = ["dog", "bark", "car", "rain", "wind"]
    rng = np.random.default_rng(3)
    truth_m = (rng.random((30, 5)) < 0.4).astype(float)
    truth_m[0] = [1, 0, 0, 0, 0]
    scores = np.round(rng.random((30, 5)), 1)  # ties: AP's step-wise thresholds
    pred_m = (rng.random((30, 5)) < 0.4).astype(float)
    refs = [[labels[c] for c in np.nonzero(row)[0]] for row in truth_m]
    outs = [", ".join(labels[c] for c in np.nonzero(row)[0]) for row in pred_m]
    stat = tagging_statistic(truth_m, pred_m, scores)
    for seed in [None, 0, 1, 2]:
        idx, w = (list(range(30)), np.ones(30)) if seed is None else _draw(30, seed)
        res = multilabel_metrics([outs[i] for i in idx], [refs[i] for i in idx], labels, scores=scores[idx])
        got = stat(w)
        assert got["micro_f1"] == pytest.approx(res.micro_f1, abs=1e-12)
        assert got["macro_f1"] == pytest.approx(res.macro_f1, abs=1e-12)
        assert got["mAP"] == pytest.approx(res.mAP, abs=1e-12)


def test_weighted_average_precision_by_hand():
    # scores 0.9 (pos), 0.8 (neg), 0.8 (pos), 0.1 (neg): thresholds 0.9 -> P 1 R .5; 0.8 -> P 2/3 R 1
    truth = np.array([[1.0], [0.0], [1.0], [0.0]])
    scores = np.array([[0.9], [0.8], [0.8], [0.1]])
    assert weighted_map(truth, scores, np.ones(4)) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert average_precision_score(truth[:, 0], scores[:, 0]) == pytest.approx(0.5 + 1 / 3)
    # the first positive drawn twice: 0.9 -> P 1 R 2/3; 0.8 -> P 3/4 R 1
    assert weighted_map(truth, scores, np.array([2.0, 1, 1, 1])) == pytest.approx(2 / 3 + 1 / 3 * 3 / 4)


def test_captioning_statistic_recomputes_cider_d_on_the_resampled_corpus():
    rng = random.Random(0)

    def sentence() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))

    cands = [sentence() for _ in range(25)]
    refs = [[sentence() for _ in range(rng.randint(1, 5))] for _ in range(25)]
    full = captioning_metrics(cands, refs, use_spice=False)
    stat = captioning_statistic(cands, refs, full["per_item"])
    keys = ("cider_d", "bleu_4", "rouge_l")
    assert {k: stat(np.ones(25))[k] for k in keys} == pytest.approx({k: full[k] for k in keys}, abs=1e-12)
    for seed in range(4):
        idx, w = _draw(25, seed)
        again = captioning_metrics([cands[i] for i in idx], [refs[i] for i in idx], use_spice=False)
        got = stat(w)
        # duplicated queries count as documents of the IDF: not the mean of the per-item full-corpus scores
        assert {k: got[k] for k in keys} == pytest.approx({k: again[k] for k in keys}, abs=1e-12)
    assert stat(np.ones(25))["spider"] is None  # no SPICE, no SPIDEr


def test_aqa_and_seeded_intervals():
    outputs = ["yes", "no, it is not", "maybe", "two"] * 10
    answers = ["yes", "yes", "no", "two"] * 10
    res = aqa_accuracy(outputs, answers)
    assert res.per_item[:4] == [True, False, False, True] and res.unmatched == 10
    stat = mean_statistic({"accuracy": [float(x) for x in res.per_item]})
    assert stat(np.ones(40))["accuracy"] == res.accuracy == 0.5
    ci, seconds = bootstrap(stat, 40, resamples=200, seed=7)
    again, _ = bootstrap(stat, 40, resamples=200, seed=7)
    other, _ = bootstrap(stat, 40, resamples=200, seed=8)
    assert ci == again and ci != other and seconds >= 0
    assert ci["accuracy"][0] < 0.5 < ci["accuracy"][1]
    assert bootstrap(mean_statistic({"accuracy": [1.0] * 5}), 5, resamples=50)[0] == {"accuracy": [1.0, 1.0]}


def test_evaluate_results_carry_intervals_and_the_table_prints_them():
    task = get_task("event_classification")
    records = [
        {"id": f"q{i}", "predictor": "knn", "shots": 2, "output": out, "target": tgt, "shot_ids": ["a", "b"]}
        for i, (out, tgt) in enumerate([("cough", "cough"), ("laugh", "cough"), ("laugh", "laugh")] * 4)
    ]
    (result,) = score_predictions(records, task, ["cough", "laugh"], resamples=300, seed=0)
    assert result["accuracy"] == pytest.approx(2 / 3)
    lo, hi = result["ci"]["accuracy"]
    assert lo < 2 / 3 < hi and set(result["ci"]) == {"accuracy", "macro_f1"}
    assert result["bootstrap"]["resamples"] == 300 and result["bootstrap"]["seed"] == 0
    assert f"0.6667 [{lo:.4f}, {hi:.4f}]" in markdown_table([result])


def test_shots_used_is_absent_when_no_record_lists_a_shot():
    """A rule that voted without retrieved shots (knn under adapt: exact search in the adapted space)
    shows no shot count rather than a wrong 0."""
    task = get_task("event_classification")
    base = [("cough", "cough"), ("laugh", "cough"), ("laugh", "laugh")] * 4
    voted = [{"id": f"q{i}", "predictor": "knn", "shots": 4, "output": o, "target": t} for i, (o, t) in enumerate(base)]
    (result,) = score_predictions(voted, task, ["cough", "laugh"], resamples=50, seed=0)
    assert result["shots_used"] is None and markdown_table([result]).splitlines()[2].endswith("| – |")
    some = [dict(r, shot_ids=["a"] if i % 2 else []) for i, r in enumerate(voted)]
    (result,) = score_predictions(some, task, ["cough", "laugh"], resamples=50, seed=0)
    assert result["shots_used"] == 0.5

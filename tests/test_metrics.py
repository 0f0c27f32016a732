"""Metric values on hand-computed and known-answer examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rag_flamingo.errors import ConfigError
from rag_flamingo.metrics import (
    approximate_f1,
    approximate_match,
    aqa_accuracy,
    bleu,
    captioning_metrics,
    cider_d,
    classification_metrics,
    match_option,
    multilabel_metrics,
    normalize,
    parse_labels,
    rouge_l,
    tokenize,
)

# ----------------------------------------------------------------------------- text


def test_normalize_and_tokenize():
    assert normalize("  A Dog-Barks, LOUDLY!\n") == "a dog barks loudly"
    assert normalize("synth_lead") == "synth lead"
    assert tokenize("It's a bird's song.") == ["it", "s", "a", "bird", "s", "song"]


@pytest.mark.parametrize(
    "output, expected",
    [
        ("Park.", "park"),  # exact after normalisation
        ("crowded indoor", "crowdedindoor"),  # exact ignoring spaces
        ("I think it is a bus", "bus"),  # unique containment
        ("a car horn honks", "car horn"),  # the longer of two contained options
        ("car and bus", None),  # two options: ambiguous
        ("horn", "car horn"),  # output inside exactly one option
        ("subwa", None),
        ("", None),
    ],
)
def test_match_option(output, expected):
    options = ["park", "crowdedindoor", "bus", "car", "car horn", "subway", "subwaystation"]
    assert match_option(output, options) == expected


# ----------------------------------------------------------------------------- captioning: hand-computed


def test_cider_d_hand_computed():
    # item 2: identical 2-word caption, n-grams unique to the item: cos 1 for n=1,2, 0 for n=3,4
    # -> mean(1, 1, 0, 0) * 10 = 5. item 1: "a a" vs "a b": n=1 clipped cosine
    # min(2 ln2, ln2) * ln2 / (2 ln2 * sqrt(2) ln2) = 1 / (2 sqrt 2); n=2: 0 -> 10 / (8 sqrt 2)
    corpus, items = cider_d(["a a", "c d"], [["a b"], ["c d"]])
    assert items == pytest.approx([10 / (8 * math.sqrt(2)), 5.0])
    assert corpus == pytest.approx((10 / (8 * math.sqrt(2)) + 5.0) / 2)


def test_cider_d_length_penalty_counts_bigrams():
    # cand has 2 bigrams, ref 1 -> penalty exp(-1 / 72) on every n
    _, items = cider_d(["a b c", "x y"], [["a b"], ["x y"]])
    df_idf = math.log(2)  # every n-gram occurs in one item's references
    n1 = (2 * df_idf**2) / (math.sqrt(3) * df_idf * math.sqrt(2) * df_idf)
    n2 = df_idf**2 / (math.sqrt(2) * df_idf * df_idf)
    assert items[0] == pytest.approx((n1 + n2) / 4 * 10 * math.exp(-1 / 72))


def test_cider_d_needs_two_items_and_matching_lengths():
    with pytest.raises(ConfigError, match="at least 2"):
        cider_d(["a"], [["a"]])
    with pytest.raises(ConfigError, match="reference lists"):
        cider_d(["a", "b"], [["a"]])
    with pytest.raises(ConfigError, match="non-empty list"):
        cider_d(["a", "b"], [["a"], []])


def test_bleu_hand_computed():
    # precisions 6/7, 4/6, 2/5, 1/4, equal lengths (no brevity penalty)
    corpus, items = bleu(["a dog barks loudly in the park"], [["a dog barks loudly near the park"]])
    assert corpus == pytest.approx((6 / 7 * 4 / 6 * 2 / 5 * 1 / 4) ** 0.25, rel=1e-9)
    assert items == [pytest.approx(corpus)]
    # brevity penalty: 3 words against the closest reference (4 words); no 4-gram at all, so
    # coco's smoothing makes p4 = 1e-15 / 1e-9
    corpus, _ = bleu(["a dog barks"], [["a dog barks loudly", "a big dog barks very loudly now"]])
    assert corpus == pytest.approx((1e-15 / 1e-9) ** 0.25 * math.exp(1 - 4 / 3), rel=1e-6)
    assert bleu(["a dog barks"], [["a dog barks loudly", "a dog barks"]], n=3)[0] == pytest.approx(1.0)
    assert bleu(["the cat"], [["the cat"]])[0] == pytest.approx(0.0, abs=1e-3)  # no 3/4-grams at all


def test_bleu_corpus_sums_counts():
    cands = ["a dog barks loudly in the park", "rain falls on the roof"]
    refs = [["a dog barks loudly near the park"], ["rain falls on the roof"]]
    corpus, _ = bleu(cands, refs)
    p = [(6 + 5) / (7 + 5), (4 + 4) / (6 + 4), (2 + 3) / (5 + 3), (1 + 2) / (4 + 2)]
    assert corpus == pytest.approx(np.prod(p) ** 0.25, rel=1e-9)


def test_rouge_l_hand_computed():
    _, items = rouge_l(
        ["dog barks", "a dog barks loudly in the park"],
        [["a dog barks loudly"], ["a dog barks loudly near the park", "park"]],
    )
    # item 1: LCS 2, P = 1, R = 1/2; item 2: P = max(6/7, 1/7), R = max(6/7, 1/1)
    f = lambda p, r: (1 + 1.44) * p * r / (r + 1.44 * p)  # noqa: E731
    assert items == pytest.approx([f(1.0, 0.5), f(6 / 7, 1.0)])
    assert rouge_l(["zzz"], [["a b"]])[1] == [0.0]


# ----------------------------------------------------------------------------- captioning: known answers

# Values computed with aac-metrics 0.6.0 (`aac_metrics.functional.cider_d/bleu/rouge_l`, given
# `tokenizer=rag_flamingo.metrics.tokenize`) on this corpus; they equal coco-caption's definitions.
CANDS = [
    "A dog barks while cars pass by.",
    "Rain falls on a tin roof.",
    "birds are chirping in the morning",
    "a man speaks and a door closes",
    "water flows in a stream",
]
REFS = [
    ["A dog is barking as cars drive past.", "Cars pass by while a dog barks loudly.", "A dog barks near a busy road."],
    ["Heavy rain falls on a metal roof.", "Rain is falling onto a tin roof."],
    ["Many birds chirp in the early morning.", "Birds are singing in the morning.", "Birds chirp and sing outside."],
    ["A man talks and then a door is shut.", "Someone speaks before a door closes."],
    ["A stream of water flows over rocks.", "Water is flowing in a small creek.", "Water runs steadily in a stream."],
]
AAC_METRICS = {
    "cider_d": (
        2.7380556520321297,
        [2.7221966432306886, 3.9497338609818176, 2.1772797635142926, 2.4403408696068647, 2.4007271228269857],
    ),
    "bleu_4": (
        0.3441064850650895,
        [
            9.036020033091823e-05,
            0.5985529675787239,
            8.034284186199331e-05,
            7.071067810522817e-05,
            8.657023703488241e-05,
        ],
    ),
    "rouge_l": (
        0.6843094019975109,
        [0.42857142857142855, 0.7587064676616916, 0.8333333333333334, 0.6853932584269663, 0.7155425219941348],
    ),
}


def test_known_answers_from_aac_metrics():
    out = captioning_metrics(CANDS, REFS, use_spice=False)
    for name, (corpus, items) in AAC_METRICS.items():
        assert out[name] == pytest.approx(corpus, rel=1e-9)
        assert out["per_item"][name] == pytest.approx(items, rel=1e-9)
    assert out["spice"] is None and out["spider"] is None and "spice" in out["unavailable"]


def test_identical_candidates_score_high():
    out = captioning_metrics([r[0] for r in REFS], REFS, use_spice=False)
    assert out["bleu_4"] == pytest.approx(1.0) and out["rouge_l"] == pytest.approx(1.0)
    assert out["cider_d"] > AAC_METRICS["cider_d"][0]


def test_single_item_reports_cider_unavailable():
    out = captioning_metrics(["a dog barks"], [["a dog barks"]])
    assert out["cider_d"] is None and "at least 2" in out["unavailable"]["cider_d"]
    assert out["rouge_l"] == pytest.approx(1.0)


def test_spice_reported_unavailable_or_computed():
    out = captioning_metrics(CANDS, REFS)
    if out["spice"] is None:
        assert out["unavailable"]["spice"] and out["unavailable"]["spider"].startswith("needs SPICE")
        with pytest.raises(ConfigError, match="SPICE requested"):
            captioning_metrics(CANDS, REFS, use_spice=True)
    else:
        assert out["spider"] == pytest.approx((out["cider_d"] + out["spice"]) / 2)


def test_against_aac_metrics_when_installed():
    aac = pytest.importorskip("aac_metrics.functional", reason="aac-metrics not installed (optional oracle)")
    for name in ("cider_d", "bleu", "rouge_l"):
        ours = {"cider_d": cider_d, "bleu": bleu, "rouge_l": rouge_l}[name](CANDS, REFS)[0]
        key = "bleu_4" if name == "bleu" else name
        theirs = getattr(aac, name)(CANDS, REFS, tokenizer=tokenize)[0][key]
        assert ours == pytest.approx(float(theirs), rel=1e-9)


# ----------------------------------------------------------------------------- classification


def test_classification_accuracy_macro_f1_and_unmatched():
    options = ["park", "bus", "car", "car horn", "crowdedindoor"]
    outputs = ["Park.", "it is a bus", "car horn!", "no idea", "crowded indoor", "bus"]
    refs = ["park", "bus", "car", "car", "crowdedindoor", "park"]
    res = classification_metrics(outputs, refs, options)
    assert res.n == 6 and res.correct == 3 and res.accuracy == pytest.approx(0.5)
    assert res.unmatched == 1 and res.unmatched_examples == [{"index": 3, "output": "no idea", "reference": "car"}]
    assert res.predictions == ["park", "bus", "car horn", None, "crowdedindoor", "bus"]
    # per class: park P=1 R=1/2 F=2/3; bus P=1/2 R=1 F=2/3; car 0; car horn 0; crowdedindoor 1
    assert res.macro_f1 == pytest.approx((2 / 3 + 2 / 3 + 0 + 0 + 1) / 5)
    assert res.per_class["car"]["support"] == 2


def test_classification_reference_outside_options():
    with pytest.raises(ConfigError, match="item 0: reference label 'tram'"):
        classification_metrics(["bus"], ["tram"], ["bus", "car"])


# ----------------------------------------------------------------------------- multi-label


def test_multilabel_f1_and_unmatched():
    labels = ["dog", "bark", "rain", "thunder", "speech"]
    outputs = ["Dog, bark, zebra", "rain; speech", ""]
    refs = [["dog", "bark"], ["rain", "thunder"], ["speech"]]
    res = multilabel_metrics(outputs, refs, labels)
    assert res.predictions == [["dog", "bark"], ["rain", "speech"], []]
    # TP = 3 (dog, bark, rain), FP = 1 (speech in item 2), FN = 2 (thunder, speech in item 3)
    assert res.micro_precision == pytest.approx(3 / 4) and res.micro_recall == pytest.approx(3 / 5)
    assert res.micro_f1 == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))
    # per label F1: dog 1, bark 1, rain 1, thunder 0, speech 0
    assert res.macro_f1 == pytest.approx(3 / 5)
    assert res.unmatched == 1 and res.unmatched_examples[0]["unmatched"] == ["zebra"]
    assert res.mAP is None
    assert parse_labels(["dog", "Dog!"], labels) == (["dog"], [])


def test_multilabel_map_from_scores():
    labels = ["a", "b"]
    refs = [["a"], ["b"], ["a", "b"], []]
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.3], [0.5, 0.9]])
    res = multilabel_metrics(None, refs, labels, scores=scores)
    # label a: ranking 0.9(+), 0.5(-), 0.4(+), 0.2(-) -> AP = (1/1 + 2/3) / 2
    # label b: ranking 0.9(-), 0.8(+), 0.3(+), 0.1(-) -> AP = (1/2 + 2/3) / 2
    assert res.mAP == pytest.approx(((1 + 2 / 3) / 2 + (1 / 2 + 2 / 3) / 2) / 2)
    assert math.isnan(res.micro_f1)
    with pytest.raises(ConfigError, match="shape"):
        multilabel_metrics(None, refs, labels, scores=scores[:, :1])


def test_approximate_f1_hand_computed():
    """Our reading of AF1's FSD50k F1_approx (rag_flamingo/metrics/multilabel.approximate_f1)."""
    outputs = ["dog, barking, animal", "Music; guitar", ""]
    refs = [["Dog", "Domestic_animals_and_pets"], ["Acoustic_guitar", "Music"], ["Speech"]]
    res = approximate_f1(outputs, refs)
    # item 1: "dog" = "dog" (hit); "barking" names no label of the item; "animal" is not a whole word
    #         of "domestic animals and pets" -> pieces 1 of 3, labels 1 of 2 (Dog)
    # item 2: "music" = "music"; "guitar" is a whole word of "acoustic guitar" -> pieces 2 of 2, labels 2 of 2
    # item 3: nothing generated -> pieces 0 of 0, labels 0 of 1
    assert res.counts == [[1, 3, 1, 2], [2, 2, 2, 2], [0, 0, 0, 1]]
    # precision = 3/5 = 0.6, recall = 3/5 = 0.6, F1 = 2 * 0.6 * 0.6 / 1.2 = 0.6
    assert res.approx_precision == pytest.approx(0.6) and res.approx_recall == pytest.approx(0.6)
    assert res.approx_f1 == pytest.approx(0.6)
    # the vocabulary-snapped micro F1 drops "barking" and "animal" (not labels): a different number
    vocab = ["Dog", "Domestic_animals_and_pets", "Acoustic_guitar", "Music", "Speech"]
    assert multilabel_metrics(outputs, refs, vocab).micro_f1 != pytest.approx(res.approx_f1)
    # repeated pieces count once; an empty output and no labels give 0, not an error
    assert approximate_f1(["rain, Rain., rain"], [["rain"]]).approx_f1 == 1.0
    assert approximate_f1([""], [[]]).approx_f1 == 0.0
    assert approximate_match("crowded indoor", "CrowdedIndoor") and not approximate_match("car", "carhorn")
    with pytest.raises(ConfigError, match="2 outputs but 1"):
        approximate_f1(["a", "b"], [["a"]])


def test_approximate_f1_in_the_report_with_its_interval():
    from rag_flamingo.report import score_predictions
    from rag_flamingo.tasks import get_task

    records = [
        {"predictor": "flamingo", "shots": 0, "id": "a", "output": "dog, barking, animal", "target": ["Dog", "Cat"]},
        {"predictor": "flamingo", "shots": 0, "id": "b", "output": "cat", "target": ["Cat"]},
    ]
    (res,) = score_predictions(records, get_task("fsd50k_tagging"), ["Dog", "Cat"], resamples=200)
    # pieces: 1 of 3 + 1 of 1 -> P = 2/4; labels: 1 of 2 + 1 of 1 -> R = 2/3; F1 = 2PR/(P+R) = 4/7
    assert res["approx_f1"] == pytest.approx(4 / 7)
    lo, hi = res["ci"]["approx_f1"]
    # resamples: {a, a} -> P 1/3, R 1/2, F1 0.4; {b, b} -> 1.0; {a, b} -> 4/7: the interval spans them
    assert lo == pytest.approx(0.4) and hi == pytest.approx(1.0)


# ----------------------------------------------------------------------------- AQA


def test_aqa_accuracy():
    outputs = ["Yes, there are waves.", "a dog", "maybe", "No", "two"]
    answers = ["yes", "A dog.", "no", "yes", "three"]
    res = aqa_accuracy(outputs, answers)
    assert res.correct == 2 and res.accuracy == pytest.approx(2 / 5)
    assert res.unmatched == 1 and res.unmatched_examples[0]["output"] == "maybe"
    res = aqa_accuracy(["the second one"], ["second one"], options=[["first one", "second one"]])
    assert res.correct == 1
    with pytest.raises(ConfigError):
        aqa_accuracy(["a"], ["a", "b"])

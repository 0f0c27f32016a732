"""Prompt strings and token ids against the reference (af1_tiny cases from AF1's data.py)."""

from __future__ import annotations

import json
import logging
import os

import pytest

from rag_flamingo.errors import ConfigError, ManifestError
from rag_flamingo.prompts import (
    DEFAULT_MAX_TOKENS,
    answer_text,
    build_prompt,
    default_options,
    format_options,
    question_text,
    token_counter,
)
from rag_flamingo.retrieval import Shot
from rag_flamingo.tasks import TASKS

AF1_TINY = os.path.join(os.path.dirname(__file__), "fixtures", "af1_tiny")


@pytest.fixture(scope="module")
def cases():
    with open(os.path.join(AF1_TINY, "cases.json")) as f:
        return {c["name"]: c for c in json.load(f)["cases"]}


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.path.join(AF1_TINY, "tokenizer"))


def shot(i, score=1.0, **item):
    item.setdefault("id", f"s{i}")
    return Shot(row=i, id=item["id"], score=score, item=item)


COCHL = [
    "Bus",
    "Cafe",
    "Car",
    "CrowdedIndoor",
    "Elevator",
    "Kitchen",
    "Park",
    "ResidentialArea",
    "Restaurant",
    "Restroom",
    "Street",
    "Subway",
    "SubwayStation",
]


# ----------------------------------------------------------------------------- af1_tiny reference cases


def check_case(case, prompt, tokenizer, answer=None):
    assert prompt.text == case["prompt_text"]
    assert tokenizer(prompt.text)["input_ids"] == case["input_ids"]
    assert prompt.num_audios == case["num_audios"]
    if answer is not None:
        assert prompt.full_text(answer) == case["full_text"]
        assert tokenizer(prompt.full_text(answer))["input_ids"] == case["full_input_ids"]


def test_caption_single_eval(cases, tokenizer):
    answer = "wind chimes ring softly while the wind blows."
    prompt = build_prompt("captioning", {"id": "q", "captions": [answer]}, [], None)
    check_case(cases["caption_single"], prompt, tokenizer, answer_text("captioning", {"captions": [answer]}))


def test_scene_classification_with_options_eval(cases, tokenizer):
    prompt = build_prompt("scene_classification", {"id": "q", "label": "park"}, [], [c.lower() for c in COCHL])
    check_case(cases["classify_options_single"], prompt, tokenizer, "park")


def test_icl_captioning_eval(cases, tokenizer):
    shots = [
        shot(0, 0.9, captions=["a dog barks in the distance while birds chirp."]),
        shot(1, 0.8, captions=["heavy rain falls on a roof and thunder rumbles."]),
    ]
    prompt = build_prompt("captioning", {"id": "q", "captions": ["a bus drives by on a busy street."]}, shots, None)
    check_case(cases["icl_caption_3audio"], prompt, tokenizer, "a bus drives by on a busy street.")
    assert [s.id for s in prompt.shots] == ["s0", "s1"] and prompt.dropped == []


def test_inference_api_aqa(cases, tokenizer):
    item = {"id": "q", "question": "Are there waves?", "answer": "yes"}
    options = default_options("aqa", item)
    assert options == ["yes", "no"]
    prompt = build_prompt("aqa", item, [], options, template="inference")
    check_case(cases["inference_api_aqa_padded"], prompt, tokenizer)


def test_special_token_ids(tokenizer):
    ids = tokenizer("</s><audio>x<SEP>y<|endofchunk|></s>")["input_ids"]
    assert ids[:3] == [2, 2, 600] and 602 in ids and ids[-2:] == [601, 2]


# ----------------------------------------------------------------------------- every task family


EVAL_SINGLE = {  # expected strings written from the reference code (data.py Augmentation, eval layout)
    "music_captioning": (
        {"captions": ["x"]},
        None,
        "</s>the task is music captioning.<audio>describe the music in a sentence.\nanswer:<SEP>",
    ),
    "aqa": (
        {"question": "question: Is it raining?", "answer": "it is sunny"},
        None,
        "</s>the task is audio question answering.<audio>please answer this question: is it raining?\nanswer:<SEP>",
    ),
    "classification": (
        {"label": "cough"},
        ["sneeze", "cough", "laugh"],
        "</s>the task is event classification.<audio>classify this sound.\noptions:\n - cough.\n"
        " - laugh.\n - sneeze.\nanswer:<SEP>",
    ),
    "event_classification": (
        {"label": "dog bark"},
        None,
        "</s>the task is event classification.<audio>classify this sound.\nanswer:<SEP>",
    ),
    "emotion_classification": (
        {"label": "joy"},
        ["neutral", "joy", "sadness", "anger"],
        "</s>the task is emotion classification.<audio>what is the emotion of this speech?"
        "\noptions:\n - angry.\n - happy.\n - neutral.\n - sad.\nanswer:<SEP>",
    ),
    "instrument_classification": (
        {"label": "violin"},
        ["violin", "piano"],
        "</s>the task is instrument classification.<audio>what is the instrument of this "
        "music?\noptions:\n - piano.\n - violin.\nanswer:<SEP>",
    ),
    "genre_classification": (
        {"label": "jazz"},
        ["rock", "jazz"],
        "</s>the task is genre classification.<audio>what is the genre of this music?"
        "\noptions:\n - jazz.\n - rock.\nanswer:<SEP>",
    ),
    "tagging": (
        {"labels": ["television", "silence"]},
        ["child speaking", "television", "silence"],
        "</s>the task is event classification.<audio>use a few labels to describe this sound. all labels "
        "are: child speaking, television, silence.\nanswer:<SEP>",
    ),
    "fsd50k_tagging": (
        {"labels": ["Bark", "Dog", "Animal"]},
        None,
        "</s>the task is event classification.<audio>describe this sound in the order from specific "
        "to general.\nanswer:<SEP>",
    ),
}


@pytest.mark.parametrize("name", sorted(EVAL_SINGLE))
def test_eval_template_per_task(name):
    item, options, expected = EVAL_SINGLE[name]
    assert build_prompt(name, dict(item, id="q"), [], options).text == expected


def test_every_required_task_is_registered():
    required = {
        "captioning",
        "music_captioning",
        "aqa",
        "classification",
        "scene_classification",
        "event_classification",
        "emotion_classification",
        "instrument_classification",
        "genre_classification",
        "tagging",
        "fsd50k_tagging",
    }
    assert required <= set(TASKS)


def test_train_template_matches_reference_example():
    # AF1 data.py's training example (train layout, provide_all_labels)
    prompt = build_prompt(
        "scene_classification", {"id": "q", "label": "park"}, [], [c.lower() for c in COCHL], template="train"
    )
    assert prompt.text == (
        "</s>The task is scene classification. <audio>classify this sound.\nOPTIONS:\n - bus.\n"
        " - cafe.\n - car.\n - crowdedindoor.\n - elevator.\n - kitchen.\n - park.\n"
        " - residentialarea.\n - restaurant.\n - restroom.\n - street.\n - subway.\n"
        " - subwaystation.\nAnswer:<SEP>"
    )
    assert prompt.full_text("Park").endswith("\nAnswer:<SEP>park<|endofchunk|></s>")


def test_icl_train_and_random_header():
    shots = [shot(0, captions=["A Dog Barks."])]
    query = {"id": "q", "captions": ["x"]}
    train = build_prompt("captioning", query, shots, None, template="train").text
    assert train == (
        "</s>Here are similar examples. The task is audio captioning. <audio>describe the sound in a "
        "sentence.\nAnswer:<SEP>a dog barks.<|endofchunk|><audio>describe the sound in a sentence."
        "\nAnswer:<SEP>"
    )
    rand = build_prompt("captioning", query, shots, None, mode="random").text
    assert rand.startswith("</s>Here are random examples. The task is audio captioning. <audio>")
    # the reference has no ICL layout for its inference API: the eval one is used
    assert (
        build_prompt("captioning", query, shots, None, template="inference").text
        == build_prompt("captioning", query, shots, None).text
    )


def test_icl_shots_carry_no_options_except_yes_no_aqa():
    shots = [shot(0, label="Bus"), shot(1, label="park")]
    text = build_prompt("scene_classification", {"id": "q", "label": "car"}, shots, ["bus", "car", "park"]).text
    assert text == (
        "</s>Here are similar examples. The task is scene classification. "
        "<audio>classify this sound.\nanswer:<SEP>bus<|endofchunk|>"
        "<audio>classify this sound.\nanswer:<SEP>park<|endofchunk|>"
        "<audio>classify this sound.\noptions:\n - bus.\n - car.\n - park.\nanswer:<SEP>"
    )
    aqa_shots = [shot(0, question="Is it loud?", answer="Yes"), shot(1, question="What animal?", answer="a dog")]
    query = {"id": "q", "question": "Is a dog barking?", "answer": "no"}
    text = build_prompt("aqa", query, aqa_shots, ["yes", "no"]).text
    assert text == (
        "</s>Here are similar examples. The task is audio question answering. "
        "<audio>please answer this question: is it loud?\noptions:\nyes.\nno.\nanswer:<SEP>yes"
        "<|endofchunk|><audio>please answer this question: what animal?\nanswer:<SEP>a dog"
        "<|endofchunk|><audio>please answer this question: is a dog barking?\noptions:\nyes.\nno."
        "\nanswer:<SEP>"
    )
    strict = build_prompt("aqa", query, aqa_shots, ["yes", "no"], shot_options=False).text
    assert strict.count("options:") == 1


def test_item_texts():
    assert answer_text("captioning", {"captions": [" First. ", "Second."]}) == "First."
    assert answer_text("emotion_classification", {"label": "sadness"}) == "sad"
    assert answer_text("tagging", {"labels": ["dog", "bark."]}) == "dog, bark"
    assert answer_text("aqa", {"answer": "Yes"}) == "Yes"
    assert question_text("aqa", {"question": "Are there waves?"}) == "please answer this question: Are there waves?"
    assert question_text("aqa", {"question": "Please answer this question: x?"}) == "Please answer this question: x?"
    assert question_text("captioning", {}) == "describe the sound in a sentence."
    assert format_options(["no", "yes"], "binary") == "\nOPTIONS:\nyes.\nno."
    assert format_options(["b", "a", "a"]) == "\nOPTIONS:\n - a.\n - b."
    assert default_options("aqa", {"answer": "a dog"}) is None
    assert default_options("scene_classification", {}, ["a", "b"]) == ["a", "b"]
    assert default_options("captioning", {}, ["a"]) is None
    with pytest.raises(ManifestError, match="item x1"):
        answer_text("captioning", {"id": "x1"})
    with pytest.raises(ManifestError, match="single-label"):
        answer_text("classification", {"id": "x2", "labels": ["a", "b"]})
    with pytest.raises(ConfigError, match="unknown task"):
        build_prompt("nope", {}, [], None)
    with pytest.raises(ConfigError, match="no options"):
        build_prompt("captioning", {"captions": ["x"]}, [], ["a"])


# ----------------------------------------------------------------------------- budget


def caption_shots(n):
    return [
        shot(i, score=float(s), captions=[f"caption number {i} of the shots."])
        for i, s in enumerate([0.5, 0.9, 0.1, 0.7, 0.3, 0.8, 0.6, 0.2][:n])
    ]


def test_window_budget_drops_lowest_scores_and_keeps_order(caplog):
    shots = caption_shots(8)  # 8 shots + query = 9 audios x 16 windows = 144 > 128
    with caplog.at_level(logging.WARNING, logger="rag_flamingo.prompts"):
        prompt = build_prompt("captioning", {"id": "q", "captions": ["x"]}, shots, None)
    assert [s.id for s in prompt.dropped] == ["s2"]  # score 0.1
    assert [s.id for s in prompt.shots] == ["s0", "s1", "s3", "s4", "s5", "s6", "s7"]
    assert prompt.num_audios == 8 and sum(prompt.windows) == 128
    assert prompt.text.count("<audio>") == 8 and "caption number 2 " not in prompt.text
    assert "dropped 1 of 8 shots" in caplog.text
    # explicit window counts: short audios fit, long ones push out more shots
    prompt = build_prompt("captioning", {"id": "q", "captions": ["x"]}, shots, None, windows_per_audio=[4] * 8 + [16])
    assert prompt.dropped == []
    prompt = build_prompt(
        "captioning", {"id": "q", "captions": ["x"]}, shots, None, windows_per_audio=[16] * 8 + [16], max_windows=64
    )
    assert [s.id for s in prompt.shots] == ["s1", "s3", "s5"]  # the three best, in prompt order


def test_token_budget(tokenizer):
    shots = caption_shots(6)
    count = token_counter(tokenizer)
    full = build_prompt("captioning", {"id": "q", "captions": ["x"]}, shots, None, count_tokens=count)
    assert full.dropped == [] and count(full.text) <= DEFAULT_MAX_TOKENS
    n_full = count(full.text)
    limit = n_full - 1  # one token too few: the lowest-score shot goes
    prompt = build_prompt(
        "captioning", {"id": "q", "captions": ["x"]}, shots, None, max_tokens=limit, count_tokens=count
    )
    assert [s.id for s in prompt.dropped] == ["s2"]
    assert count(prompt.text) <= limit
    zero_shot = build_prompt("captioning", {"id": "q", "captions": ["x"]}, [], None)
    prompt = build_prompt(
        "captioning", {"id": "q", "captions": ["x"]}, shots, None, max_tokens=count(zero_shot.text), count_tokens=count
    )
    assert prompt.shots == [] and len(prompt.dropped) == 6 and prompt.text == zero_shot.text
    with pytest.raises(ConfigError, match="alone does not fit"):
        build_prompt("captioning", {"id": "q", "captions": ["x"]}, shots, None, max_tokens=5, count_tokens=count)
    with pytest.raises(ConfigError, match="needs count_tokens"):
        build_prompt("captioning", {"id": "q", "captions": ["x"]}, shots, None, max_tokens=100)
    with pytest.raises(ConfigError, match="windows_per_audio"):
        build_prompt("captioning", {"id": "q", "captions": ["x"]}, shots, None, windows_per_audio=[16])


def test_random_mode_scores_nan_are_dropped_from_the_end():
    shots = [shot(i, score=float("nan"), captions=[f"c{i}"]) for i in range(8)]
    prompt = build_prompt("captioning", {"id": "q", "captions": ["x"]}, shots, None, mode="random")
    assert [s.id for s in prompt.dropped] == ["s7"]

"""The transformers backends decode as ``model.generation`` says, whatever the checkpoint's
generation_config.json holds: a tiny AF3 saved twice (plain, and with decoding settings of its own:
AF3's converted repetition penalty, sampling, a 1-token limit, n-gram blocking) answers the same
prompts with the same tokens, and the engine names what it used and what it ignored."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from rag_flamingo.audio import decode_key, load_audio
from rag_flamingo.backends.decoding import NEUTRAL, explicit_generation
from rag_flamingo.backends.loading import load_transformers_audio
from rag_flamingo.backends.transformers_audio import TransformersAudioEngine
from rag_flamingo.datasets import demo
from rag_flamingo.datasets.manifest import read_manifest
from rag_flamingo.model import GenerationSettings
from rag_flamingo.retrieval import Shot
from support.audio_lms import save_tiny
from support.engine import TinyWindowEncoder, build_store, embed_rows

CHECKPOINT_DECODING = {
    "repetition_penalty": 1.05,  # AF3's converted config
    "do_sample": True,
    "temperature": 0.05,
    "max_new_tokens": 1,
    "no_repeat_ngram_size": 1,
    "top_k": 3,
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = demo.ensure_demo()
    train = [{**r, "path": str(root / r["path"])} for r in read_manifest(root / "train.jsonl")][:12]
    enc = TinyWindowEncoder()
    store = build_store(
        tmp_path_factory.mktemp("store"), train, embed_rows(enc, train, root), enc.fingerprint(), features=False
    )
    plain = save_tiny("af3", tmp_path_factory.mktemp("plain"))
    own = tmp_path_factory.mktemp("own")
    shutil.copytree(plain, own, dirs_exist_ok=True)
    config = json.loads((own / "generation_config.json").read_text())
    (own / "generation_config.json").write_text(json.dumps({**config, **CHECKPOINT_DECODING}))
    test = read_manifest(root / "test.jsonl")
    waves = [load_audio(root / row["path"], 16000) for row in test[:2]]
    return dict(store=store, enc=enc, plain=plain, own=own, waves=waves)


def _engine(setup, folder, **settings):
    model, processor = load_transformers_audio(
        {"checkpoint": str(folder), "model_class": "AudioFlamingo3ForConditionalGeneration", "device": "cpu"}
    )
    generation = GenerationSettings(max_new_tokens=6, **settings)
    return TransformersAudioEngine(setup["store"], model, processor, setup["enc"], generation=generation)


def _answers(engine, setup) -> list[str]:
    store = setup["store"]
    shots = [[Shot(r, store.item(r)["id"], 1.0 - 0.1 * r, store.item(r)) for r in (0, 5)], []]
    waves = [{decode_key(engine.query_audio): w} for w in setup["waves"]]
    torch.manual_seed(123)  # a leaked do_sample would draw from here
    answers = engine.generate("classification", [{"id": "a"}, {"id": "b"}], shots, waves, store.label_set())
    return [a.output for a in answers]


def test_the_checkpoint_generation_config_changes_nothing(setup):
    plain, own = _engine(setup, setup["plain"]), _engine(setup, setup["own"])
    assert own.model.generation_config.to_diff_dict().get("repetition_penalty") is None  # cleaned
    assert _answers(own, setup) == _answers(plain, setup)
    effective = own.decoding["effective"]
    assert effective == plain.decoding["effective"]
    assert effective["repetition_penalty"] == 1.0 and effective["do_sample"] is False
    assert effective["max_new_tokens"] == 6 and effective["num_beams"] == 1 and effective["no_repeat_ngram_size"] == 0
    assert {k: own.decoding["checkpoint_ignored"][k] for k in CHECKPOINT_DECODING} == CHECKPOINT_DECODING
    assert plain.decoding["checkpoint_ignored"] == {}


def test_the_checkpoint_settings_would_change_the_answers_if_they_applied(setup):
    """The test above can fail: generate with the checkpoint's own config answers differently."""
    from transformers import GenerationConfig

    engine = _engine(setup, setup["own"])
    leaky = GenerationConfig.from_pretrained(str(setup["own"]))
    assert leaky.max_new_tokens == 1 and leaky.repetition_penalty == 1.05
    ours = engine.generation_config
    text = engine.render([{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "what?"}]}])
    inputs = engine.inputs([text], [[engine.encode_audio(setup["waves"][0])]])
    with torch.no_grad():
        mine = engine.model.generate(**inputs, generation_config=ours)
        theirs = engine.model.generate(**inputs, generation_config=leaky)
    assert theirs.shape[1] == inputs["input_ids"].shape[1] + 1 < mine.shape[1]


def test_explicit_settings_follow_model_generation():
    class Holder:
        def __init__(self):
            from transformers import GenerationConfig

            self.generation_config = GenerationConfig(eos_token_id=7, repetition_penalty=1.3)

    class Tok:
        pad_token_id, eos_token_id = None, 7

    model = Holder()
    config, record = explicit_generation(model, GenerationSettings(do_sample=True, top_k=5, temperature=0.7), Tok())
    assert config.do_sample and config.top_k == 5 and config.temperature == 0.7 and config.pad_token_id == 7
    assert all(record["effective"][k] == v for k, v in NEUTRAL.items())
    assert record["checkpoint_ignored"] == {"repetition_penalty": 1.3}
    assert model.generation_config.to_diff_dict().get("repetition_penalty") is None
    assert np.isclose(record["effective"]["top_p"], 1.0)


def test_af3_multi_turn_renders_the_header_after_the_first_shots_audio(setup):
    """AF3's chat template puts a user turn's <sound> first: the documented multi_turn layout as rendered."""
    from rag_flamingo.backends.chat_icl import chat_messages

    engine = _engine(setup, setup["plain"])
    shots = [Shot(0, "s0", 1.0, {"id": "s0", "label": "dog"}), Shot(1, "s1", 0.9, {"id": "s1", "label": "rain"})]
    text = engine.render(chat_messages("classification", {"id": "q"}, shots, ["dog", "rain"], "multi_turn"))
    assert text.endswith(
        "<|im_start|>user\n<sound>Here are similar examples. The task is event classification.\n"
        "classify this sound.<|im_end|>\n<|im_start|>assistant\ndog<|im_end|>\n"
        "<|im_start|>user\n<sound>classify this sound.<|im_end|>\n<|im_start|>assistant\nrain<|im_end|>\n"
        "<|im_start|>user\n<sound>classify this sound.\nOPTIONS:\n - dog.\n - rain.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_run_json_records_the_effective_decoding_not_the_checkpoints(setup, tmp_path):
    """evaluate writes the engine's effective generation config into run.json: the checkpoint with
    decoding settings of its own records the same effective config as the plain one, and names what
    it ignored."""
    from rag_flamingo.evaluate import evaluate, load_config

    recorded = {}
    for name in ("plain", "own"):
        cfg = load_config(
            [
                "dataset=demo",
                f"store={setup['store'].root}",
                "predictor=flamingo",
                "shots=0",
                "limit=2",
                "progress=false",
                f"output_dir={tmp_path / name}",
            ]
        )
        summary = evaluate(cfg, encoder=setup["enc"], engine=_engine(setup, setup[name]))
        assert summary is not None and summary["results"][0]["n"] == 2
        recorded[name] = json.loads((tmp_path / name / "run.json").read_text())["decoding"]
    own, plain = recorded["own"], recorded["plain"]
    assert own["backend"] == "TransformersAudioEngine" and own["effective"] == plain["effective"]
    assert own["effective"]["repetition_penalty"] == 1.0 and own["effective"]["do_sample"] is False
    assert own["effective"]["max_new_tokens"] == 6
    assert own["checkpoint_ignored"]["repetition_penalty"] == 1.05 and plain["checkpoint_ignored"] == {}

"""The transformers backend (rag_flamingo/backends/) on tiny random-weight models of the real classes
(AF3, Music Flamingo, Qwen2-Audio, Voxtral), saved with save_pretrained and loaded as the hub models are
(Voxtral's own prompt checks, against mistral-common, are in tests/test_backends_voxtral.py).

Per model: a 1-audio prompt gives the processor's own tokens and features and the same logits and
generated tokens as processor + model called directly; a 4-shot prompt puts four + one audios in
prompt order (perturbing one audio changes the logits from its own span on, never before; the
model's merge is checked against the processor where it takes several audios); cached and uncached
generation agree; evaluate ... model=<backend> predictor=flamingo shots=0,2 runs end to end.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rag_flamingo.audio import decode_key, load_audio
from rag_flamingo.backends import backend_name
from rag_flamingo.backends.chat_icl import chat_messages
from rag_flamingo.backends.loading import engine_class, load_transformers_audio
from rag_flamingo.errors import CheckpointError, ConfigError
from rag_flamingo.evaluate import evaluate, load_config
from rag_flamingo.model import GenerationSettings
from rag_flamingo.retrieval import Shot
from support.audio_lms import KINDS, audio_lm_store, save_tiny

CLASSES = {
    "af3": "AudioFlamingo3ForConditionalGeneration",
    "music_flamingo": "MusicFlamingoForConditionalGeneration",
    "qwen2_audio": "Qwen2AudioForConditionalGeneration",
    "voxtral": "VoxtralForConditionalGeneration",
}
# where each model's chat format ends a user turn (Qwen's ChatML, Mistral's instruct format)
TURN_END = {"voxtral": "[/INST]"}
TASK = "classification"


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    return audio_lm_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module", params=KINDS)
def tiny(request, tmp_path_factory, demo_store):
    kind = request.param
    folder = save_tiny(kind, tmp_path_factory.mktemp(kind))
    model, processor = load_transformers_audio(
        {"checkpoint": str(folder), "model_class": CLASSES[kind], "device": "cpu"}
    )
    engine = engine_class(processor)(
        demo_store["store"], model, processor, demo_store["enc"], generation=GenerationSettings(max_new_tokens=5)
    )
    return dict(kind=kind, folder=folder, model=model, processor=processor, engine=engine, **demo_store)


def query_wave(setup, i: int = 0) -> np.ndarray:
    row = setup["test"][i]
    return load_audio(setup["root"] / row["path"], 16000)


def shots_of(store, rows: list[int]) -> list[Shot]:
    return [Shot(r, store.item(r)["id"], 1.0 - 0.1 * i, store.item(r)) for i, r in enumerate(rows)]


def audio_spans(ids: torch.Tensor, token_id: int) -> list[tuple[int, int]]:
    """(start, end) of each run of ``token_id`` in a 1-D id sequence."""
    spans, start = [], None
    flags = (ids == token_id).tolist() + [False]
    for i, flag in enumerate(flags):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            spans.append((start, i))
            start = None
    return spans


def audio_token_id(processor) -> int:
    return processor.tokenizer.convert_tokens_to_ids(processor.audio_token)


def test_one_audio_prompt_equals_processor_and_model(tiny):
    if tiny["kind"] == "voxtral":
        pytest.skip("VoxtralProcessor takes no audio with text: tests/test_backends_voxtral.py checks its prompts")
    engine, processor, model = tiny["engine"], tiny["processor"], tiny["model"]
    wave = query_wave(tiny)
    options = tiny["store"].label_set()
    messages = chat_messages(TASK, {"id": "q"}, [], options)
    text = engine.render(messages)
    assert text == processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ours = engine.inputs([text], [[engine.encode_audio(wave)]])
    direct = processor(text=[text], audio=[wave], sampling_rate=16000, return_tensors="pt")
    assert set(ours) == set(direct) and len(ours) >= 4
    for key in direct:
        assert torch.equal(ours[key], direct[key]), key
    with torch.no_grad():
        assert torch.equal(model(**ours).logits, model(**direct).logits)
    # the engine's answer is the model's greedy continuation of the processor's inputs
    answer = engine.generate(TASK, [{"id": "q"}], [[]], [{decode_key(engine.query_audio): wave}], options)[0]
    direct_out = model.generate(**direct, max_new_tokens=5, do_sample=False)
    expected = processor.tokenizer.decode(direct_out[0, direct["input_ids"].shape[1] :], skip_special_tokens=True)
    assert answer.output == expected.strip() and answer.prompt == text and answer.dropped == 0


def test_four_shots_and_the_query_in_prompt_order(tiny):
    engine, processor, model, store = tiny["engine"], tiny["processor"], tiny["model"], tiny["store"]
    shots = shots_of(store, [0, 13, 26, 39])
    shot_audio = {s.row: engine.encode_audio(engine.shot_audio(s)) for s in shots}
    query = engine.encode_audio(query_wave(tiny))
    text, kept, dropped, audios = engine.prompt(TASK, {"id": "q"}, shots, store.label_set(), shot_audio, query)
    assert [s.row for s in kept] == [0, 13, 26, 39] and dropped == 0 and len(audios) == 5
    assert text.count(processor.audio_token) == 5
    batch = engine.inputs([text], [audios])
    spans = audio_spans(batch["input_ids"][0], audio_token_id(processor))
    assert len(spans) == 5
    with torch.no_grad():
        base = model(**batch).logits[0]
    noise = np.random.default_rng(7).standard_normal(16000).astype(np.float32) * 0.3
    for i in (1, 4):  # a shot in the middle, then the query
        changed = list(audios)
        changed[i] = engine.encode_audio(noise[: 16000 - 800 * i] if i == 4 else noise)
        other = engine.inputs([text], [changed])
        other_spans = audio_spans(other["input_ids"][0], audio_token_id(processor))
        assert other_spans[:i] == spans[:i]  # same tokens up to the perturbed audio
        with torch.no_grad():
            logits = model(**other).logits[0]
        start = spans[i][0]
        diff = (logits[: min(len(logits), len(base))] - base[: min(len(logits), len(base))]).abs().amax(-1)
        assert torch.all(diff[:start] == 0), f"audio {i} changed positions before its span"
        assert diff[start] > 0, f"audio {i}'s features are not at its own span"
    # the KV cache changes nothing
    cached = model.generate(**batch, max_new_tokens=4, do_sample=False, use_cache=True)
    uncached = model.generate(**batch, max_new_tokens=4, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_every_audio_reaches_the_model_as_its_own_forward_would_merge_it(tiny):
    """Four shots + the query: the model's logits on the engine's inputs equal the model's forward on
    the same features merged by hand (each audio's embeddings at its own span) or, for Qwen2-Audio
    whose processor takes several audios per text, on the processor's own inputs."""
    engine, processor, model, store = tiny["engine"], tiny["processor"], tiny["model"], tiny["store"]
    shots = shots_of(store, [3, 16, 29, 42])
    waves = [engine.shot_audio(s) for s in shots] + [query_wave(tiny, 2)]
    audios = [engine.encode_audio(w) for w in waves]
    text = engine.render(chat_messages(TASK, {"id": "q"}, shots, store.label_set()))
    batch = engine.inputs([text], [audios])
    with torch.no_grad():
        ours = model(**batch).logits
        if tiny["kind"] == "qwen2_audio":
            direct = processor(text=[text], audio=waves, sampling_rate=16000, return_tensors="pt")
            for key in direct:
                assert torch.equal(batch[key], direct[key]), key
            assert torch.equal(ours, model(**direct).logits)
            return
        ids = batch["input_ids"]
        embeds = model.get_input_embeddings()(ids)
        where = (ids[0] == audio_token_id(processor)).nonzero()[:, 0].tolist()
        at = 0
        for audio in audios:  # each audio alone through the model's audio path, in prompt order
            alone = processor.tokenizer(audio.expansion, add_special_tokens=False, return_tensors="pt")["input_ids"]
            extra = {"input_ids": alone} if tiny["kind"] == "music_flamingo" else {}
            emb = model.get_audio_features(**audio.features, **extra).pooler_output
            embeds[0, where[at : at + len(emb)]] = emb
            at += len(emb)
        assert at == len(where)
        by_hand = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(ours, by_hand, rtol=1e-5, atol=1e-5)


def test_batches_with_different_shot_counts_match_single_prompts(tiny):
    engine = tiny["engine"]
    store = tiny["store"]
    waves = [{decode_key(engine.query_audio): query_wave(tiny, i)} for i in (0, 5)]
    items = [{"id": "a"}, {"id": "b"}]
    shots = [shots_of(store, [2, 15]), []]
    together = engine.generate(TASK, items, shots, waves, store.label_set())
    alone = [engine.generate(TASK, [it], [s], [w], store.label_set())[0] for it, s, w in zip(items, shots, waves)]
    assert [a.prompt for a in together] == [a.prompt for a in alone]
    assert [a.output for a in together] == [a.output for a in alone]
    assert [len(a.shots) for a in together] == [2, 0]


def test_multi_turn_gives_each_shot_a_turn_pair(tiny):
    processor = tiny["processor"]
    store = tiny["store"]
    engine = engine_class(processor)(store, tiny["model"], processor, tiny["enc"], icl_format="multi_turn")
    shots = shots_of(store, [0, 13])
    messages = chat_messages(TASK, {"id": "q"}, shots, store.label_set(), "multi_turn")
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    text = engine.render(messages)
    assert text.count(processor.audio_token) == 3
    # two answers + the generation prompt
    assert text.count(TURN_END.get(tiny["kind"], "<|im_start|>assistant")) == 3
    answers = [store.item(r)["label"] for r in (0, 13)]
    assert text.index(answers[0]) < text.index(answers[1]) < text.rindex(processor.audio_token)


def test_budget_drops_the_least_similar_shots_and_counts_them(tiny):
    engine = tiny["engine"]
    store = tiny["store"]
    shots = shots_of(store, [0, 13, 26])
    shot_audio = {s.row: engine.encode_audio(engine.shot_audio(s)) for s in shots}
    query = engine.encode_audio(query_wave(tiny))
    one = engine.prompt(TASK, {"id": "q"}, shots[:1], None, shot_audio, query)
    need = engine.count_tokens(engine.expand(one[0], one[3]))
    small = engine_class(tiny["processor"])(
        store, tiny["model"], tiny["processor"], tiny["enc"], max_context=need + 128, max_audios=3
    )
    text, kept, dropped, audios = small.prompt(TASK, {"id": "q"}, shots, None, shot_audio, query)
    assert [s.row for s in kept] == [0] and dropped == 2 and len(audios) == 2
    # a shot whose audio cannot be decoded is left out and counted, the batch goes on
    gone = len(store.items) - 1
    assert store.item(gone)["id"] == "train/gone"
    answers = engine.generate(
        TASK, [{"id": "q"}], [shots_of(store, [0, gone, 13])], [{decode_key(engine.query_audio): query_wave(tiny)}]
    )
    assert answers[0].dropped == 1 and [s.row for s in answers[0].shots] == [0, 13]


@pytest.mark.parametrize("kind", ["af3", "qwen2_audio", "voxtral"])
def test_evaluate_end_to_end(kind, tmp_path, demo_store):
    folder = save_tiny(kind, tmp_path / kind)
    out = tmp_path / "eval"
    cfg = load_config(
        [
            "dataset=demo",
            f"task={TASK}",
            f"store={demo_store['store'].root}",
            f"output_dir={out}",
            "progress=false",
            "predictor=flamingo",
            f"model={kind}",
            f"model.checkpoint={folder}",
            "model.device=cpu",
            "model.generation.max_new_tokens=3",
            "shots=[0,2]",
            "limit=4",
            "batch_size=3",
        ]
    )
    assert backend_name(cfg.model) == "transformers"
    summary = evaluate(cfg, encoder=demo_store["enc"])
    by = {(r["predictor"], r["shots"]): r for r in summary["results"]}
    assert set(by) == {("flamingo", 0), ("flamingo", 2)} and all(r["n"] == 4 for r in by.values())
    records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    token = {"af3": "<sound>", "qwen2_audio": "<|AUDIO|>", "voxtral": "[AUDIO]"}[kind]
    for r in records:  # the store's undecodable row, when retrieved, is dropped and counted
        assert r["prompt"].count(token) == len(r["shot_ids"]) + 1 == r["shots"] + 1 - r.get("dropped_shots", 0)
        assert isinstance(r["output"], str)
    assert any(r.get("dropped_shots") for r in records) and any(len(r["shot_ids"]) == 2 for r in records)
    assert "| flamingo | 2 | 4 |" in (out / "results.md").read_text()


def test_config_errors_are_one_line_user_errors(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'transformers'"):
        backend_name({"backend": "transformer"})
    with pytest.raises(ConfigError, match="did you mean 'multi_turn'"):
        chat_messages(TASK, {"id": "q"}, [], None, "multi-turn")
    with pytest.raises(ConfigError, match="not a class of transformers"):
        load_transformers_audio({"checkpoint": str(tmp_path), "model_class": "AudioFlamingo4ForConditionalGeneration"})
    # a hub id that is not cached, offline: the hf download command, before any weights
    with pytest.raises(CheckpointError, match="hf download nvidia/audio-flamingo-3-hf"):
        load_transformers_audio(
            {"checkpoint": "nvidia/audio-flamingo-3-hf", "model_class": CLASSES["af3"], "cache_dir": str(tmp_path)}
        )


# ------------------------------------------------------------------ rank classification, streaming
def full_forward_scores(engine, text, audios, answers, end_ids):
    """Summed log-likelihood of each answer then an end token, from one uncached forward of the
    expanded prompt + the answer (the end's probabilities summed at the position after the answer)."""
    out = []
    for ids in engine.answer_ids(text, audios, answers):
        batch = engine.inputs([text], [audios])
        prompt_len = batch["input_ids"].shape[1]
        tail = torch.tensor([ids])
        batch["input_ids"] = torch.cat([batch["input_ids"], tail], 1)
        batch["attention_mask"] = torch.cat([batch["attention_mask"], torch.ones_like(tail)], 1)
        with torch.no_grad():
            logp = engine.model(**batch).logits[0].double().log_softmax(-1)
        total = sum(float(logp[prompt_len + j - 1, t]) for j, t in enumerate(ids))
        out.append(total + float(logp[prompt_len + len(ids) - 1, end_ids].logsumexp(-1)))
    return out


def test_rank_scores_equal_full_forwards(tiny):
    """decode=rank: the prompt prefilled once, each option continuing from its KV cache, scores the
    same as a full forward of prompt + option + end of turn; the best option is the answer."""
    base = tiny["engine"]
    engine = engine_class(tiny["processor"])(
        tiny["store"], tiny["model"], tiny["processor"], tiny["enc"], generation=base.generation, decode="rank_sum"
    )
    options = ["dog bark", "rain", "siren", "a"]
    shots = shots_of(tiny["store"], [3, 17])
    wave = {decode_key(engine.query_audio): query_wave(tiny, 2)}
    answer = engine.generate(TASK, [{"id": "q"}], [shots], [wave], options)[0]
    query = engine.encode_audio(query_wave(tiny, 2))
    shot_audio = {s.row: engine.encode_audio(engine.shot_audio(s)) for s in shots}
    text, _, _, audios = engine.prompt(TASK, {"id": "q"}, shots, options, shot_audio, query)
    assert text == answer.prompt
    eos = engine.generation_config.eos_token_id
    expected = full_forward_scores(engine, text, audios, options, [eos] if isinstance(eos, int) else eos)
    assert [answer.label_scores[o] for o in options] == pytest.approx(expected, abs=1e-4)
    assert answer.output == options[int(np.argmax(expected))] and answer.score == pytest.approx(max(expected), abs=1e-4)
    with pytest.raises(ConfigError, match="offers none"):
        engine.generate("captioning", [{"id": "q"}], [[]], [wave])


def test_streamed_tokens_are_generates_tokens(tiny):
    """A streamer gets the answer's tokens in generate's order (the Chat tab's stream)."""
    from transformers import TextIteratorStreamer

    engine = tiny["engine"]
    wave = {decode_key(engine.query_audio): query_wave(tiny, 1)}
    streamer = TextIteratorStreamer(engine.tokenizer, skip_prompt=True, skip_special_tokens=True)
    answer = engine.generate(TASK, [{"id": "q"}], [shots_of(tiny["store"], [5])], [wave], streamer=streamer)[0]
    assert "".join(streamer).strip() == answer.output


def test_a_folder_of_another_model_or_a_damaged_one_is_one_line(tmp_path):
    """A model= that does not match the folder's config.json, and unreadable weights, are CheckpointErrors
    before anything is built (transformers would build a default-sized model, or random weights)."""
    folder = save_tiny("qwen2_audio", tmp_path / "qwen")
    with pytest.raises(CheckpointError, match="holds a 'qwen2_audio' model, not"):
        load_transformers_audio({"checkpoint": str(folder), "model_class": CLASSES["af3"], "device": "cpu"})
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot load Qwen2AudioForConditionalGeneration"):
        load_transformers_audio({"checkpoint": str(folder), "model_class": CLASSES["qwen2_audio"], "device": "cpu"})

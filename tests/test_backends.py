"""The transformers backend (rag_flamingo/backends/) on tiny random-weight models of the real classes
(AF3, Music Flamingo, Qwen2-Audio), saved with save_pretrained and loaded as the hub models are.

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
from rag_flamingo.backends.transformers_audio import TransformersAudioEngine, load_transformers_audio
from rag_flamingo.datasets import demo
from rag_flamingo.datasets.manifest import read_manifest
from rag_flamingo.errors import CheckpointError, ConfigError
from rag_flamingo.evaluate import evaluate, load_config
from rag_flamingo.model import GenerationSettings
from rag_flamingo.retrieval import Shot
from support.audio_lms import KINDS, save_tiny
from support.engine import TinyWindowEncoder, build_store, embed_rows

CLASSES = {
    "af3": "AudioFlamingo3ForConditionalGeneration",
    "music_flamingo": "MusicFlamingoForConditionalGeneration",
    "qwen2_audio": "Qwen2AudioForConditionalGeneration",
}
TASK = "classification"


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    root = demo.ensure_demo()
    # absolute paths: the shots' audio is decoded from the store rows (store.audio_path)
    train = [{**r, "path": str(root / r["path"])} for r in read_manifest(root / "train.jsonl")]
    test = read_manifest(root / "test.jsonl")
    enc = TinyWindowEncoder()
    embeddings = embed_rows(enc, train, root)
    # the last row's file is gone after indexing: a shot that cannot be decoded
    gone = {**train[0], "id": "train/gone", "path": str(root / "audio" / "gone.wav")}
    store = build_store(
        tmp_path_factory.mktemp("store"),
        train + [gone],
        np.concatenate([embeddings, embeddings[:1]]),
        enc.fingerprint(),
        features=False,
    )
    return dict(root=root, enc=enc, store=store, test=test)


@pytest.fixture(scope="module", params=KINDS)
def tiny(request, tmp_path_factory, demo_store):
    kind = request.param
    folder = save_tiny(kind, tmp_path_factory.mktemp(kind))
    model, processor = load_transformers_audio(
        {"checkpoint": str(folder), "model_class": CLASSES[kind], "device": "cpu"}
    )
    engine = TransformersAudioEngine(
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
            emb = model.get_audio_features(
                audio.features["input_features"], audio.features["input_features_mask"], **extra
            ).pooler_output
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
    engine = TransformersAudioEngine(store, tiny["model"], processor, tiny["enc"], icl_format="multi_turn")
    shots = shots_of(store, [0, 13])
    messages = chat_messages(TASK, {"id": "q"}, shots, store.label_set(), "multi_turn")
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    text = engine.render(messages)
    assert text.count(processor.audio_token) == 3
    assert text.count("<|im_start|>assistant") == 3  # two answers + the generation prompt
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
    small = TransformersAudioEngine(
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


@pytest.mark.parametrize("kind", ["af3", "qwen2_audio"])
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
    token = "<sound>" if kind == "af3" else "<|AUDIO|>"
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

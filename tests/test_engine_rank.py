"""RagFlamingo with ``decode=rank``: every option scored by the tiny AF1's log-likelihood of its answer
(checked against full uncached forwards of the reference's sample text), the best option answered,
``label_scores`` for every option; evaluate with ``flamingo.decode=rank`` end to end."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from rag_flamingo.audio import load_for_encoders, wave_for
from rag_flamingo.engine import ClapReranker, RagFlamingo
from rag_flamingo.errors import ConfigError
from rag_flamingo.evaluate import evaluate, load_config
from rag_flamingo.model import GenerationSettings, tokenize_prompts
from rag_flamingo.tasks import get_task
from support.engine import demo_engine_parts


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return demo_engine_parts(tmp_path_factory.mktemp("store"))


def make_engine(parts, decode="rank", **kw):
    gen = GenerationSettings(max_new_tokens=4)
    return RagFlamingo(
        parts["store"], parts["model"], parts["tok"], parts["enc"], parts["enc"], generation=gen, decode=decode, **kw
    )


def queries(eng, parts, rows, k):
    waves = [load_for_encoders(parts["root"] / r["path"], [eng.retrieval_encoder, *eng.audio_encoders]) for r in rows]
    emb = eng.retrieval_encoder.embed([wave_for(w, eng.retrieval_encoder) for w in waves])
    shots = eng.retriever.search(emb, k, query_ids=[r["id"] for r in rows])
    return waves, shots


def full_forward_scores(eng, prompt, wave, task, options):
    """(sum, mean) log-likelihood of each option's answer + <|endofchunk|> from one uncached forward of
    the reference's sample text (`Prompt.full_text`, its closing </s> left out)."""
    model, tok = eng.model, eng.tokenizer
    feats, mask = eng.media([prompt], [wave_for(wave, eng.window_encoder)])
    n_prompt = len(tok(prompt.text)["input_ids"])
    out = {}
    for opt in options:
        ids, _ = tokenize_prompts(tok, [prompt.full_text(get_task(task).map_label(opt))])
        ids = ids[:, :-1]  # drop the sample's closing </s>
        assert int(ids[0, -1]) == model.config.eoc_token_id
        with torch.no_grad():
            logp = model(ids, feats, mask).logits[0].double().log_softmax(-1)
        scored = range(n_prompt, ids.shape[1])
        total = sum(float(logp[j - 1, ids[0, j]]) for j in scored)
        out[opt] = (total, total / len(scored))
    return out


def test_rank_answers_the_best_option_with_every_option_scored(parts):
    eng = make_engine(parts)
    rows = parts["test"][:3]
    waves, shots = queries(eng, parts, rows, k=2)
    labels = parts["store"].label_set()
    items = [{"id": r["id"]} for r in rows]
    answers = eng.generate("event_classification", items, shots, waves, options=labels)
    prompts = eng.prompts("event_classification", items, shots, labels)
    summed = make_engine(parts, decode="rank_sum").generate("event_classification", items, shots, waves, options=labels)
    for ans, total, p, wave in zip(answers, summed, prompts, waves):
        assert ans.prompt == p.text and p.text.count("<audio>") == 3  # 2 shots + the query
        assert set(ans.label_scores) == set(labels)
        ref = full_forward_scores(eng, p, wave, "event_classification", labels)
        np.testing.assert_allclose([ans.label_scores[o] for o in labels], [ref[o][1] for o in labels], atol=1e-5)
        np.testing.assert_allclose([total.label_scores[o] for o in labels], [ref[o][0] for o in labels], atol=1e-5)
        best = max(labels, key=lambda o: ref[o][1])
        assert ans.output == best and ans.score == pytest.approx(ref[best][1], abs=1e-5)
        assert total.output == max(labels, key=lambda o: ref[o][0])


def test_rank_answers_in_the_reference_names_and_scores_the_mapped_answer(parts):
    """Emotion options are labels ('joy'); the answer text scored and returned is the reference's ('happy')."""
    eng = make_engine(parts)
    rows = parts["test"][:1]
    waves, shots = queries(eng, parts, rows, k=1)
    options = ["joy", "anger", "neutral"]
    items = [{"id": rows[0]["id"]}]
    (ans,) = eng.generate("emotion_classification", items, shots, waves, options=options)
    (p,) = eng.prompts("emotion_classification", items, shots, options)
    ref = full_forward_scores(eng, p, waves[0], "emotion_classification", options)
    assert set(ans.label_scores) == set(options)
    np.testing.assert_allclose([ans.label_scores[o] for o in options], [ref[o][1] for o in options], atol=1e-5)
    best = max(options, key=lambda o: ref[o][1])
    assert ans.output == get_task("emotion_classification").map_label(best)


def test_yes_no_questions_are_ranked_and_open_questions_generated(parts):
    eng = make_engine(parts)
    rows = parts["test"][:2]
    waves, shots = queries(eng, parts, rows, k=1)
    qa = {"question": "is it a tone?", "answer": "yes"}  # the shots as AQA examples
    shots = [[dataclasses.replace(s, item={**s.item, **qa}) for s in row] for row in shots]
    items = [{"id": rows[0]["id"], "question": "is it raining?"}, {"id": rows[1]["id"], "question": "what is it?"}]
    yes_no, open_ = eng.generate("aqa", items, shots, waves, query_options=[["yes", "no"], None])
    assert set(yes_no.label_scores) == {"yes", "no"} and yes_no.output in ("yes", "no")
    assert open_.label_scores is None and isinstance(open_.output, str)
    query_part = [a.prompt.split("<audio>")[-1] for a in (yes_no, open_)]
    assert "options:\nyes.\nno." in query_part[0] and "options:" not in query_part[1]


def test_tagging_scores_an_option_as_the_first_tag(parts):
    """An option ends with <|endofchunk|> or the ',' before another tag: its score is at least the
    one that allows only <|endofchunk|>."""
    eng = make_engine(parts, decode="rank_sum")
    rows = parts["test"][:1]
    waves, shots = queries(eng, parts, rows, k=1)
    labels = parts["store"].label_set()[:4]
    items = [{"id": rows[0]["id"]}]
    (tags,) = eng.generate("tagging", items, shots, waves, options=labels)
    (p,) = eng.prompts("tagging", items, shots, labels)
    only_end = full_forward_scores(eng, p, waves[0], "tagging", labels)
    assert set(tags.label_scores) == set(labels) and tags.output in labels
    assert all(tags.label_scores[o] > only_end[o][0] for o in labels)


def test_rank_refuses_what_it_cannot_rank(parts):
    with pytest.raises(ConfigError, match="flamingo.decode"):
        make_engine(parts, decode="beam")
    with pytest.raises(ConfigError, match="CLAP filtering"):
        make_engine(parts, reranker=ClapReranker(type("Clap", (), {"embed_text": None, "sample_rate": 16000})()))
    eng = make_engine(parts)
    waves, shots = queries(eng, parts, parts["test"][:1], k=1)
    with pytest.raises(ConfigError, match="offers none"):
        eng.generate("captioning", [{"id": "q"}], shots, waves)


def test_evaluate_with_rank_decoding_end_to_end(parts, tmp_path):
    """`evaluate ... predictor=flamingo flamingo.decode=rank` with the tiny model from the config: every
    answer is an option (no unmatched), label_scores for every option in predictions.jsonl, run.json
    records the decoding."""
    out = tmp_path / "eval"
    cfg = load_config(
        [
            "dataset=demo",
            "task=classification",
            f"store={parts['store'].root}",
            f"output_dir={out}",
            "progress=false",
            "predictor=flamingo",
            "shots=1",
            "limit=3",
            "model=tiny",
            "flamingo.decode=rank",
            "model.audio_encoder={_target_:support.engine.TinyWindowEncoder}",
        ]
    )
    summary = evaluate(cfg, encoder=parts["enc"])
    (result,) = summary["results"]
    assert result["predictor"] == "flamingo" and result["n"] == 3 and result["unmatched"] == 0
    labels = set(parts["store"].label_set())
    records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 3
    for r in records:
        assert set(r["label_scores"]) == labels and r["output"] in labels
        assert r["label_scores"][r["output"]] == max(r["label_scores"].values())
    assert json.loads((out / "run.json").read_text())["settings"]["flamingo"]["decode"] == "rank"


def test_the_python_api_returns_the_engines_record_with_every_option_scored(parts):
    """One answer record from the engine to `api.answer`: with decode=rank its label_scores survive."""
    from rag_flamingo.api import answer

    eng = make_engine(parts)
    row = parts["test"][0]
    labels = parts["store"].label_set()
    got = answer(eng, parts["root"] / row["path"], "event_classification", k=2, options=labels)
    assert got.label_scores is not None and set(got.label_scores) == set(labels)
    assert got.label_scores[got.output] == max(got.label_scores.values()) and got.prompt.count("<audio>") == 3

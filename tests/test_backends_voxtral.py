"""Voxtral (rag_flamingo/backends/voxtral.py) on a tiny random-weight VoxtralForConditionalGeneration
with a tiny tekken.json, saved as the hub repository is (no tokenizer.json) and loaded without
mistral-common. The behaviours every transformers backend shares (audios in prompt order, batches,
multi-turn, budget, rank scores equal full forwards, streaming, evaluate end to end) run for Voxtral in
tests/test_backends.py; here what is Voxtral's own:

- the tokenizer is transformers' conversion of tekken.json, the special tokens at their Voxtral ids;
- each audio's features equal ``VoxtralProcessor``'s own (padded to 30 s chunks), its expansion
  ``[BEGIN_AUDIO]`` + 375 ``[AUDIO]`` per chunk;
- the prompt ids equal mistral-common's ``encode_chat_completion`` of the same conversation (0 shots,
  shots in one turn, a turn pair per shot, a 45 s query of two chunks, options beyond ASCII), with the
  tiny tekken.json and with the full-size Tekken vocabulary mistral-common ships, and the model
  answers those ids + features as the engine answers. The oracle runs in its own venv (mistral-common
  needs numpy < 2.4): scripts/setup_mistral_oracle.sh; without it those tests are skipped, saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from rag_flamingo.audio import decode_key, load_audio
from rag_flamingo.backends.chat_icl import chat_messages
from rag_flamingo.backends.loading import build_transformers_engine, load_transformers_audio
from rag_flamingo.backends.voxtral import VoxtralEngine, tokens_per_chunk
from rag_flamingo.config import FlamingoConfig
from rag_flamingo.retrieval import Shot
from support.audio_lms import TEKKEN_SPECIAL, audio_lm_store, save_tiny

ROOT = Path(__file__).resolve().parents[1]
ORACLE_SCRIPT = ROOT / "oracles" / "mistral_encode.py"
TASK = "classification"


def oracle_python() -> Path | None:
    given = os.environ.get("MISTRAL_ORACLE_PYTHON")
    python = Path(given) if given else ROOT / ".venv-mistral-oracle" / "bin" / "python"
    return python if python.exists() else None


@pytest.fixture(scope="module")
def vox(tmp_path_factory):
    setup = audio_lm_store(tmp_path_factory.mktemp("store"))
    folder = save_tiny("voxtral", tmp_path_factory.mktemp("voxtral"))
    model, processor = load_transformers_audio(
        {"checkpoint": str(folder), "model_class": "VoxtralForConditionalGeneration", "device": "cpu"}
    )
    return dict(setup, folder=folder, model=model, processor=processor)


def engine_of(vox, **settings) -> VoxtralEngine:
    """The engine as the ``model=voxtral`` config builds it (the backend picks it by the processor)."""
    mc = {"name": "voxtral", "generation": {"max_new_tokens": 4}, **settings}
    engine = build_transformers_engine(
        mc, FlamingoConfig(), vox["store"], vox["enc"], None, model_parts=(vox["model"], vox["processor"])
    )
    assert isinstance(engine, VoxtralEngine)
    return engine


def shots_of(store, rows: list[int]) -> list[Shot]:
    return [Shot(r, store.item(r)["id"], 1.0 - 0.1 * i, store.item(r)) for i, r in enumerate(rows)]


def test_tokenizer_is_transformers_conversion_of_tekken(vox):
    from transformers import TokenizersBackend

    tok = vox["processor"].tokenizer
    assert isinstance(tok, TokenizersBackend) and not (vox["folder"] / "tokenizer.json").exists()
    for i, token in TEKKEN_SPECIAL.items():
        assert tok.convert_tokens_to_ids(token) == i
    assert vox["processor"].audio_token == "[AUDIO]" and vox["model"].config.audio_token_id == 24
    engine = engine_of(vox)  # and nothing of the engine's imports mistral-common, installed or not
    wave = {decode_key(engine.query_audio): load_audio(vox["root"] / vox["test"][0]["path"], 16000)}
    assert isinstance(engine.generate(TASK, [{"id": "q"}], [[]], [wave])[0].output, str)
    assert "mistral_common" not in sys.modules


@pytest.mark.parametrize("seconds", [1.3, 45.0])
def test_features_equal_the_processors_own(vox, seconds):
    engine = engine_of(vox)
    wave = np.random.default_rng(3).standard_normal(int(seconds * 16000)).astype(np.float32) * 0.1
    encoded = engine.encode_audio(wave)
    chunks = int(np.ceil(seconds / 30))
    # VoxtralProcessor.apply_chat_template's feature path, with its default audio settings
    own = vox["processor"]._retrieve_input_features(
        [wave],
        3000,
        sampling_rate=16000,
        padding=True,
        truncation=False,
        pad_to_multiple_of=480000,
        return_tensors="pt",
    )
    assert encoded.features["input_features"].shape == (chunks, 128, 3000)
    assert torch.equal(encoded.features["input_features"], own)
    assert encoded.expansion == "[BEGIN_AUDIO]" + "[AUDIO]" * (375 * chunks)
    with torch.no_grad():  # one audio embedding per [AUDIO]
        assert len(vox["model"].get_audio_features(own).pooler_output) == 375 * chunks


def test_released_sizes_give_375_tokens_per_30_s():
    """Voxtral-Mini's encoder (hidden 1280, 5120 per token: VoxtralEncoderConfig's defaults) on 3000
    frames gives 375 audio tokens, as mistral-common's count for its audio settings (12.5 tokens/s x 30 s)."""
    from transformers import VoxtralConfig

    assert tokens_per_chunk(VoxtralConfig().audio_config) == 375 == int(12.5 * 30)


def oracle_chat(messages: list[dict], paths: list[str]) -> list[dict]:
    """``messages`` (chat_icl's) with each audio part given its file, in prompt order."""
    files = iter(paths)
    return [
        {
            "role": m["role"],
            "content": [{"type": "audio", "path": next(files)} if p["type"] == "audio" else p for p in m["content"]],
        }
        for m in messages
    ]


def require_oracle() -> Path:
    python = oracle_python()
    if python is None:
        pytest.skip(
            "no mistral-common oracle venv (.venv-mistral-oracle or MISTRAL_ORACLE_PYTHON): "
            "run scripts/setup_mistral_oracle.sh; mistral-common needs numpy < 2.4, so it has a venv of its own"
        )
    return python


def run_oracle(python: Path, request: dict) -> dict:
    done = subprocess.run([str(python), str(ORACLE_SCRIPT)], input=json.dumps(request), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def compare_with_oracle(vox, processor, tekken: Path, tmp_path: Path) -> tuple[list, dict, dict]:
    """Our prompt ids against mistral-common's for 0 shots, shots in one turn, a turn pair per shot,
    a 45 s query (two chunks) and options beyond ASCII: (our inputs, the oracle's answer, the engines)."""
    python = require_oracle()
    store = vox["store"]
    long_query = tmp_path / "long.wav"
    sf.write(long_query, np.random.default_rng(5).standard_normal(45 * 16000).astype(np.float32) * 0.1, 16000)
    short_query = str(vox["root"] / vox["test"][0]["path"])
    options = store.label_set()
    cases = [  # (icl_format, shot rows, options, query file)
        ("single_turn", [], options, short_query),
        ("single_turn", [0, 13, 26], options, short_query),
        ("multi_turn", [0, 13, 26], options, short_query),
        ("single_turn", [5, 40], None, str(long_query)),
        ("multi_turn", [7], ["chien qui aboie", "pluie d'été", "sirène 🚨", "口哨"], str(long_query)),
    ]
    ours, chats, engines = [], [], {}
    for icl_format, rows, opts, query_file in cases:
        if icl_format not in engines:
            engines[icl_format] = engine_of({**vox, "processor": processor}, icl_format=icl_format)
        engine = engines[icl_format]
        shots = shots_of(store, rows)
        shot_audio = {s.row: engine.encode_audio(engine.shot_audio(s)) for s in shots}
        query = engine.encode_audio(load_audio(query_file, 16000, max_seconds=None))
        text, kept, dropped, audios = engine.prompt(TASK, {"id": "q"}, shots, opts, shot_audio, query)
        assert dropped == 0 and len(audios) == len(rows) + 1
        ours.append(engine.inputs([text], [audios]))
        messages = chat_messages(TASK, {"id": "q"}, kept, opts, icl_format)
        chats.append(oracle_chat(messages, [str(store.audio_path(s.row)) for s in kept] + [query_file]))
    oracle = run_oracle(python, {"tekken": str(tekken), "chats": chats})
    for i, batch in enumerate(ours):
        assert batch["input_ids"][0].tolist() == oracle["ids"][i], f"case {cases[i][:2]}"
        assert oracle["audios"][i] == len(cases[i][1]) + 1
    return ours, oracle, engines


def test_prompt_ids_equal_mistral_commons_encoding(vox, tmp_path):
    ours, oracle, engines = compare_with_oracle(vox, vox["processor"], vox["folder"] / "tekken.json", tmp_path)
    # the model answers mistral-common's ids + the features as the engine answers
    engine = engines["single_turn"]
    batch = ours[1]
    ids = torch.tensor([oracle["ids"][1]])
    direct = vox["model"].generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        input_features=batch["input_features"],
        max_new_tokens=4,
        do_sample=False,
    )
    expected = engine.tokenizer.decode(direct[0, ids.shape[1] :], skip_special_tokens=True).strip()
    wave = {decode_key(engine.query_audio): load_audio(vox["root"] / vox["test"][0]["path"], 16000)}
    answer = engine.generate(
        TASK, [{"id": "q"}], [shots_of(vox["store"], [0, 13, 26])], [wave], vox["store"].label_set()
    )
    assert answer[0].output == expected


def test_prompt_ids_equal_mistral_commons_with_a_released_tekken_vocabulary(vox, tmp_path):
    """The same on the Tekken BPE vocabulary mistral-common ships (tekken_240911.json: 131,072 ids, the
    released tokenizer of Mistral's 2024 models) given Voxtral's special tokens and audio settings: the
    conversion transformers makes of a full-size vocabulary against tiktoken's encoding in mistral-common."""
    from transformers import TokenizersBackend, VoxtralProcessor

    python = require_oracle()
    found = run_oracle(python, {"data_file": "tekken_240911.json"})["path"]
    assert found, "mistral-common (requirements-test-oracle-mistral.txt's version) ships tekken_240911.json"
    released = Path(found)
    vocab = json.loads(released.read_text())
    tiny = json.loads((vox["folder"] / "tekken.json").read_text())
    assert vocab["config"]["default_vocab_size"] == 131072 and vocab["config"]["pattern"] == tiny["config"]["pattern"]
    vocab["config"]["version"] = "v7"  # Voxtral's tokenizer version, with its special tokens and audio
    vocab.pop("image", None)
    vocab.update(special_tokens=tiny["special_tokens"], audio=tiny["audio"])
    folder = tmp_path / "tekken"
    folder.mkdir()
    (folder / "tekken.json").write_text(json.dumps(vocab))
    processor = VoxtralProcessor(vox["processor"].feature_extractor, TokenizersBackend.from_pretrained(str(folder)))
    compare_with_oracle(vox, processor, folder / "tekken.json", tmp_path)


def test_a_hub_model_is_fetched_without_the_repositorys_other_weight_copies():
    """Voxtral's repository also holds Mistral's consolidated.safetensors: never fetched (twice the disk)."""
    from fnmatch import fnmatch

    from rag_flamingo.backends.loading import MODEL_FILES

    def fetched(name: str) -> bool:
        return any(fnmatch(name, pattern) for pattern in MODEL_FILES)

    assert fetched("model.safetensors") and fetched("model-00001-of-00002.safetensors")
    assert fetched("model.safetensors.index.json") and fetched("tekken.json")
    assert not fetched("consolidated.safetensors")

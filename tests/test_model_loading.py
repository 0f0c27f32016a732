"""Strict loading of the released AF1 layout, parts, conversion to a transformers folder, offline failures."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from rag_flamingo.errors import CheckpointError, ConfigError
from rag_flamingo.model import (
    AudioFlamingoConfig,
    AudioFlamingoForConditionalGeneration,
    af1_key_layout,
    generate,
    load_af1_tokenizer,
    load_audio_flamingo,
)
from rag_flamingo.model.loading import build_meta_model, convert_released_checkpoint, released_state_dict

ROOT = Path(__file__).resolve().parents[1]
FIX = Path(__file__).parent / "fixtures"
TINY = FIX / "af1_tiny"
CFG = AudioFlamingoConfig.from_json(TINY / "config.json")


class _Payload:  # any arbitrary pickled object: weights_only must refuse it
    pass


def _released():
    return torch.load(TINY / "checkpoint.pt", weights_only=True)["model_state_dict"]


def _save(tmp_path, sd, name="ckpt.pt"):
    path = tmp_path / name
    torch.save({"model_state_dict": sd}, path)
    return path


@pytest.fixture(scope="module")
def reference_model():
    return load_audio_flamingo(TINY / "checkpoint.pt", CFG)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------ key map
def test_full_size_key_map_matches_all_1340_released_keys():
    rows = [
        line.rstrip("\n").split("\t") for line in (FIX / "af1_state_dict_keys.tsv").open() if not line.startswith("#")
    ]
    released = {r[2]: tuple(int(x) for x in r[3].split("x")) for r in rows}
    assert len(rows) == len(released) == 1340
    model = build_meta_model(AudioFlamingoConfig.foundation())  # meta: nothing allocated
    assert all(p.is_meta for p in model.parameters())
    layout = af1_key_layout(model)
    assert len(layout) == 1340
    ours = {s.checkpoint_key: s.shape for s in layout}
    assert ours == released
    roles = [s.role for s in layout]
    assert roles.count("alias") == 24 * 16 + 24 * 11 and roles.count("tied_head") == 1
    # every one of our parameters/buffers is fed by exactly one primary key
    primaries = [s.our_key for s in layout if s.role == "primary"]
    assert sorted(primaries) == sorted(model.state_dict(keep_vars=True))
    unique = sum(p.numel() for p in model.parameters())
    assert unique == 2_221_939_760  # the released checkpoint's unique parameters


def test_tiny_key_map_matches_fixture_keys_tsv():
    rows = [line.rstrip("\n").split("\t") for line in (TINY / "keys.tsv").open()][1:]
    layout = {s.checkpoint_key: s for s in af1_key_layout(build_meta_model(CFG))}
    assert set(layout) == {r[0] for r in rows}
    for key, _, _, _, alias_of in rows:
        if alias_of:
            assert layout[key].role in ("alias", "tied_head")
            assert layout[alias_of].our_key == layout[key].our_key


# ------------------------------------------------------------------ sources
def test_parts_and_module_prefix_load_the_same_weights(tmp_path, reference_model):
    sd = _released()
    keys = list(sd)
    for i in range(5):  # five consecutive chunks, like the released *_partN.pt
        chunk = keys[i * len(keys) // 5 : (i + 1) * len(keys) // 5]
        torch.save({"model_state_dict": {k: sd[k] for k in chunk}}, tmp_path / f"foundation_part{i + 1}.pt")
    from_dir = load_audio_flamingo(tmp_path, CFG)
    assert _same_weights(from_dir, reference_model)
    parts = [tmp_path / f"foundation_part{i}.pt" for i in (3, 1, 2, 5, 4)]
    assert _same_weights(load_audio_flamingo(parts, CFG), reference_model)
    with pytest.raises(CheckpointError, match="without gaps"):
        load_audio_flamingo(parts[:2], CFG)

    prefixed = _save(tmp_path, {"module." + k: v for k, v in sd.items()}, "prefixed.pt")
    assert _same_weights(load_audio_flamingo(prefixed, CFG), reference_model)
    # only an exact prefix on every key is stripped, never a substring
    half = dict(sd)
    half["module.extra"] = half.pop(keys[0])
    with pytest.raises(CheckpointError, match="module.extra"):
        load_audio_flamingo(_save(tmp_path, half, "half.pt"), CFG)


def test_strict_errors_name_the_keys(tmp_path):
    sd = _released()
    missing = dict(sd)
    del missing["lang_encoder.old_decoder_blocks.1.fc2.bias"]
    with pytest.raises(CheckpointError, match=r"1 missing: lang_encoder\.old_decoder_blocks\.1\.fc2\.bias"):
        load_audio_flamingo(_save(tmp_path, missing), CFG)

    extra = dict(sd, **{"lang_encoder.model.decoder.layers.0.gated_cross_attn_layer.attn.to_q.bias": torch.zeros(512)})
    with pytest.raises(CheckpointError, match=r"1 unexpected: .*to_q\.bias"):
        load_audio_flamingo(_save(tmp_path, extra), CFG)

    shaped = dict(sd)
    shaped["audio_transformer.layer_norm.weight"] = torch.ones(33)
    with pytest.raises(CheckpointError, match=r"audio_transformer\.layer_norm\.weight: expected \[32\], found \[33\]"):
        load_audio_flamingo(_save(tmp_path, shaped), CFG)

    with pytest.raises(CheckpointError, match="missing"):  # a checkpoint of a different size
        load_audio_flamingo(TINY / "checkpoint.pt", AudioFlamingoConfig.foundation())


def test_aliases_must_equal_primary(tmp_path):
    sd = _released()
    key = "lang_encoder.gated_cross_attn_layers.1.attn.to_kv.weight"
    sd[key] = sd[key] + 1e-3
    with pytest.raises(
        CheckpointError,
        match=r"gated_cross_attn_layers\.1\.attn\.to_kv\.weight != "
        r".*layers\.1\.gated_cross_attn_layer\.attn\.to_kv\.weight",
    ):
        load_audio_flamingo(_save(tmp_path, sd), CFG)


def test_untied_lm_head_wins_with_warning(tmp_path, caplog, reference_model):
    sd = _released()
    head = sd["lang_encoder.lm_head.weight"] * 1.5
    sd["lang_encoder.lm_head.weight"] = head
    with caplog.at_level(logging.WARNING):
        model = load_audio_flamingo(_save(tmp_path, sd), CFG)
    assert "lm_head.weight differs" in caplog.text
    assert torch.equal(model.decoder.embed_tokens.weight, head)  # input and output embeddings both = lm_head
    assert not torch.equal(model.decoder.embed_tokens.weight, reference_model.decoder.embed_tokens.weight)


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_audio_flamingo(bad, CFG)
    with pytest.raises(CheckpointError, match="not found"):
        load_audio_flamingo(tmp_path / "nope.pt", CFG)


def test_weights_only_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model_state_dict": _released(), "extra": _Payload()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_audio_flamingo(path, CFG)


class _Exploit:  # unpickling this runs a shell command: what a malicious checkpoint does
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_as_untrusted_with_the_safe_formats(tmp_path):
    path, marker = tmp_path / "evil.pt", tmp_path / "pwned"
    torch.save({"model_state_dict": _released(), "hook": _Exploit(marker)}, path)
    with pytest.raises(CheckpointError) as err:
        load_audio_flamingo(path, CFG)
    msg = str(err.value)
    assert not marker.exists()  # the payload never ran
    assert msg.startswith(f"{path}: refused as untrusted") and "code or objects beyond tensors" in msg
    assert "system" in msg  # names what the pickle references
    assert "scripts/convert_checkpoint.py" in msg and "torch.save({name: tensor" in msg
    assert "weights_only=False" not in msg  # torch's advice to run the file is not repeated


# ------------------------------------------------------------------ hub / offline
def test_offline_without_files_fails_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(CheckpointError, match=r"hf download nvidia/audio-flamingo foundation\.pt"):
        load_audio_flamingo("foundation", CFG, cache_dir=str(tmp_path / "hub"))
    with pytest.raises(CheckpointError, match=r"facebook/opt-iml-max-1\.3b"):
        load_af1_tokenizer("facebook/opt-iml-max-1.3b", cache_dir=str(tmp_path / "hub"))
    # no config given: the OPT config is read from the hub id, which is not cached here either
    with pytest.raises(CheckpointError, match=r"hf download facebook/opt-iml-max-1\.3b config\.json"):
        load_audio_flamingo(TINY / "checkpoint.pt")


_UNREACHABLE = r"""
import json, sys, time
from rag_flamingo.checkpoints import load_text_tower
from rag_flamingo.errors import CheckpointError
from rag_flamingo.model import AudioFlamingoConfig, load_af1_tokenizer, load_audio_flamingo
tiny = AudioFlamingoConfig.from_json(sys.argv[1])
calls = {
    "checkpoint": lambda: load_audio_flamingo("foundation", tiny),
    "tokenizer": lambda: load_af1_tokenizer("facebook/opt-iml-max-1.3b"),
    "opt_config": lambda: AudioFlamingoConfig.foundation(lm="facebook/opt-iml-max-1.3b"),
    "text_tower": lambda: load_text_tower("roberta-base", lambda d: d, hub_id="roberta-base"),
}
out = {}
for name, call in calls.items():
    t0 = time.monotonic()
    try:
        call()
        out[name] = {"seconds": time.monotonic() - t0, "error": None}
    except CheckpointError as e:
        out[name] = {"seconds": time.monotonic() - t0, "error": str(e)}
print(json.dumps(out))
"""


def test_unreachable_hub_fails_fast_without_retries(tmp_path):
    """HF_HUB_OFFLINE unset, an empty cache and a hub that refuses connections: every hub-backed
    load is a CheckpointError naming the `hf download` command within seconds, with no retry spam."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9")  # port 9: closed
    r = subprocess.run(
        [sys.executable, "-c", _UNREACHABLE, str(TINY / "config.json")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout.strip().splitlines()[-1])
    commands = {
        "checkpoint": "hf download nvidia/audio-flamingo foundation.pt",
        "tokenizer": "hf download facebook/opt-iml-max-1.3b --include '*.json' --include '*.txt'",
        "opt_config": "hf download facebook/opt-iml-max-1.3b config.json",
        "text_tower": "hf download roberta-base --include '*.json' --include '*.txt'",
    }
    for name, command in commands.items():
        assert results[name]["error"] is not None and command in results[name]["error"], (name, results[name])
        assert results[name]["seconds"] < 3.0, (name, results[name]["seconds"])
    assert "Retrying" not in r.stderr and len(r.stderr.splitlines()) < 5, r.stderr


def test_cached_hub_file_loads_without_the_hub(tmp_path):
    """A hub checkpoint already in the cache is used as is: no request (the tests run offline)."""
    snapshot = tmp_path / "hub" / "models--nvidia--audio-flamingo" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    (snapshot / "foundation.pt").symlink_to(TINY / "checkpoint.pt")
    model = load_audio_flamingo("foundation", CFG, cache_dir=str(tmp_path / "hub"))
    assert _same_weights(model, load_audio_flamingo(TINY / "checkpoint.pt", CFG))


def test_local_tokenizer_dir_error_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match=str(tmp_path)):
        load_af1_tokenizer(str(tmp_path))  # exists, but holds no tokenizer


def test_tokenizer_mismatch_is_reported():
    tok = load_af1_tokenizer(str(TINY / "tokenizer"))
    with pytest.raises(CheckpointError, match="media_token_id=600"):
        load_audio_flamingo(TINY / "checkpoint.pt", AudioFlamingoConfig.foundation(), tok)


# ------------------------------------------------------------------ conversion
def test_convert_script_writes_a_transformers_folder(tmp_path, reference_model):
    """The converter writes save_pretrained's layout; from_pretrained loads exactly the released-format model."""
    out = tmp_path / "tiny-hf"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "convert_checkpoint.py"),
            str(TINY / "checkpoint.pt"),
            str(out),
            "--config",
            str(TINY / "config.json"),
            "--tokenizer",
            str(TINY / "tokenizer"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    (tmp_path / "a_file").write_text("")
    blocked = [sys.executable, str(ROOT / "scripts" / "convert_checkpoint.py"), str(TINY / "checkpoint.pt")]
    blocked += [str(tmp_path / "a_file" / "sub"), "--config", str(TINY / "config.json")]
    blocked += ["--tokenizer", str(TINY / "tokenizer")]
    refused = subprocess.run(blocked, capture_output=True, text=True, cwd=ROOT)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "a_file" in refused.stderr
    names = {f.name for f in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer_config.json"} <= names
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert len(keys) == 140 - 55  # no aliases
    assert not any("old_decoder_blocks" in k or "gated_cross_attn_layers." in k or "lm_head" in k for k in keys)
    assert json.loads((out / "config.json").read_text())["model_type"] == "audio_flamingo"
    generation = json.loads((out / "generation_config.json").read_text())
    assert (generation["eos_token_id"], generation["pad_token_id"]) == (2, 1)

    converted = AudioFlamingoForConditionalGeneration.from_pretrained(out)
    saved_only = ("transformers_version", "architectures", "dtype", "_name_or_path")  # what saving and loading add
    assert {k: v for k, v in converted.config.to_dict().items() if k not in saved_only} == {
        k: v for k, v in reference_model.config.to_dict().items() if k not in saved_only
    }
    assert _same_weights(converted, reference_model)
    tok = AutoTokenizer.from_pretrained(out)  # the AF1 tokenizer, its three tokens included
    assert tok.convert_tokens_to_ids(["<audio>", "<|endofchunk|>", "<SEP>"]) == [600, 601, 602]
    assert _same_weights(load_audio_flamingo(out, tokenizer=load_af1_tokenizer(str(out))), reference_model)
    ids = torch.tensor([[2, 2, 600, 5, 6, 602]])
    x, xm = torch.randn(1, 4, 32), torch.ones(1, 4)
    assert torch.equal(
        generate(converted, ids, None, x, xm, max_new_tokens=4, eos_token_id=None).sequences,
        generate(reference_model, ids, None, x, xm, max_new_tokens=4, eos_token_id=None).sequences,
    )

    half = convert_released_checkpoint(
        TINY / "checkpoint.pt", tmp_path / "bf16", CFG, "bf16", tokenizer=str(TINY / "tokenizer")
    )
    size = (half / "model.safetensors").stat().st_size
    assert size < (out / "model.safetensors").stat().st_size * 0.6
    bf16 = load_audio_flamingo(half)  # the dtype it was saved in
    assert bf16.dtype == torch.bfloat16
    with torch.no_grad():
        ref = reference_model(ids, x, xm).logits
        got = bf16(ids, x, xm).logits.float()
    assert (got - ref).abs().max() < 0.1 * ref.abs().max()
    beams = generate(bf16, ids, None, x, xm, max_new_tokens=3, num_beams=2, eos_token_id=None)
    assert beams.new_tokens.shape == (1, 3)


def test_save_pretrained_round_trip_and_strict_from_pretrained(tmp_path, reference_model):
    from safetensors.torch import load_file, save_file

    reference_model.save_pretrained(tmp_path / "m")
    again = AudioFlamingoForConditionalGeneration.from_pretrained(tmp_path / "m")
    assert _same_weights(again, reference_model)
    weights = load_file(str(tmp_path / "m" / "model.safetensors"))
    for name, change in (
        ("missing", lambda sd: sd.pop("decoder.final_layer_norm.bias")),
        ("unexpected", lambda sd: sd.__setitem__("decoder.extra", torch.zeros(1))),
    ):
        broken = dict(weights)
        change(broken)
        folder = tmp_path / name
        reference_model.config.save_pretrained(folder)
        save_file(broken, str(folder / "model.safetensors"), metadata={"format": "pt"})
        with pytest.raises(CheckpointError, match=name):
            AudioFlamingoForConditionalGeneration.from_pretrained(folder)
    damaged = tmp_path / "damaged"  # a cut safetensors file: one line, not safetensors' own error
    reference_model.config.save_pretrained(damaged)
    (damaged / "model.safetensors").write_bytes((tmp_path / "m" / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="safetensors file cannot be read"):
        AudioFlamingoForConditionalGeneration.from_pretrained(damaged)


def test_a_json_that_is_no_model_config_is_refused(tmp_path):
    """Any JSON is not a model config: the released sizes are never silently assumed."""
    other = tmp_path / "cases.json"
    other.write_text('{"foo": 1}')
    with pytest.raises(ConfigError, match="not an AF1 model config"):
        AudioFlamingoConfig.from_json(other)
    ours = tmp_path / "ours.json"  # what save_pretrained writes is one
    ours.write_text(json.dumps(CFG.to_dict()))
    assert AudioFlamingoConfig.from_json(ours).to_dict() == CFG.to_dict()


def test_converted_file_is_checked(tmp_path):
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"a": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="convert_checkpoint.py"):
        load_audio_flamingo(foreign, CFG)


def test_released_state_dict_round_trip(tmp_path, reference_model):
    sd = released_state_dict(reference_model)
    assert list(sd) == list(_released()) or set(sd) == set(_released())
    again = load_audio_flamingo(_save(tmp_path, sd), CFG)
    assert _same_weights(again, reference_model)

"""The Hydra ``model`` group: configs compose, and the tiny one loads a working model."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from safetensors.torch import load_file

from rag_flamingo.errors import ConfigError
from rag_flamingo.model import GenerationSettings, generate
from rag_flamingo.model.factory import checkpoint_spec, default_tokenizer, generation_settings, load_model
from rag_flamingo.paths import conf_dir


def _model_cfg(name):
    with initialize_config_dir(config_dir=str(conf_dir() / "model"), version_base="1.3"):
        return compose(config_name=name)


def test_foundation_and_chat_configs_name_the_released_files():
    f, c = _model_cfg("foundation"), _model_cfg("chat")
    assert checkpoint_spec(f) == {"repo_id": "nvidia/audio-flamingo", "filename": "foundation.pt"}
    assert checkpoint_spec(c) == {"repo_id": "nvidia/audio-flamingo", "filename": "chat.pt"}
    assert f.lm == default_tokenizer(checkpoint_spec(f)) == "facebook/opt-iml-max-1.3b" and f.tokenizer is None
    assert f.audio_encoder.hub_repo == "microsoft/msclap" and f.audio_encoder.filename == "clapcap_weights_2023.pth"
    # the audio encoder is named with the encoder's own options (what build_encoder("clapcap", ...) takes)
    assert set(f.audio_encoder) <= set(OmegaConf.load(conf_dir() / "encoder" / "clapcap.yaml"))
    assert generation_settings(f).num_beams == 3 and f.num_slots == 8
    assert generation_settings(c).do_sample is True and c.num_slots == 4 and c.max_rounds == 4
    assert generation_settings(c) == GenerationSettings(do_sample=True, top_p=0.95)  # the reference chat settings


def test_tiny_config_loads_a_working_model():
    cfg = _model_cfg("tiny")
    model, tok = load_model(cfg)
    fix = Path(__file__).parent / "fixtures" / "af1_tiny"
    arr = load_file(str(fix / "cases.safetensors"))
    n = "caption_single"
    out = generate(
        model,
        arr[f"{n}/input_ids"],
        None,
        arr[f"{n}/audio_x"],
        arr[f"{n}/audio_x_mask"],
        generation_settings(cfg),
        eos_token_id=None,
    )
    assert out.new_tokens[0].tolist() == arr[f"{n}/gen_nocache_tokens"].tolist()
    assert len(tok) == model.config.vocab_size


def test_bad_generation_key_is_rejected():
    cfg = {"generation": {"num_beam": 3}}
    with pytest.raises(ConfigError, match="model.generation.num_beam: .*did you mean 'num_beams'"):
        generation_settings(cfg)
    with pytest.raises(ConfigError):
        checkpoint_spec({"checkpoint": {}})

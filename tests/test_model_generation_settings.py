"""`GenerationSettings`: one validated decoding type, built from the YAML section, passed whole to generate."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from rag_flamingo.devices import parse_dtype
from rag_flamingo.errors import ConfigError
from rag_flamingo.model import GenerationSettings, generation_settings
from rag_flamingo.paths import conf_dir


@pytest.mark.parametrize(
    "bad, setting",
    [
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(num_beams=0), "num_beams"),
        (dict(top_k=-1), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(do_sample=True, temperature=0.0), "temperature"),
        (dict(temperature=-1), "temperature"),
        (dict(early_stopping="sometimes"), "early_stopping"),
        (dict(do_sample=True, num_beams=2), "do_sample"),
        (dict(num_beams=2, num_return_sequences=3), "num_return_sequences"),
        (dict(num_return_sequences=4), "num_return_sequences"),  # several greedy copies: needs do_sample
        (dict(num_beams="3"), "num_beams"),
        (dict(do_sample="yes"), "do_sample"),
        (dict(seed=1.5), "seed"),
    ],
)
def test_bad_values_are_config_errors_naming_the_setting(bad, setting):
    with pytest.raises(ConfigError, match=rf"^model\.generation\.{setting}="):
        GenerationSettings(**bad)


def test_valid_combinations_and_number_coercion():
    s = GenerationSettings(do_sample=True, num_return_sequences=4, top_p=1, temperature=2, seed=None)
    assert s.top_p == 1.0 and isinstance(s.top_p, float) and s.temperature == 2.0 and s.seed is None
    assert GenerationSettings(num_beams=3, num_return_sequences=2, early_stopping="never").num_return_sequences == 2
    assert s.replace(num_return_sequences=1).do_sample is True
    with pytest.raises(ConfigError, match="num_return_sequences"):
        s.replace(do_sample=False)  # re-validated: 4 greedy copies are refused


def test_from_config_names_unknown_keys_with_a_suggestion():
    assert GenerationSettings.from_config(None) == GenerationSettings()
    assert GenerationSettings.from_config({"num_beams": 3}).num_beams == 3
    with pytest.raises(ConfigError, match=r"model\.generation\.temprature: .*did you mean 'temperature'"):
        GenerationSettings.from_config({"temprature": 0.7})
    with pytest.raises(ConfigError, match=r"did you mean 'num_return_sequences'"):
        GenerationSettings().replace(num_return_sequence=2)


def test_model_configs_and_the_clap_filter():
    with initialize_config_dir(config_dir=str(conf_dir() / "model"), version_base="1.3"):
        foundation = compose(config_name="foundation")
    settings = generation_settings(foundation)
    assert settings == GenerationSettings(num_beams=3)  # the reference benchmark setting
    sampled = generation_settings(foundation, clap_samples=4)  # the CLAP filter samples 4 answers
    assert sampled == GenerationSettings(do_sample=True, num_beams=1, num_return_sequences=4)
    assert generation_settings(foundation, clap_samples=1) == settings
    with pytest.raises(ConfigError, match=r"model\.generation\.num_beams=0"):
        generation_settings({"generation": {"num_beams": 0}})


def test_dtype_names_come_from_one_table():
    assert parse_dtype("bf16", "model.dtype") is torch.bfloat16 is parse_dtype("bfloat16", "precision")
    assert parse_dtype("auto", "model.dtype", torch.float32) is torch.float32
    assert parse_dtype(torch.float16, "dtype") is torch.float16
    with pytest.raises(ConfigError, match=r"model\.dtype='int8'"):
        parse_dtype("int8", "model.dtype")

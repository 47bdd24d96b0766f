"""gguf.sampling: generation_config.json's sampling defaults by llama.cpp's and Ollama's names, and
the params file `gguf convert` writes beside the GGUF files."""

from __future__ import annotations

import json

import pytest

from apto_release.errors import InputError
from apto_release.gguf.sampling import ollama_params, params_text, sampling_defaults


def write(tmp_path, config) -> object:
    (tmp_path / "generation_config.json").write_text(json.dumps(config), "utf-8")
    return tmp_path


def test_only_the_keys_the_checkpoint_has_by_llama_cpp_names(tmp_path):
    config = {"do_sample": True, "temperature": 0.6, "top_k": 20, "top_p": 0.95, "min_p": 0, "repetition_penalty": 1.05,
              "eos_token_id": [1, 2], "max_new_tokens": 512}
    assert sampling_defaults(write(tmp_path, config)) == {"temp": 0.6, "top_k": 20, "top_p": 0.95, "min_p": 0.0, "penalty_repeat": 1.05}
    assert sampling_defaults(write(tmp_path, {"eos_token_id": 2})) == {}
    assert sampling_defaults(tmp_path / "missing") == {}


def test_sampling_turned_off_is_greedy(tmp_path):
    # transformers decodes greedily with do_sample false whatever the temperature says; llama.cpp's greedy is temp 0
    assert sampling_defaults(write(tmp_path, {"do_sample": False, "temperature": 0.7, "top_p": 0.8})) == {"temp": 0.0}
    assert sampling_defaults(write(tmp_path, {"do_sample": False})) == {}


@pytest.mark.parametrize("config, field", [({"temperature": "hot"}, "temperature"), ({"top_k": 2.5}, "top_k"),
                                           ({"top_p": -1}, "top_p"), ({"temperature": True}, "temperature")])
def test_a_bad_value_is_named(tmp_path, config, field):
    with pytest.raises(InputError) as info:
        sampling_defaults(write(tmp_path, config))
    assert info.value.field == field and "generation_config.json" in str(info.value.path)


def test_a_file_that_is_not_json_is_a_clear_error(tmp_path):
    (tmp_path / "generation_config.json").write_text("{", "utf-8")
    with pytest.raises(InputError, match="not valid JSON"):
        sampling_defaults(tmp_path)


def test_ollama_params_use_ollama_names_and_stop_at_the_end_of_turn(tmp_path):
    assert ollama_params({"temp": 1.0, "top_k": 20, "penalty_repeat": 1.1}, ["<|im_end|>"]) == {
        "stop": ["<|im_end|>"], "temperature": 1.0, "top_k": 20, "repeat_penalty": 1.1}
    text = params_text(write(tmp_path, {"do_sample": True, "temperature": 1.0, "top_p": 0.95}), ["<|im_end|>"])
    assert json.loads(text) == {"stop": ["<|im_end|>"], "temperature": 1.0, "top_p": 0.95} and text.endswith("}\n")

"""Presets: shipped as data, every setting explained, loaded strictly, overridden with types."""

from __future__ import annotations

import dataclasses
import re
from importlib import resources

import pytest

from apto_release.errors import UsageError
from apto_release.train.presets import (
    KNOWN_TARGETS,
    PresetError,
    TrainConfig,
    known_keys,
    load_preset,
    parse_overrides,
    preset_names,
    target_regex,
    with_overrides,
)

PRESETS = ("qwen3.5-27b", "qwen3.5-9b", "qwen3.5-9b-base", "tiny")


def preset_text(name: str) -> str:
    return resources.files("apto_release.train").joinpath("presets", f"{name}.toml").read_text("utf-8")


def test_the_four_presets_are_shipped_and_load():
    assert preset_names() == sorted(PRESETS)
    for name in PRESETS:
        config = load_preset(name)
        assert isinstance(config, TrainConfig) and config.name == name
        assert set(config.flat()) == set(known_keys())
        assert config.data.end_of_turn == "<|im_end|>"
        assert set(config.lora.target_modules) == set(KNOWN_TARGETS)


def test_preset_values_follow_their_reasons():
    big, nine, base, tiny = (load_preset(n) for n in PRESETS)
    assert big.train.learning_rate < nine.train.learning_rate and big.lora.r < nine.lora.r
    assert big.train.fsdp and not nine.train.fsdp and not base.train.fsdp
    for c in (big, nine, base):
        assert c.train.precision == "bf16" and c.train.gradient_checkpointing
        assert c.lora.alpha == 2 * c.lora.r
    # The base model has no chat template of its own: the preset names ChatML and <|im_end|>.
    assert base.data.chat_template == "chatml" and nine.data.chat_template == big.data.chat_template == ""
    assert big.effective_batch_per_device * 4 == nine.effective_batch_per_device == base.effective_batch_per_device == 32
    assert tiny.train.precision == "fp32" and tiny.data.max_length <= 1024


@pytest.mark.parametrize("name", PRESETS)
def test_every_setting_says_why(name):
    lines = preset_text(name).splitlines()
    setting = re.compile(r"^\s*([A-Za-z_][\w]*)\s*=")
    for i, line in enumerate(lines):
        m = setting.match(line)
        if not m:
            continue
        above = lines[i - 1].strip() if i else ""
        assert "#" in line or above.startswith("#"), f"{name}.toml: '{m.group(1)}' has no comment saying why"


# -- strict loading ---------------------------------------------------------------------------


def write_variant(tmp_path, name="tiny", replace=None, append=""):
    text = preset_text(name)
    for old, new in (replace or {}).items():
        assert old in text
        text = text.replace(old, new, 1)
    path = tmp_path / "mine.toml"
    path.write_text(text + append, encoding="utf-8")
    return path


def test_a_preset_file_by_path(tmp_path):
    path = write_variant(tmp_path, replace={"r = 4": "r = 6"})
    config = load_preset(path)
    assert config.name == "mine" and config.lora.r == 6


def test_an_unknown_key_names_the_file_and_the_key(tmp_path):
    path = write_variant(tmp_path, replace={"r = 4": "rank = 4"})
    with pytest.raises(PresetError) as info:
        load_preset(path)
    assert str(info.value).startswith(f"{path}: unknown key 'lora.rank'")
    assert "lora.r" in info.value.hint and info.value.exit_code == 2

    path = write_variant(tmp_path, append='\n[optimizer]\nlr = 1.0\n')
    with pytest.raises(PresetError, match=r"unknown key 'optimizer'"):
        load_preset(path)


def test_a_missing_key_or_a_wrong_type_in_a_file(tmp_path):
    with pytest.raises(PresetError, match=r"missing key\(s\) lora.r\b"):
        load_preset(write_variant(tmp_path, replace={"r = 4\n": ""}))
    with pytest.raises(PresetError) as info:
        load_preset(write_variant(tmp_path, replace={"r = 4": 'r = "4"'}))
    assert str(info.value) == f"{tmp_path / 'mine.toml'}: 'lora.r' must be an integer, not a string ('4')"
    with pytest.raises(PresetError, match="'train.fsdp' must be a boolean"):
        load_preset(write_variant(tmp_path, replace={"fsdp = false": "fsdp = 0"}))
    with pytest.raises(PresetError, match="not valid TOML"):
        load_preset(write_variant(tmp_path, append="\n[lora\n"))


def test_an_unknown_preset_lists_the_known_ones():
    with pytest.raises(PresetError) as info:
        load_preset("qwen3.5-9")
    assert "known presets: qwen3.5-27b, qwen3.5-9b, qwen3.5-9b-base, tiny" in str(info.value)
    assert "'qwen3.5-9b'" in info.value.hint


# -- overrides --------------------------------------------------------------------------------


def test_overrides_take_the_type_of_the_field():
    config = load_preset(
        "qwen3.5-9b",
        [
            "lora.r=8",
            "lora.dropout=0",
            "train.learning_rate=5e-5",
            "train.fsdp=true",
            "train.gradient_checkpointing=off",
            "data.chat_template=chatml",
            "lora.target_modules=q_proj, v_proj",
            "base_model=my/model=v2",
        ],
    )
    assert config.lora.r == 8 and type(config.lora.r) is int
    assert config.lora.dropout == 0.0 and type(config.lora.dropout) is float
    assert config.train.learning_rate == 5e-5
    assert config.train.fsdp is True and config.train.gradient_checkpointing is False
    assert config.data.chat_template == "chatml"
    assert config.lora.target_modules == ("q_proj", "v_proj")
    assert config.base_model == "my/model=v2"
    assert parse_overrides(['lora.target_modules=["q_proj", "o_proj"]', 'data.chat_template=""']) == {
        "lora.target_modules": ("q_proj", "o_proj"),
        "data.chat_template": "",
    }
    # Later overrides win; the preset itself is untouched.
    assert load_preset("tiny", ["lora.r=8", "lora.r=16"]).lora.r == 16
    assert load_preset("tiny").lora.r == 4


def test_the_thinking_policy_is_explicit_in_every_preset():
    # Default: answers trained after the template's empty think block (issue 12).
    for name in PRESETS:
        assert load_preset(name).data.thinking == "empty"
        text = preset_text(name)
        assert re.search(r'^thinking = "empty"$', text, re.M), f"{name}.toml states data.thinking"
    assert "data.thinking" in known_keys()
    assert load_preset("qwen3.5-9b", ["data.thinking=reasoning"]).data.thinking == "reasoning"


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("lora.r=8.0", "'lora.r' must be an integer, not '8.0'"),
        ("lora.r=eight", "'lora.r' must be an integer, not 'eight'"),
        ("train.learning_rate=fast", "'train.learning_rate' must be a number, not 'fast'"),
        ("train.fsdp=maybe", "'train.fsdp' must be a boolean (true or false), not 'maybe'"),
        ("lora.dropout=1.5", "'lora.dropout' must be from 0 up to (not including) 1, not 1.5"),
        ("train.precision=fp16", "'train.precision' must be one of bf16, fp32, not 'fp16'"),
        ("data.chat_template=llama", "'data.chat_template' must be"),
        ("data.thinking=full", "--set data.thinking: 'data.thinking' must be one of 'empty', 'reasoning', not 'full'"),
        ("lora.target_modules=qkv,q_proj", "unknown module name(s) qkv"),
        ("lora.target_modules=", "'lora.target_modules' is empty"),
        ("lora.r", "--set 'lora.r' is not KEY=VALUE"),
    ],
)
def test_bad_override_values_are_clear_errors(item, message):
    with pytest.raises(PresetError) as info:
        load_preset("tiny", [item])
    assert message in str(info.value)
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2


def test_an_unknown_override_key_lists_the_known_keys():
    with pytest.raises(PresetError) as info:
        load_preset("tiny", ["lora.rank=8"])
    message = str(info.value)
    assert message.startswith("unknown key 'lora.rank' in --set; known keys: description, base_model, lora.r, lora.alpha")
    assert all(key in message for key in known_keys())
    assert info.value.hint == "did you mean 'lora.r'?"


def test_the_config_is_frozen_and_with_overrides_checks_again():
    config = load_preset("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lora.r = 8  # type: ignore[misc]
    changed = with_overrides(config, {"lora.r": 8, "data.max_length": 64})
    assert (changed.lora.r, changed.data.max_length, changed.name) == (8, 64, "tiny")
    assert with_overrides(config, {}) == config
    with pytest.raises(PresetError, match="'data.max_length' must be at least 1"):
        with_overrides(config, ["data.max_length=0"])


# -- targets ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen35_linear_names():
    """Names of the linear modules of a tiny Qwen3.5, with and without the vision tower (on meta)."""
    import torch
    from transformers import Qwen3_5Config, Qwen3_5ForCausalLM, Qwen3_5ForConditionalGeneration, Qwen3_5TextConfig

    from apto_release.testing.models import QWEN35_TEXT_CONFIG, QWEN35_VISION_CONFIG

    text = dict(QWEN35_TEXT_CONFIG, vocab_size=320)
    vision = dict(QWEN35_VISION_CONFIG, out_hidden_size=text["hidden_size"])
    names = []
    with torch.device("meta"):
        for model in (Qwen3_5ForConditionalGeneration(Qwen3_5Config(text_config=text, vision_config=vision)), Qwen3_5ForCausalLM(Qwen3_5TextConfig(**text))):
            names += [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    return names


def test_targets_cover_the_text_decoder_and_never_the_vision_tower(qwen35_linear_names):
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    regex = load_preset("qwen3.5-9b").lora.target_regex
    peft_config = LoraConfig(target_modules=regex)
    matched = {n for n in qwen35_linear_names if check_target_module_exists(peft_config, n)}
    vision = {n for n in qwen35_linear_names if ".visual." in n}
    assert vision and not matched & vision
    assert matched == {n for n in qwen35_linear_names if ".layers." in n}
    leaves = {n.rsplit(".", 1)[1] for n in matched}
    assert leaves == set(KNOWN_TARGETS)  # every kind of layer is in the tiny model, and targeted
    assert any(n.startswith("model.language_model.layers.") for n in matched)  # ForConditionalGeneration
    assert any(n.startswith("model.layers.") for n in matched)  # ForCausalLM
    # Names that must never match: the vision tower (also under a PEFT wrapper), the MTP head that
    # real checkpoints carry, the output head.
    for name in (
        "model.visual.blocks.0.attn.qkv", "model.visual.blocks.0.attn.proj", "model.visual.blocks.0.mlp.linear_fc1",
        "model.visual.merger.linear_fc2", "base_model.model.model.visual.blocks.3.attn.qkv",
        "model.visual.layers.0.self_attn.q_proj", "mtp.layers.0.self_attn.q_proj", "mtp.fc", "lm_head",
    ):
        assert not re.fullmatch(regex, name), name
    assert re.fullmatch(regex, "base_model.model.model.language_model.layers.12.linear_attn.in_proj_qkv")


def test_a_subset_of_targets():
    regex = target_regex(["q_proj", "in_proj_z"])
    assert re.fullmatch(regex, "model.layers.3.self_attn.q_proj")
    assert re.fullmatch(regex, "model.layers.0.linear_attn.in_proj_z")
    assert not re.fullmatch(regex, "model.layers.3.self_attn.k_proj")
    with pytest.raises(ValueError, match="unknown target module"):
        target_regex(["qkv"])


def test_settings_added_later_may_be_left_out_of_a_file_and_default_to_off(tmp_path):
    path = write_variant(tmp_path, replace={"liger_kernel = false\n": "", "packing = false\n": ""})
    config = load_preset(path)
    assert config.train.liger_kernel is False and config.data.packing is False
    assert list(config.flat())[-1] == "data.packing"
    assert load_preset(path, ["data.packing=true", "train.liger_kernel=yes"]).data.packing is True
    with pytest.raises(PresetError, match="'data.packing' must be a boolean"):
        load_preset(write_variant(tmp_path, replace={"packing = false": 'packing = "no"'}))

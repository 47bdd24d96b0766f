"""Tests of the local fixtures for the training, merge and GGUF stages (``apto_release.testing``).

They pin what those stages rely on: a Qwen-style tokenizer that round-trips Japanese and renders
ChatML; tiny Qwen3.5 and Qwen3 checkpoints in the real layout (shards, index, ``mtp.*`` tensors in
the last shard, different linear key and value head counts, random norms) that transformers loads
without missing keys and runs; and byte-identical output for the same seed, in another process too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apto_release.testing import (
    CHAT_TEMPLATE,
    build_japanese_tokenizer,
    build_tiny_qwen3,
    build_tiny_qwen35,
)
from apto_release.testing.models import _split_names

# The builders import these inside; the base install (the dataset side) does not have them.
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
safetensors_torch = pytest.importorskip("safetensors.torch")

CONVERSATION = [
    {"role": "system", "content": "あなたは丁寧なアシスタントです。"},
    {"role": "user", "content": "東京の天気を教えてください。"},
    {"role": "assistant", "content": "申し訳ありませんが、最新の天気はわかりません。"},
]
CHATML = (
    "<|im_start|>system\nあなたは丁寧なアシスタントです。<|im_end|>\n"
    "<|im_start|>user\n東京の天気を教えてください。<|im_end|>\n"
    "<|im_start|>assistant\n申し訳ありませんが、最新の天気はわかりません。<|im_end|>\n"
)
JAPANESE = [
    "こんにちは、世界！",
    "「kill -9 番号」で強制終了します。ただし保存していないデータは失われることがあります。\n\n",
    "全角数字１２３と半角数字123、記号（）・〜、絵文字🎉、改行\r\nも含む文。",
    "  先頭と末尾の空白  ",
]

# Build the checkpoints in a fresh process and print nothing: the test compares the bytes.
_BUILD_IN_SUBPROCESS = """
import sys
from apto_release.testing import build_japanese_tokenizer, build_tiny_qwen35
build_tiny_qwen35(sys.argv[1], tokenizer=build_japanese_tokenizer())
"""


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _tensors(folder: Path) -> dict:
    tensors = {}
    for shard in sorted(folder.glob("*.safetensors")):
        tensors.update(safetensors_torch.load_file(shard))
    return tensors


@pytest.fixture(scope="module")
def tokenizer():
    return build_japanese_tokenizer()


@pytest.fixture(scope="module")
def qwen35(tmp_path_factory, tokenizer) -> Path:
    return build_tiny_qwen35(tmp_path_factory.mktemp("qwen35") / "model", tokenizer=tokenizer)


@pytest.fixture(scope="module")
def qwen35_model(qwen35):
    model, info = transformers.Qwen3_5ForConditionalGeneration.from_pretrained(qwen35, output_loading_info=True)
    return model.eval(), info


# --- tokenizer ----------------------------------------------------------------------------------


def test_tokenizer_is_deterministic(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "a")
    build_japanese_tokenizer(tmp_path / "b")
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    other = build_japanese_tokenizer(seed=1)
    assert other.backend_tokenizer.to_str() != tokenizer.backend_tokenizer.to_str()


def test_tokenizer_size_and_special_ids(tokenizer):
    assert len(tokenizer) == 3000
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.bos_token is None
    # Special tokens follow the ordinary vocabulary, in Qwen's order.
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [2993, 2994, 2995]


@pytest.mark.parametrize("text", JAPANESE)
def test_japanese_round_trips(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_any_text_round_trips_after_nfc(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == unicodedata.normalize("NFC", text)


def test_unseen_records_round_trip_in_few_tokens(tokenizer):
    from apto_release.dataset.example import generate_records

    tokens = utf8_bytes = 0
    for record in generate_records(50, seed=5):  # not the training records (seed 0)
        for message in record["messages"]:
            ids = tokenizer.encode(message["content"])
            assert tokenizer.decode(ids) == message["content"]
            tokens += len(ids)
            utf8_bytes += len(message["content"].encode())
    # Learnt merges: about 6 bytes (2 characters) a token, where raw bytes would be 1.
    assert utf8_bytes / tokens > 4


@pytest.mark.parametrize("token", ["<|im_start|>", "<|im_end|>", "<|endoftext|>"])
def test_chat_tokens_are_single_special_tokens(tokenizer, token):
    ids = tokenizer.encode(f"ユーザー{token}です", add_special_tokens=False)
    token_id = tokenizer.convert_tokens_to_ids(token)
    assert ids.count(token_id) == 1
    assert tokenizer.added_tokens_decoder[token_id].special
    assert token in tokenizer.all_special_tokens
    assert tokenizer.decode(ids, skip_special_tokens=True) == "ユーザーです"


def test_chat_template_renders_chatml(tokenizer):
    assert tokenizer.chat_template == CHAT_TEMPLATE
    assert tokenizer.apply_chat_template(CONVERSATION, tokenize=False) == CHATML
    prompt = tokenizer.apply_chat_template(CONVERSATION[:2], tokenize=False, add_generation_prompt=True)
    assert prompt == CHATML.split("<|im_start|>assistant")[0] + "<|im_start|>assistant\n"
    ids = tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=False)
    assert tokenizer.decode(ids) == CHATML


def test_tokenizer_loads_back_with_auto_tokenizer(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = transformers.AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert loaded.apply_chat_template(CONVERSATION, tokenize=False) == CHATML
    assert loaded.encode(JAPANESE[1]) == tokenizer.encode(JAPANESE[1])
    assert (loaded.eos_token, loaded.pad_token) == ("<|im_end|>", "<|endoftext|>")


def test_builders_refuse_a_folder_with_files(tmp_path):
    (tmp_path / "x").write_text("keep me")
    with pytest.raises(FileExistsError):
        build_japanese_tokenizer(tmp_path)
    assert (tmp_path / "x").read_text() == "keep me"


# --- tiny Qwen3.5 -------------------------------------------------------------------------------


def test_qwen35_shards_and_index_agree(qwen35):
    index = json.loads((qwen35 / "model.safetensors.index.json").read_text())
    shards = sorted(qwen35.glob("*.safetensors"))
    assert [p.name for p in shards] == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert sorted(set(index["weight_map"].values())) == [p.name for p in shards]
    total = 0
    for shard in shards:
        tensors = safetensors_torch.load_file(shard)
        assert tensors, shard.name
        assert {k for k, v in index["weight_map"].items() if v == shard.name} == set(tensors)
        total += sum(t.nbytes for t in tensors.values())
    assert index["metadata"]["total_size"] == total


def test_qwen35_layout(qwen35):
    names = set(_tensors(qwen35))
    assert "lm_head.weight" in names
    assert "model.language_model.embed_tokens.weight" in names
    assert "model.language_model.layers.0.linear_attn.in_proj_qkv.weight" in names
    assert "model.language_model.layers.3.self_attn.q_proj.weight" in names
    assert "model.visual.blocks.0.attn.qkv.weight" in names
    assert "model.visual.merger.linear_fc2.weight" in names
    assert {n.split(".")[0] for n in names} == {"lm_head", "model", "mtp"}
    config = json.loads((qwen35 / "config.json").read_text())
    assert config["architectures"] == ["Qwen3_5ForConditionalGeneration"]
    assert config["text_config"]["layer_types"] == ["linear_attention"] * 3 + ["full_attention"]
    assert config["text_config"]["vocab_size"] == 3000
    assert config["image_token_id"] == 2998  # <|image_pad|>, a real token of the tiny tokenizer
    generation = json.loads((qwen35 / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [2995, 2993] and generation["pad_token_id"] == 2993
    assert (qwen35 / "tokenizer.json").is_file() and (qwen35 / "chat_template.jinja").is_file()


def test_qwen35_mtp_tensors_are_in_the_last_shard(qwen35):
    index = json.loads((qwen35 / "model.safetensors.index.json").read_text())
    mtp = {k: v for k, v in index["weight_map"].items() if k.startswith("mtp.")}
    assert set(mtp.values()) == {"model-00003-of-00003.safetensors"}
    for name in ("fc.weight", "norm.weight", "pre_fc_norm_embedding.weight", "pre_fc_norm_hidden.weight"):
        assert f"mtp.{name}" in mtp
    # One decoder layer shaped like the main model's full-attention layer.
    tensors = _tensors(qwen35)
    def shapes(prefix: str) -> dict:
        return {k.removeprefix(prefix): v.shape for k, v in tensors.items() if k.startswith(prefix)}

    assert shapes("mtp.layers.0.") == shapes("model.language_model.layers.3.")
    assert tensors["mtp.fc.weight"].shape == (64, 128)


def test_qwen35_linear_key_heads_differ_from_value_heads(qwen35):
    text = json.loads((qwen35 / "config.json").read_text())["text_config"]
    k_heads, v_heads = text["linear_num_key_heads"], text["linear_num_value_heads"]
    assert (k_heads, v_heads) == (2, 4)
    tensors = _tensors(qwen35)
    prefix = "model.language_model.layers.0.linear_attn."
    key_dim, value_dim = k_heads * text["linear_key_head_dim"], v_heads * text["linear_value_head_dim"]
    assert tensors[prefix + "in_proj_qkv.weight"].shape == (2 * key_dim + value_dim, 64)
    assert tensors[prefix + "in_proj_b.weight"].shape == (v_heads, 64)
    assert tensors[prefix + "A_log"].shape == tensors[prefix + "dt_bias"].shape == (v_heads,)


def test_qwen35_norms_and_gates_are_random(qwen35):
    tensors = _tensors(qwen35)
    norms = [k for k in tensors if k.endswith(("norm.weight", "norm1.weight", "norm2.weight"))]
    assert len(norms) > 20
    for name in norms + [k for k in tensors if k.endswith(("A_log", "dt_bias"))]:
        values = tensors[name]
        assert not torch.all(values == 0) and not torch.all(values == 1), name
        assert values.std() > 0.05, name
    # Zero-centred RMSNorms (x * (1 + w)) straddle 0; the gated norm (x * w) sits around 1.
    assert tensors["model.language_model.norm.weight"].abs().mean() < 0.4
    assert tensors["model.language_model.layers.0.linear_attn.norm.weight"].min() > 0.4


def test_qwen35_is_deterministic(qwen35, tokenizer, tmp_path):
    again = build_tiny_qwen35(tmp_path / "again", tokenizer=tokenizer)
    assert _files(again) == _files(qwen35)
    other = build_tiny_qwen35(tmp_path / "other", tokenizer=tokenizer, seed=1)
    first = "model-00001-of-00003.safetensors"
    assert (other / first).read_bytes() != (qwen35 / first).read_bytes()


def test_builds_are_identical_in_another_process(qwen35, tmp_path):
    # Tokenizer training runs in Rust (with per-process hash seeds): compare across processes.
    out = tmp_path / "model"
    subprocess.run([sys.executable, "-c", _BUILD_IN_SUBPROCESS, str(out)], check=True, capture_output=True)
    assert _files(out) == _files(qwen35)


def test_building_leaves_the_global_random_state_alone(tokenizer, tmp_path):
    state = torch.get_rng_state()
    build_tiny_qwen35(tmp_path / "m", tokenizer=tokenizer, vision=False, mtp=False, num_shards=1)
    assert torch.equal(state, torch.get_rng_state())


def test_qwen35_loads_with_every_weight_from_the_files(qwen35, qwen35_model):
    model, info = qwen35_model
    # The mtp.* tensors match transformers' _keys_to_ignore_on_load_unexpected (r"^mtp.*"): they
    # are skipped without a report.
    assert not any(info.values()), info
    files = _tensors(qwen35)
    state = model.state_dict()
    assert set(state) == {k for k in files if not k.startswith("mtp.")}
    assert all(torch.equal(state[k], files[k]) for k in state)


def test_qwen35_forward_and_generate(qwen35_model, tokenizer):
    model, _ = qwen35_model
    inputs = tokenizer.apply_chat_template(
        CONVERSATION[:2], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], 3000)
    assert torch.isfinite(logits).all()
    assert logits.std() > 0.1  # the random weights give logits that differ by token
    generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert generated.shape == (1, inputs["input_ids"].shape[1] + 3)


def test_qwen35_loads_as_text_only_causal_lm(qwen35, qwen35_model):
    # AutoModelForCausalLM maps qwen3_5 to Qwen3_5ForCausalLM: model.language_model.* is renamed
    # to model.*, and model.visual.* and mtp.* are skipped.
    model, info = transformers.AutoModelForCausalLM.from_pretrained(qwen35, output_loading_info=True)
    assert type(model).__name__ == "Qwen3_5ForCausalLM"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ids = torch.tensor([[2994, 100, 200, 300]])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, qwen35_model[0](input_ids=ids).logits, atol=1e-5)


def test_qwen35_bfloat16_single_file_text_only(tokenizer, tmp_path):
    path = build_tiny_qwen35(tmp_path / "m", tokenizer=tokenizer, dtype="bfloat16", num_shards=1, vision=False)
    assert sorted(p.name for p in path.glob("model*")) == ["model.safetensors"]
    tensors = _tensors(path)
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    assert any(k.startswith("mtp.") for k in tensors) and not any(".visual." in k for k in tensors)
    config = json.loads((path / "config.json").read_text())
    assert (config["architectures"], config["dtype"]) == (["Qwen3_5ForCausalLM"], "bfloat16")
    model, info = transformers.AutoModelForCausalLM.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.tensor([[2994, 100, 200]])).logits).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"dtype": "float16"}, "dtype"), ({"num_shards": 0}, "num_shards"), ({"num_shards": 500}, "num_shards")],
)
def test_qwen35_rejects_bad_arguments(tokenizer, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_tiny_qwen35(tmp_path / "m", tokenizer=tokenizer, **kwargs)
    assert not (tmp_path / "m").exists()


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 1000), min_size=1, max_size=30),
    tail=st.integers(0, 5),
    data=st.data(),
)
def test_split_names_gives_contiguous_nonempty_shards(sizes, tail, data):
    names = [f"t{i}" for i in range(len(sizes))] + [f"mtp.{i}" for i in range(tail)]
    sizes = sizes + [7] * tail
    limit = len(names) - tail if tail else len(names)
    num_shards = data.draw(st.integers(1, limit))
    chunks = _split_names(names, sizes, num_shards, "mtp." if tail else None)
    assert len(chunks) == num_shards and all(chunks)
    assert [n for chunk in chunks for n in chunk] == names
    assert all(n in chunks[-1] for n in names if n.startswith("mtp."))


# --- tiny Qwen3 ---------------------------------------------------------------------------------


def test_qwen3_loads_and_runs(tokenizer, tmp_path):
    path = build_tiny_qwen3(tmp_path / "m", tokenizer=tokenizer)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == [f"model-0000{i}-of-00002.safetensors" for i in (1, 2)]
    files = _tensors(path)
    assert set(index["weight_map"]) == set(files)
    assert not any(torch.all(files[k] == 1) for k in files if k.endswith("norm.weight"))
    model, info = transformers.AutoModelForCausalLM.from_pretrained(path, output_loading_info=True)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert all(torch.equal(v, files[k]) for k, v in model.state_dict().items())
    inputs = tokenizer.apply_chat_template(
        CONVERSATION[1:2], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], 3000) and torch.isfinite(logits).all()
    assert model.generate(**inputs, max_new_tokens=3, do_sample=False).shape[1] == inputs["input_ids"].shape[1] + 3
    assert _files(build_tiny_qwen3(tmp_path / "again", tokenizer=tokenizer)) == _files(path)

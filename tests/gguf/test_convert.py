"""GGUF conversion of the tiny Qwen3 (and a tiny Qwen2), read back with gguf-py's own reader.

Q8_0 tolerance: llama.cpp's Q8_0 stores each block of 32 values as int8 ``q`` and one float16
scale ``d = max|x| / 127``, so ``|x - q*d| <= d/2`` plus the float16 rounding of ``d``
(``<= 127 * d * 2**-11``); the test allows one full step, ``|x - q*d| <= max|x| / 127`` per block.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")

from safetensors.torch import load_file

from apto_release.errors import InputError, UsageError
from apto_release.gguf import convert as convert_module
from apto_release.gguf.convert import convert, read_vocab
from apto_release.gguf.names import ARCHITECTURES, gguf_name
from apto_release.testing.models import QWEN3_CONFIG, build_tiny_qwen3

QUANTS = ("F16", "BF16", "Q8_0")

# HF name (after model.layers.N.) -> GGUF name (after blk.N.), written out by hand as llama.cpp names them.
QWEN3_BLOCK = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
GLOBAL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}


def hf_to_gguf(name: str) -> str:
    if name in GLOBAL:
        return GLOBAL[name]
    _, _, bid, rest = name.split(".", 3)
    return f"blk.{bid}.{QWEN3_BLOCK.get(rest) or {'self_attn.q_proj.bias': 'attn_q.bias', 'self_attn.k_proj.bias': 'attn_k.bias', 'self_attn.v_proj.bias': 'attn_v.bias'}[rest]}"


def checkpoint_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    out = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(shard))
    return out


def fields(reader) -> dict:
    return {k: f.contents() for k, f in reader.fields.items()}


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory) -> Path:
    return build_tiny_qwen3(tmp_path_factory.mktemp("ckpt") / "TinyQwen3")


@pytest.fixture(scope="module")
def converted(qwen3, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gguf")
    results = {q: convert(qwen3, out, quant=q, basename="TinyQwen3", finetune="safety") for q in QUANTS}
    return {q: (r, gguf.GGUFReader(r.path)) for q, r in results.items()}


def test_file_names_and_result(converted, qwen3):
    for quant, (result, _) in converted.items():
        assert result.path.name == f"TinyQwen3-{quant}.gguf"
        assert result.architecture == "qwen3" and result.tensors == len(checkpoint_tensors(qwen3))
        assert result.bytes == result.path.stat().st_size > 0
        assert result.seconds >= 0
        assert not [p for p in result.path.parent.iterdir() if p.name.startswith(".")]  # no temporary left


@pytest.mark.parametrize("quant", QUANTS)
def test_metadata(converted, quant):
    _, reader = converted[quant]
    kv = fields(reader)
    assert kv["general.architecture"] == "qwen3"
    assert kv["general.name"] == "TinyQwen3"
    assert kv["general.basename"] == "TinyQwen3" and kv["general.finetune"] == "safety"
    assert kv["general.size_label"]
    assert kv["general.file_type"] == {"F16": 1, "BF16": 32, "Q8_0": 7}[quant]
    assert kv["general.quantization_version"] == 2
    assert kv["qwen3.context_length"] == QWEN3_CONFIG["max_position_embeddings"]
    assert kv["qwen3.embedding_length"] == QWEN3_CONFIG["hidden_size"]
    assert kv["qwen3.block_count"] == QWEN3_CONFIG["num_hidden_layers"]
    assert kv["qwen3.feed_forward_length"] == QWEN3_CONFIG["intermediate_size"]
    assert kv["qwen3.attention.head_count"] == QWEN3_CONFIG["num_attention_heads"]
    assert kv["qwen3.attention.head_count_kv"] == QWEN3_CONFIG["num_key_value_heads"]
    assert kv["qwen3.attention.key_length"] == kv["qwen3.attention.value_length"] == QWEN3_CONFIG["head_dim"]
    assert kv["qwen3.rope.freq_base"] == pytest.approx(1_000_000.0)
    assert kv["qwen3.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)


def test_tokenizer_inside_the_file(converted, qwen3):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(qwen3)
    config = json.loads((qwen3 / "config.json").read_text())
    tokenizer_json = json.loads((qwen3 / "tokenizer.json").read_text())
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    for _, reader in converted.values():
        kv = fields(reader)
        assert kv["tokenizer.ggml.model"] == "gpt2"
        # The tiny tokenizer carries Qwen3.5's split regex (\p{M} kept with letters), llama.cpp's "qwen35".
        assert kv["tokenizer.ggml.pre"] == "qwen35"
        tokens = kv["tokenizer.ggml.tokens"]
        assert len(tokens) == config["vocab_size"] == len(tok)
        assert tokens == tok.convert_ids_to_tokens(list(range(len(tok))))
        assert len(kv["tokenizer.ggml.merges"]) == len(tokenizer_json["model"]["merges"])
        assert kv["tokenizer.ggml.merges"][0] == " ".join(tokenizer_json["model"]["merges"][0])
        assert kv["tokenizer.ggml.eos_token_id"] == kv["tokenizer.ggml.eot_token_id"] == im_end
        assert kv["tokenizer.ggml.padding_token_id"] == tok.pad_token_id
        assert kv["tokenizer.ggml.add_bos_token"] is False
        assert kv["tokenizer.chat_template"] == tok.chat_template
        types = kv["tokenizer.ggml.token_type"]
        for added in tokenizer_json["added_tokens"]:
            assert types[added["id"]] == (gguf.TokenType.CONTROL if added["special"] else gguf.TokenType.USER_DEFINED)
        assert types[0] == gguf.TokenType.NORMAL


def test_pre_tokenizer_qwen2_regex(qwen3, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(qwen3, model)
    path = model / "tokenizer.json"
    text = path.read_text().replace(r"[\\p{L}\\p{M}]+", r"\\p{L}+").replace(r"[^\\s\\p{L}\\p{M}\\p{N}]", r"[^\\s\\p{L}\\p{N}]")
    path.write_text(text)
    assert read_vocab(model, 3000).pre == "qwen2"
    path.write_text(text.replace(r"\\p{N}|", r"\\p{N}{1,3}|"))
    with pytest.raises(InputError, match="pre-tokenizer"):
        read_vocab(model, 3000)
    assert read_vocab(model, 3000, pre="qwen2").pre == "qwen2"


@pytest.mark.parametrize("quant", QUANTS)
def test_every_tensor_named_and_shaped(converted, qwen3, quant):
    _, reader = converted[quant]
    source = checkpoint_tensors(qwen3)
    got = {t.name: t for t in reader.tensors}
    assert set(got) == {hf_to_gguf(n) for n in source}
    for hf, value in source.items():
        t = got[hf_to_gguf(hf)]
        # GGUFReader reports ggml's ne order (innermost first): the torch shape reversed.
        assert tuple(int(d) for d in t.shape) == tuple(reversed(value.shape)), hf
        if value.dim() == 1:
            assert t.tensor_type == gguf.GGMLQuantizationType.F32
        else:
            assert t.tensor_type == getattr(gguf.GGMLQuantizationType, quant)


def test_values(converted, qwen3):
    source = checkpoint_tensors(qwen3)
    tensors = {q: {t.name: t for t in reader.tensors} for q, (_, reader) in converted.items()}
    for hf, value in source.items():
        name = hf_to_gguf(hf)
        f16 = tensors["F16"][name]
        if value.dim() == 1:
            for q in QUANTS:
                np.testing.assert_array_equal(tensors[q][name].data, value.float().numpy())
            continue
        np.testing.assert_array_equal(np.asarray(f16.data), value.to(torch.float16).numpy())
        bf16 = gguf.quants.dequantize(tensors["BF16"][name].data, gguf.GGMLQuantizationType.BF16)
        np.testing.assert_array_equal(bf16, value.to(torch.bfloat16).float().numpy())
        q8 = gguf.quants.dequantize(tensors["Q8_0"][name].data, gguf.GGMLQuantizationType.Q8_0)
        assert q8.shape == tuple(value.shape)
        x = value.float().numpy().reshape(-1, 32)
        err = np.abs(q8.reshape(-1, 32) - x)
        step = np.abs(x).max(axis=1, keepdims=True) / 127
        assert (err <= step + 1e-12).all(), hf
        assert err.max() > 0  # it was quantized


def test_unsupported_architecture_leaves_no_file(qwen3, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(qwen3, model)
    config = json.loads((model / "config.json").read_text())
    config["architectures"] = ["LlamaForCausalLM"]
    (model / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    with pytest.raises(UsageError, match="LlamaForCausalLM"):
        convert(model, out)
    assert not out.exists() or not list(out.iterdir())


def test_truncated_shard_leaves_no_file(qwen3, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(qwen3, model)
    shard = max(model.glob("*.safetensors"))
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 1000])
    out = tmp_path / "out"
    with pytest.raises(InputError, match="truncated"):
        convert(model, out)
    assert not out.exists() or not list(out.iterdir())


def test_failure_while_writing_data_leaves_no_file(qwen3, tmp_path, monkeypatch):
    real = convert_module._convert_tensor
    calls = []

    def failing(tensor, qtype):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("disk full")
        return real(tensor, qtype)

    monkeypatch.setattr(convert_module, "_convert_tensor", failing)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        convert(qwen3, out, quant="Q8_0")
    assert list(out.iterdir()) == []


def test_unknown_tensor_name_is_named():
    arch = ARCHITECTURES["Qwen3ForCausalLM"]
    assert gguf_name(arch, "model.layers.1.self_attn.k_norm.weight", block_count=2).gguf_name == "blk.1.attn_k_norm.weight"
    with pytest.raises(InputError, match="model.layers.0.mlp.experts.0.up_proj.weight"):
        gguf_name(arch, "model.layers.0.mlp.experts.0.up_proj.weight", block_count=2)
    with pytest.raises(InputError, match="block 5"):
        gguf_name(arch, "model.layers.5.mlp.up_proj.weight", block_count=2)


def test_options_are_checked(qwen3, tmp_path):
    with pytest.raises(UsageError, match="Q4_K"):
        convert(qwen3, tmp_path, quant="Q4_K")
    with pytest.raises(UsageError, match="file name"):
        convert(qwen3, tmp_path, name="../x")
    convert(qwen3, tmp_path, name="M")
    with pytest.raises(UsageError, match="exists"):
        convert(qwen3, tmp_path, name="M")


def test_qwen2(qwen3, tmp_path):
    """A tiny Qwen2ForCausalLM (attention biases, no QK norm) with the same tokenizer."""
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2ForCausalLM

    model_dir = tmp_path / "TinyQwen2"
    model_dir.mkdir()
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(qwen3 / f, model_dir / f)
    config = Qwen2Config(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=3000, max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    config.architectures = ["Qwen2ForCausalLM"]
    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in Qwen2ForCausalLM(config).state_dict().items()}
    save_file(state, model_dir / "model.safetensors")
    config.to_json_file(model_dir / "config.json")

    result = convert(model_dir, tmp_path / "out", quant="F16")
    reader = gguf.GGUFReader(result.path)
    kv = fields(reader)
    assert kv["general.architecture"] == "qwen2" and result.path.name == "TinyQwen2-F16.gguf"
    assert kv["qwen2.attention.key_length"] == 16 and kv["qwen2.rope.freq_base"] == pytest.approx(10000.0)
    assert kv["qwen2.context_length"] == 2048
    got = {t.name: t for t in reader.tensors}
    assert set(got) == {hf_to_gguf(n) for n in state}
    bias = got["blk.1.attn_k.bias"]
    assert bias.tensor_type == gguf.GGMLQuantizationType.F32
    np.testing.assert_array_equal(bias.data, state["model.layers.1.self_attn.k_proj.bias"].numpy())
    np.testing.assert_array_equal(got["blk.0.attn_q.weight"].data, state["model.layers.0.self_attn.q_proj.weight"].half().numpy())


def test_general_metadata_from_the_card_and_options(qwen3, tmp_path):
    """base model, tags, languages, datasets and licence come from the model card unless given."""
    model = tmp_path / "model"
    shutil.copytree(qwen3, model)
    (model / "README.md").write_text(
        "---\nlicense: apache-2.0\nbase_model: Qwen/Qwen3-8B\ntags: [safety, japanese]\nlanguage: [ja, en]\n"
        "datasets: [apto-ai/ja-safety-sft-500]\n---\n# card\n",
        "utf-8",
    )
    reader = gguf.GGUFReader(convert(model, tmp_path / "a", quant="F16", name="M", quantized_by="apto-release").path)

    def value(key):
        return reader.fields[key].contents()

    assert value("general.license") == "apache-2.0"
    assert value("general.base_model.count") == 1
    assert value("general.base_model.0.name") == "Qwen3-8B"
    assert value("general.base_model.0.organization") == "Qwen"
    assert value("general.base_model.0.repo_url") == "https://huggingface.co/Qwen/Qwen3-8B"
    assert value("general.tags") == ["safety", "japanese"]
    assert value("general.languages") == ["ja", "en"]
    assert value("general.dataset.0.repo_url") == "https://huggingface.co/datasets/apto-ai/ja-safety-sft-500"
    assert value("general.quantized_by") == "apto-release"

    options = gguf.GGUFReader(convert(model, tmp_path / "b", quant="F16", name="M", license="mit", base_model=["a/b", "c/d"], tags=[]).path)
    assert options.fields["general.license"].contents() == "mit"
    assert options.fields["general.base_model.count"].contents() == 2
    assert "general.tags" not in options.fields

    (model / "README.md").write_text("---\nlicense: [unclosed\n---\n", "utf-8")
    with pytest.raises(InputError, match="YAML"):
        convert(model, tmp_path / "c", quant="F16", name="M")
    assert not (tmp_path / "c").exists() or list((tmp_path / "c").iterdir()) == []


@pytest.mark.parametrize("quant", QUANTS)
def test_conversion_in_blocks_of_rows_is_bit_identical(qwen3, tmp_path, monkeypatch, quant):
    """Large tensors are converted a block of rows at a time (bounded memory): the bytes do not change."""
    whole = convert(qwen3, tmp_path / "whole", quant=quant, name="M").path.read_bytes()
    monkeypatch.setattr(convert_module, "BLOCK_BYTES", 3 * 64 * 4)  # 3 rows of 64 float32 values
    blocks = convert(qwen3, tmp_path / "blocks", quant=quant, name="M").path.read_bytes()
    assert blocks == whole


def test_on_bytes_counts_the_tensor_data_written(qwen3, tmp_path):
    calls = []
    result = convert(qwen3, tmp_path, quant="Q8_0", name="M", on_bytes=lambda done, total: calls.append((done, total)))
    total = sum(int(t.n_bytes) for t in gguf.GGUFReader(result.path).tensors)
    assert len(calls) == result.tensors and {t for _, t in calls} == {total}
    assert [d for d, _ in calls] == sorted({d for d, _ in calls}) and calls[-1] == (total, total)

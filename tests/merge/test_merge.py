"""merge: exact parity with peft's merge_and_unload, byte-identical copies, clear refusals, atomic output."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from apto_release.errors import InputError, UsageError
from apto_release.merge.merge import PAUSE_ENV, MergeError, merge, plan_merge
from apto_release.merge.shards import INDEX_NAME, read_header
from apto_release.testing import build_japanese_tokenizer, build_tiny_qwen35

ROOT = Path(__file__).resolve().parents[2]

# Every Linear of the text model: gated full attention, SwiGLU MLP and Gated DeltaNet projections
# (transformers/models/qwen3_5/modeling_qwen3_5.py). None of these names occurs in the vision tower
# (qkv, proj, linear_fc1/2), and transformers does not build the mtp.* head, so both stay untouched.
TEXT_TARGETS = [
    "q_proj", "k_proj", "v_proj", "o_proj",
    "gate_proj", "up_proj", "down_proj",
    "in_proj_qkv", "in_proj_z", "in_proj_a", "in_proj_b", "out_proj",
]
CHAT = "<|im_start|>user\n日本の首都はどこですか？<|im_end|>\n<|im_start|>assistant\n東京です。<|im_end|>\n"


# ---------------------------------------------------------------------------------------------
# Builders (also used by tests/cli/test_merge_cli.py)


def make_adapter(base: Path, out: Path, *, seed: int = 0, perturb_saved: bool = False, **lora_kwargs):
    """Train nothing: a random (init_lora_weights=False, so B != 0) LoRA on ``base``, saved to ``out``.

    Returns ``(out, merged_state_dict, merged_model)`` from peft's own merge_and_unload.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
    torch.manual_seed(seed)
    config = LoraConfig(init_lora_weights=False, target_modules=lora_kwargs.pop("target_modules", TEXT_TARGETS), **lora_kwargs)
    peft_model = get_peft_model(model, config)
    if perturb_saved:  # a modules_to_save copy starts equal to the base; make the replacement visible
        for name, param in peft_model.named_parameters():
            if ".modules_to_save." in name:
                with torch.no_grad():
                    param.add_(torch.randn_like(param) * 0.05)
    peft_model.save_pretrained(out)
    merged = peft_model.merge_and_unload()
    return out, {k: v.detach().clone() for k, v in merged.state_dict().items()}, merged


def chat_ids(base: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base)(CHAT, return_tensors="pt")["input_ids"]


def logits_of(model_or_path, ids):
    from transformers import AutoModelForImageTextToText

    model = model_or_path
    if isinstance(model_or_path, (str, Path)):
        model = AutoModelForImageTextToText.from_pretrained(model_or_path, dtype=torch.float32)
    with torch.no_grad():
        return model(input_ids=ids).logits


def raw_tensor_bytes(folder: Path) -> dict[str, bytes]:
    """Every tensor's stored bytes, straight from the files (no dtype conversion)."""
    index = json.loads((folder / INDEX_NAME).read_text())["weight_map"] if (folder / INDEX_NAME).exists() else None
    shards = sorted(set(index.values())) if index else ["model.safetensors"]
    out = {}
    for shard in shards:
        header = read_header(folder / shard)
        data = (folder / shard).read_bytes()
        for info in header.tensors.values():
            out[info.name] = data[header.data_start + info.begin : header.data_start + info.end]
    return out


def copy_folder(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=2))


def assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*")), "a temporary folder was left behind"


# ---------------------------------------------------------------------------------------------
# Fixtures: one tokenizer, one float32 base, two adapters, their merges


@pytest.fixture(scope="module")
def tok():
    return build_japanese_tokenizer()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("merge")


@pytest.fixture(scope="module")
def base(work, tok):
    return build_tiny_qwen35(work / "base", tokenizer=tok)


@pytest.fixture(scope="module")
def plain(work, base):
    """An ordinary LoRA (r 4, alpha 8) on every text Linear, and peft's merge of it."""
    adapter, reference, model = make_adapter(base, work / "adapter", r=4, lora_alpha=8)
    ids = chat_ids(base)
    out = work / "merged"
    result = merge(base, adapter, out)
    return {"adapter": adapter, "reference": reference, "logits": logits_of(model, ids), "ids": ids, "out": out, "result": result}


@pytest.fixture(scope="module")
def patterned(work, base):
    """rsLoRA with rank_pattern and alpha_pattern, plus a modules_to_save copy of lm_head."""
    adapter, reference, model = make_adapter(
        base, work / "adapter-patterns", seed=1, r=4, lora_alpha=16, use_rslora=True,
        rank_pattern={"q_proj": 8, r"layers\.1\.linear_attn\.in_proj_qkv": 2},
        alpha_pattern={"down_proj": 4, "out_proj": 32},
        modules_to_save=["lm_head"], perturb_saved=True,
    )
    ids = chat_ids(base)
    out = work / "merged-patterns"
    return {"adapter": adapter, "reference": reference, "logits": logits_of(model, ids), "ids": ids, "out": out, "result": merge(base, adapter, out)}


# ---------------------------------------------------------------------------------------------
# Parity and bytes


def test_adapter_keys_are_what_peft_writes(plain):
    with safe_open(plain["adapter"] / "adapter_model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "base_model.model.model.language_model.layers.3.self_attn.q_proj.lora_A.weight" in keys
    assert "base_model.model.model.language_model.layers.0.linear_attn.in_proj_qkv.lora_B.weight" in keys
    assert not any("visual" in k or "mtp" in k for k in keys)
    # init_lora_weights=False: B is random, so the merge is not a no-op
    assert float(load_file(plain["adapter"] / "adapter_model.safetensors")["base_model.model.model.language_model.layers.3.mlp.up_proj.lora_B.weight"].abs().max()) > 0


def test_plain_adapter_logits_equal_merge_and_unload(plain, base):
    merged = logits_of(plain["out"], plain["ids"])
    assert (merged - plain["logits"]).abs().max() <= 1e-5
    assert (logits_of(base, plain["ids"]) - plain["logits"]).abs().max() > 1e-3  # the adapter changes the model


def test_plain_adapter_tensors_equal_merge_and_unload(plain):
    files = {}
    for shard in sorted(plain["out"].glob("*.safetensors")):
        files.update(load_file(shard))
    for name, expected in plain["reference"].items():
        assert torch.equal(files[name], expected), name  # same float32 operations as peft: bit for bit


def test_patterns_rslora_and_modules_to_save_equal_merge_and_unload(patterned, base):
    plan = plan_merge(base, patterned["adapter"])
    q = plan.updates["model.language_model.layers.3.self_attn.q_proj.weight"]
    assert (q.rank, q.alpha, q.scale) == (8, 16, pytest.approx(16 / 8**0.5))
    qkv1 = plan.updates["model.language_model.layers.1.linear_attn.in_proj_qkv.weight"]
    qkv0 = plan.updates["model.language_model.layers.0.linear_attn.in_proj_qkv.weight"]
    assert (qkv1.rank, qkv0.rank) == (2, 4)
    assert plan.updates["model.language_model.layers.0.mlp.down_proj.weight"].scale == pytest.approx(4 / 2)
    assert plan.updates["model.language_model.layers.0.linear_attn.out_proj.weight"].scale == pytest.approx(32 / 2)
    assert plan.updates["lm_head.weight"].kind == "replace"
    merged = logits_of(patterned["out"], patterned["ids"])
    assert (merged - patterned["logits"]).abs().max() <= 1e-5
    files = {}
    for shard in sorted(patterned["out"].glob("*.safetensors")):
        files.update(load_file(shard))
    for name, expected in patterned["reference"].items():
        assert torch.equal(files[name], expected), name


def test_untouched_tensors_are_byte_identical(plain, base):
    before, after = raw_tensor_bytes(base), raw_tensor_bytes(plain["out"])
    assert before.keys() == after.keys()
    changed = {n for n in before if before[n] != after[n]}
    plan = plan_merge(base, plain["adapter"])
    assert changed == set(plan.updates)  # every merged tensor changed, nothing else did
    assert any(n.startswith("model.visual.") for n in before) and any(n.startswith("mtp.") for n in before)
    assert not any(n.startswith(("model.visual.", "mtp.", "model.language_model.embed_tokens")) for n in changed)
    # shards without a targeted tensor are plain copies (here: the vision/embedding shard and the mtp shard)
    copies = [s.name for s in plan.shards if s.action == "copy"]
    assert len(copies) == 2
    for name in copies:
        assert (plain["out"] / name).read_bytes() == (base / name).read_bytes()
    merged_shard = next(s.name for s in plan.shards if s.action == "merge")
    assert read_header(plain["out"] / merged_shard).tensors == read_header(base / merged_shard).tensors


def test_index_and_files(plain, base):
    out = plain["out"]
    index, base_index = json.loads((out / INDEX_NAME).read_text()), json.loads((base / INDEX_NAME).read_text())
    assert index["weight_map"] == base_index["weight_map"]
    assert list(index["weight_map"]) == list(base_index["weight_map"])
    assert index["metadata"]["total_size"] == base_index["metadata"]["total_size"]
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        assert (out / name).read_bytes() == (base / name).read_bytes(), name
    im_end = json.loads((base / "tokenizer.json").read_text())
    im_end = next(t["id"] for t in im_end["added_tokens"] if t["content"] == "<|im_end|>")
    assert im_end in json.loads((out / "generation_config.json").read_text())["eos_token_id"]
    result = plain["result"]
    assert (result.shards_written, result.shards_merged) == (3, 1)
    assert result.tensors_merged == 4 * 3 + 4 + 3 * 5  # MLP in every layer, attention in one, DeltaNet in three
    assert result.tensors_merged + result.tensors_copied == len(base_index["weight_map"])
    assert result.bytes_written == sum(p.stat().st_size for p in out.iterdir())
    assert not list(out.glob(".*"))  # no owner file or other hidden leftovers


def test_eos_gets_im_end_when_the_base_lacks_it(work, base, plain):
    from transformers import AutoTokenizer, GenerationConfig

    lacking = copy_folder(base, work / "base-no-im-end")
    gen = json.loads((lacking / "generation_config.json").read_text())
    endoftext = gen["pad_token_id"]
    edit_json(lacking / "generation_config.json", eos_token_id=endoftext)
    edit_json(lacking / "tokenizer_config.json", eos_token="<|endoftext|>")
    plan = plan_merge(lacking, plain["adapter"], force=True)
    edits = {f.name: f.note for f in plan.files if f.action == "edit"}
    assert set(edits) == {"generation_config.json", "tokenizer_config.json"}
    out = work / "merged-eos"
    merge(lacking, plain["adapter"], out, force=True)
    tokenizer = AutoTokenizer.from_pretrained(out)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert GenerationConfig.from_pretrained(out).eos_token_id == [endoftext, im_end]
    assert tokenizer.eos_token == "<|im_end|>"
    assert raw_tensor_bytes(out) == raw_tensor_bytes(plain["out"])


def test_merging_in_row_blocks_gives_the_same_bytes(work, base, plain, monkeypatch):
    import apto_release.merge.merge as merge_module

    assert merge_module._row_blocks(100, 4) == [(0, 100)]
    monkeypatch.setattr(merge_module, "MERGE_BLOCK_BYTES", 64 * 256)  # 64 rows of 64 float32
    assert merge_module._row_blocks(200, 256) == [(0, 64), (64, 128), (128, 200)]  # no thin last block
    assert merge_module._row_blocks(4, 256) == [(0, 4)]
    out = work / "merged-blocks"
    merge(base, plain["adapter"], out)
    assert raw_tensor_bytes(out) == raw_tensor_bytes(plain["out"])


@pytest.mark.filterwarnings("ignore:Adapter .default.*invalid shape")  # peft mistakes lora_B.bias for a ZeRO-3 shard
def test_lora_bias_on_the_vision_tower_equals_merge_and_unload(work, base):
    # The text Linears have no bias; the vision tower's qkv has one (peft's lora_bias=True adds
    # scale * lora_B.bias to it on merge).
    adapter, reference, _ = make_adapter(base, work / "adapter-bias", seed=4, r=2, lora_alpha=6, lora_bias=True, target_modules=["qkv"])
    plan = plan_merge(base, adapter)
    assert {u.kind for u in plan.updates.values()} == {"lora", "lora_bias"}
    assert "model.visual.blocks.0.attn.qkv.bias" in plan.updates
    out = work / "merged-bias"
    merge(base, adapter, out)
    files = {}
    for shard in sorted(out.glob("*.safetensors")):
        files.update(load_file(shard))
    for name, expected in reference.items():
        assert torch.equal(files[name], expected), name


def test_fan_in_fan_out_weights_get_the_transposed_delta(tmp_path):
    # GPT-2's Conv1D stores (in, out) and peft saves fan_in_fan_out=True for it; no Qwen layer
    # does, so a hand-made checkpoint stands in.
    base, adapter = tmp_path / "base", tmp_path / "adapter"
    base.mkdir(), adapter.mkdir()
    weight = torch.randn(6, 6)  # square: only the flag can tell the orientation
    save_file({"h.0.attn.c_attn.weight": weight, "h.0.attn.c_attn.bias": torch.zeros(6)}, base / "model.safetensors")
    (base / "config.json").write_text("{}")
    a, b = torch.randn(2, 6), torch.randn(6, 2)
    save_file({"base_model.model.h.0.attn.c_attn.lora_A.weight": a, "base_model.model.h.0.attn.c_attn.lora_B.weight": b}, adapter / "adapter_model.safetensors")
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "fan_in_fan_out": True}))
    result = merge(base, adapter, tmp_path / "out")
    assert (result.shards_written, result.tensors_merged) == (1, 1)
    merged = load_file(tmp_path / "out" / "model.safetensors")
    assert torch.equal(merged["h.0.attn.c_attn.weight"], weight + (b @ a).T * 2.0)
    assert not (tmp_path / "out" / INDEX_NAME).exists()  # a single-file base gives a single-file merge


# ---------------------------------------------------------------------------------------------
# Key layouts


def _rename_checkpoint(src: Path, dst: Path, old: str, new: str) -> Path:
    """Copy a checkpoint with every tensor name starting ``old`` renamed to start ``new``."""
    copy_folder(src, dst)
    index = json.loads((dst / INDEX_NAME).read_text())
    for shard in set(index["weight_map"].values()):
        tensors = load_file(dst / shard)
        save_file({(new + k[len(old):] if k.startswith(old) else k): v for k, v in tensors.items()}, dst / shard, metadata={"format": "pt"})
    index["weight_map"] = {(new + k[len(old):] if k.startswith(old) else k): v for k, v in index["weight_map"].items()}
    (dst / INDEX_NAME).write_text(json.dumps(index, indent=2))
    return dst


def test_adapter_for_language_model_layout_into_model_layers_checkpoint(work, base, plain):
    text_only = _rename_checkpoint(base, work / "base-model-layers", "model.language_model.", "model.")
    plan = plan_merge(text_only, plain["adapter"], force=True)
    assert "model.layers.3.self_attn.q_proj.weight" in plan.updates
    assert "→ 'model.layers." in plan.layout
    out = work / "merged-model-layers"
    merge(text_only, plain["adapter"], out, force=True)
    renamed = {("model.language_model." + k[len("model."):] if k.startswith("model.") and not k.startswith("model.visual.") else k): v for k, v in raw_tensor_bytes(out).items()}
    assert renamed == raw_tensor_bytes(plain["out"])


def test_adapter_for_model_layers_layout_into_language_model_checkpoint(work, base, plain):
    adapter = copy_folder(plain["adapter"], work / "adapter-model-layers")
    tensors = load_file(adapter / "adapter_model.safetensors")
    prefix = "base_model.model.model.language_model."
    save_file({("base_model.model.model." + k[len(prefix):] if k.startswith(prefix) else k): v for k, v in tensors.items()}, adapter / "adapter_model.safetensors")
    out = work / "merged-from-text-only-adapter"
    merge(base, adapter, out)
    assert raw_tensor_bytes(out) == raw_tensor_bytes(plain["out"])


# ---------------------------------------------------------------------------------------------
# bf16


def test_bf16_base_is_merged_in_float32_and_stored_bf16(work, tok):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    base16 = build_tiny_qwen35(work / "base-bf16", tokenizer=tok, dtype="bfloat16", seed=3)
    model = AutoModelForImageTextToText.from_pretrained(base16, dtype=torch.bfloat16)
    torch.manual_seed(2)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, target_modules=TEXT_TARGETS))
    peft_model.save_pretrained(work / "adapter-bf16")
    out = work / "merged-bf16"
    result = merge(base16, work / "adapter-bf16", out)
    assert result.tensors_merged == 31
    adapter = load_file(work / "adapter-bf16" / "adapter_model.safetensors")
    before, after = raw_tensor_bytes(base16), raw_tensor_bytes(out)
    merged = {}
    for shard in sorted(out.glob("*.safetensors")):
        assert {i.dtype for i in read_header(shard).tensors.values()} == {"BF16"}
        merged.update(load_file(shard))
    base_tensors = {}
    for shard in sorted(base16.glob("*.safetensors")):
        base_tensors.update(load_file(shard))
    for name, value in merged.items():
        module = name.removesuffix(".weight")
        a_key = f"base_model.model.{module}.lora_A.weight"
        if a_key not in adapter:
            assert after[name] == before[name], name
            continue
        a, b = adapter[a_key].float(), adapter[f"base_model.model.{module}.lora_B.weight"].float()
        expected = (base_tensors[name].float() + (b @ a) * (8 / 4)).to(torch.bfloat16)  # one rounding, from float32
        assert torch.equal(value, expected), name
    # and equal to peft's own merge of these float32 adapter weights into the bf16 model, which
    # also adds in float32 and rounds once
    reference = peft_model.merge_and_unload().state_dict()
    for name, value in reference.items():
        assert torch.equal(merged[name], value), name


# ---------------------------------------------------------------------------------------------
# Refusals: each names the file and key, and writes nothing


def _adapter_variant(plain, work: Path, name: str, *, config: dict | None = None, tensors=None) -> Path:
    adapter = copy_folder(plain["adapter"], work / name)
    if config:
        edit_json(adapter / "adapter_config.json", **config)
    if tensors:
        state = load_file(adapter / "adapter_model.safetensors")
        tensors(state)
        save_file(state, adapter / "adapter_model.safetensors")
    return adapter


def test_refuses_adapter_for_another_base_by_name_unless_forced(work, base, plain):
    adapter = _adapter_variant(plain, work, "adapter-other-name", config={"base_model_name_or_path": "Qwen/Qwen3.5-27B"})
    out = work / "out-other-name"
    with pytest.raises(MergeError) as info:
        merge(base, adapter, out)
    assert "trained on 'Qwen/Qwen3.5-27B'" in str(info.value) and "adapter_config.json" in str(info.value)
    assert "--force" in info.value.hint
    assert_nothing_written(out)
    result = merge(base, adapter, out, force=True)
    assert any("Qwen/Qwen3.5-27B" in w for w in result.warnings)
    assert raw_tensor_bytes(out) == raw_tensor_bytes(plain["out"])


def test_refuses_missing_target_keys(work, base, plain):
    def move_to_layer_9(state):
        for key in [k for k in state if ".layers.3.self_attn." in k]:
            state[key.replace(".layers.3.", ".layers.9.")] = state.pop(key)

    adapter = _adapter_variant(plain, work, "adapter-missing", tensors=move_to_layer_9)
    out = work / "out-missing"
    with pytest.raises(MergeError) as info:
        merge(base, adapter, out)
    message = str(info.value)
    assert "adapter_model.safetensors" in message and "layers.9.self_attn" in message and "no 'model.language_model.layers.9." in message
    assert "and 3 more" in message  # q, k, v and o
    assert_nothing_written(out)


def test_refuses_shape_mismatch(work, base, plain):
    def widen(state):
        key = "base_model.model.model.language_model.layers.0.mlp.up_proj.lora_B.weight"
        state[key] = torch.randn(state[key].shape[0] * 2, state[key].shape[1])

    adapter = _adapter_variant(plain, work, "adapter-shape", tensors=widen)
    with pytest.raises(MergeError, match=r"'model.language_model.layers.0.mlp.up_proj.weight' is \[128, 64\] in the base, but the adapter's delta for it is \[256, 64\]"):
        plan_merge(base, adapter)


def test_refuses_lora_bias_where_the_base_has_none(work, base, plain):
    def add_bias(state):
        state["base_model.model.model.language_model.layers.0.mlp.up_proj.lora_B.bias"] = torch.zeros(128)

    adapter = _adapter_variant(plain, work, "adapter-lora-bias", tensors=add_bias)
    with pytest.raises(MergeError, match=r"LoRA bias for 'model.language_model.layers.0.mlp.up_proj', but the base layer has no bias"):
        plan_merge(base, adapter)


def test_refuses_rank_that_contradicts_the_config(work, base, plain):
    adapter = _adapter_variant(plain, work, "adapter-rank", config={"rank_pattern": {"gate_proj": 16}})
    with pytest.raises(MergeError, match=r"gives rank 16 .* but lora_A has rank 4"):
        plan_merge(base, adapter)


@pytest.mark.parametrize(
    "quantization, shown",
    [
        ({"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}, "bitsandbytes 4-bit"),
        ({"quant_method": "bitsandbytes", "load_in_8bit": True}, "bitsandbytes 8-bit"),
    ],
)
def test_refuses_quantized_base(work, base, plain, quantization, shown):
    quantized = work / f"base-{shown.replace(' ', '-')}"
    if not quantized.exists():
        copy_folder(base, quantized)
        edit_json(quantized / "config.json", quantization_config=quantization)
    out = work / f"out-{shown.replace(' ', '-')}"
    with pytest.raises(MergeError) as info:
        merge(quantized, plain["adapter"], out, force=True)
    assert f"quantized ({shown}" in str(info.value) and "config.json" in str(info.value)
    assert_nothing_written(out)


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"use_dora": True}, "DoRA (use_dora)"),
        ({"peft_type": "IA3"}, "cannot merge a IA3 adapter"),
        ({"init_lora_weights": "pissa"}, "init_lora_weights='pissa'"),
    ],
)
def test_refuses_adapter_types_it_cannot_merge(work, base, plain, config, expected):
    adapter = _adapter_variant(plain, work, f"adapter-{next(iter(config.values()))}", config=config)
    out = work / f"out-{next(iter(config.values()))}"
    with pytest.raises(MergeError) as info:
        merge(base, adapter, out)
    assert expected in str(info.value) and "adapter_config.json" in str(info.value)
    assert_nothing_written(out)


def test_refuses_truncated_and_corrupted_shards(work, base, plain):
    broken = copy_folder(base, work / "base-truncated")
    shard = broken / "model-00003-of-00003.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[:-100])
    out = work / "out-truncated"
    with pytest.raises(InputError) as info:
        merge(broken, plain["adapter"], out, force=True)
    assert "model-00003-of-00003.safetensors" in str(info.value) and "truncated" in str(info.value)
    assert info.value.exit_code == 2
    shard.write_bytes(data[:8] + b"#" * 16 + data[24:])
    with pytest.raises(InputError, match="header is not valid JSON"):
        merge(broken, plain["adapter"], out, force=True)
    assert_nothing_written(out)


def test_refuses_non_finite_result_and_writes_nothing(work, base, plain):
    def poison(state):
        state["base_model.model.model.language_model.layers.2.mlp.down_proj.lora_B.weight"][0, 0] = float("inf")

    adapter = _adapter_variant(plain, work, "adapter-inf", tensors=poison)
    out = work / "out-inf"
    with pytest.raises(MergeError) as info:
        merge(base, adapter, out)
    assert "non-finite" in str(info.value) and "'model.language_model.layers.2.mlp.down_proj.weight'" in str(info.value)
    assert "lora_B" in str(info.value)
    assert_nothing_written(out)


def test_refuses_existing_output(work, base, plain):
    with pytest.raises(UsageError, match="already exists"):
        merge(base, plain["adapter"], plain["out"])


# ---------------------------------------------------------------------------------------------
# Atomic output: a merge killed part-way leaves nothing that looks finished, and a rerun succeeds


def test_killed_merge_leaves_no_output_and_rerun_matches(work, base, plain):
    out = work / "merged-killed"
    script = f"from apto_release.merge.merge import merge; merge({str(base)!r}, {str(plain['adapter'])!r}, {str(out)!r})"
    env = dict(os.environ, **{PAUSE_ENV: "60"}, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not list(work.glob(f".{out.name}.*.tmp/*.safetensors")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the merge never wrote a shard"
            time.sleep(0.05)
        time.sleep(0.2)  # inside the pause after the first shard
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    assert len(list(work.glob(f".{out.name}.*.tmp"))) == 1  # the killed process's temporary folder
    result = merge(base, plain["adapter"], out)
    assert result.stale_removed == 1
    assert not list(work.glob(f".{out.name}.*"))
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in plain["out"].iterdir())
    for path in out.iterdir():
        assert path.read_bytes() == (plain["out"] / path.name).read_bytes(), path.name

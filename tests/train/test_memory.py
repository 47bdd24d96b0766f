"""The per-GPU memory estimate (train.memory): its parts against hand-computed figures, the real
models' parameter counts against transformers and PEFT, the dry run's table and warning, the
README's table, and the GPU benchmark's CPU smoke mode."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from apto_release.cli import main
from apto_release.testing import build_japanese_tokenizer
from apto_release.testing.models import QWEN35_TEXT_CONFIG
from apto_release.train.memory import (
    ALLOWANCE,
    GIB,
    KNOWN_SHAPES,
    ModelShape,
    estimate_memory,
    known_shape,
    parse_gpu_memory,
    readme_table,
    resolve_shape,
)
from apto_release.train.presets import KNOWN_TARGETS, load_preset
from tests.conftest import make_records, write_jsonl

ROOT = Path(__file__).resolve().parents[2]

#: A shape small enough to count by hand: 3 Gated DeltaNet layers then 1 gated attention layer.
SMALL = {
    "hidden_size": 8, "intermediate_size": 16, "vocab_size": 100, "num_hidden_layers": 4,
    "layer_types": ["linear_attention"] * 3 + ["full_attention"],
    "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
    "linear_num_key_heads": 1, "linear_num_value_heads": 2, "linear_key_head_dim": 4, "linear_value_head_dim": 4,
    "linear_conv_kernel_dim": 4, "tie_word_embeddings": False,
}


def small_shape() -> ModelShape:
    return ModelShape.from_config(SMALL, name="small", source="test")


def small_config(**overrides):
    return load_preset("tiny", {"lora.r": 2, "data.max_length": 16, "train.precision": "bf16",
                                "train.gradient_checkpointing": True, **overrides})


def test_parameters_and_lora_of_a_small_shape_by_hand():
    shape = small_shape()
    # Full attention: q_proj 8->16 (queries + output gate) 128, k 32, v 32, o 64, MLP 3*8*16 384,
    # two norms 16, q/k norms 8 = 664. Gated DeltaNet: qkv 8->16 128, z 64, b 16, a 16, out 64,
    # MLP 384, norms 16, conv 16*4 64, dt_bias + A_log 4, gated norm 4 = 760.
    assert shape.layer_parameters("full_attention") == 664
    assert shape.layer_parameters("linear_attention") == 760
    assert shape.parameters() == 3 * 760 + 664 + 2 * 100 * 8 + 8 == 4552
    # LoRA r = 2, r * (in + out): full 48 + 24 + 24 + 32 + 3 * 48 = 272; linear 48 + 32 + 20 + 20 + 32 + 144 = 296.
    assert shape.lora_parameters(2, KNOWN_TARGETS) == 3 * 296 + 272 == 1160
    assert shape.lora_parameters(2, ["q_proj", "v_proj"]) == 2 * (8 + 16) + 2 * (8 + 4)


def test_estimate_lines_of_a_small_shape_by_hand():
    e = estimate_memory(small_shape(), small_config(), gpus=2, strategy="fsdp2")
    got = {line.key: line.bytes for line in e.lines}
    assert got == {
        "weights": 4552 * 2 // 2,
        "gathered": (2 * 100 * 8 + 8 + 2 * 760) * 2,  # root unit + 2 decoder layers, bf16
        "lora": 1160 * 16 // 2,
        "kept": 4 * 2 * 16 * 8 * 2,  # 4 layers x 2 x 16 tokens x hidden 8 x 2 B
        # one Gated DeltaNet layer per token (see the next test): 624 base + 352 LoRA
        "recomputed": 2 * 16 * (624 + 352),
        "logits": 2 * 16 * 100 * 12,
        "allowance": ALLOWANCE,
    }
    assert e.total == sum(got.values())
    ddp = estimate_memory(small_shape(), small_config(), gpus=2, strategy="ddp")
    assert ddp.line("weights").bytes == 4552 * 2 and "gathered" not in {line.key for line in ddp.lines}
    zero3 = estimate_memory(small_shape(), small_config(), gpus=2, strategy="zero3")
    assert zero3.line("gathered").bytes == (100 * 8 + 2 * 760) * 2


def test_one_layers_activations_of_a_small_shape_by_hand():
    shape = small_shape()
    # Gated attention (q 8, kv 4): fp32 norm inputs 2*8, q_norm 8, k_norm 4 (x 4 B); bf16 q 8, k 4,
    # v 4, output 8, gate and attention output 2*8, MLP 3*16 (x 2 B).
    assert shape.layer_activation_bytes("full_attention") == 4 * (16 + 8 + 4) + 2 * (8 + 4 + 4 + 8 + 2 * 8 + 3 * 16) == 288
    # Gated DeltaNet (conv 16, value 8, 2 value heads): fp32 norm inputs 2*8 and gated norm 3*8;
    # bf16 conv input and activation input 2*16, kernel q/k/v 16, gated norm output 8, WY 64*2, MLP 3*16.
    assert shape.layer_activation_bytes("linear_attention") == 4 * (16 + 24) + 2 * (48 + 8 + 128 + 48) == 624
    # LoRA r = 2 on every projection: fp32 inputs (q, k, v, o, gate, up: 8 each; down: 16) + r-wide outputs.
    lora = {"lora_r": 2, "lora_targets": KNOWN_TARGETS}
    assert shape.layer_activation_bytes("full_attention", **lora) == 288 + 4 * (6 * 8 + 16) + 7 * 8 == 600
    assert shape.layer_activation_bytes("linear_attention", **lora) == 624 + 4 * (7 * 8 + 16) + 8 * 8 == 976
    assert shape.layer_activation_bytes("linear_attention", **lora, lora_dropout=0.1) == 976 + 7 * 8 + 16  # 1-byte masks


def test_without_checkpointing_every_layer_keeps_its_activations():
    e = estimate_memory(small_shape(), small_config(**{"train.gradient_checkpointing": False}))
    assert e.line("kept").bytes == 2 * 16 * (3 * 976 + 600) and e.line("recomputed").bytes == 0


def test_one_layers_activations_are_what_autograd_keeps():
    # A bf16 Qwen3.5 with the preset's LoRA (fp32 adapter, no dropout), one decoder layer's forward
    # under saved_tensors_hooks: the bytes of every distinct storage autograd keeps (weights aside).
    torch = pytest.importorskip("torch")
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3_5ForCausalLM, Qwen3_5TextConfig

    config = SMALL | {"hidden_size": 256, "intermediate_size": 768, "vocab_size": 512, "num_attention_heads": 2,
                      "num_key_value_heads": 1, "head_dim": 64, "linear_num_key_heads": 2, "linear_num_value_heads": 4,
                      "linear_key_head_dim": 32, "linear_value_head_dim": 48}
    shape = ModelShape.from_config(config, name="measured", source="test")
    torch.manual_seed(0)
    model = get_peft_model(Qwen3_5ForCausalLM(Qwen3_5TextConfig(**config)).to(torch.bfloat16),
                           LoraConfig(r=8, lora_dropout=0.0, target_modules=load_preset("tiny").lora.target_regex))
    decoder = model.base_model.model.model
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    batch, seq = 2, 256
    kept = {}
    for index in (0, 3):
        x = torch.randn(batch, seq, 256, dtype=torch.bfloat16, requires_grad=True)
        positions = torch.arange(seq)[None].expand(batch, seq)
        rotary = decoder.rotary_emb(x, positions[None].expand(3, batch, seq))
        storages = {}

        def pack(t):
            ptr = t.untyped_storage().data_ptr()
            if ptr not in weights:
                storages[ptr] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            decoder.layers[index](x, position_embeddings=rotary, attention_mask=None, position_ids=positions)
        kept[config["layer_types"][index]] = sum(storages.values()) / (batch * seq)
    full = shape.layer_activation_bytes("full_attention", lora_r=8, lora_targets=KNOWN_TARGETS)
    assert abs(kept["full_attention"] - full) / full < 0.02, (kept, full)
    # Without fla, the Gated DeltaNet layer runs transformers' PyTorch path, which keeps more than
    # the kernel's q/k/v and WY matrix (its per-chunk matrices): the estimate is a floor here.
    linear = shape.layer_activation_bytes("linear_attention", lora_r=8, lora_targets=KNOWN_TARGETS)
    assert linear < kept["linear_attention"] < 3 * linear, (kept, linear)


def test_the_real_shapes_match_transformers_and_peft():
    torch = pytest.importorskip("torch")
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3_5ForCausalLM, Qwen3_5TextConfig

    for config, shape in ((SMALL, small_shape()), (KNOWN_SHAPES["Qwen/Qwen3.5-9B"], known_shape("Qwen/Qwen3.5-9B"))):
        with torch.device("meta"):
            model = Qwen3_5ForCausalLM(Qwen3_5TextConfig(**config)).to(torch.bfloat16)
        assert sum(p.numel() for p in model.parameters()) == shape.parameters()
        preset = load_preset("qwen3.5-9b")
        peft_model = get_peft_model(model, LoraConfig(r=preset.lora.r, target_modules=preset.lora.target_regex))
        trainable = [p for p in peft_model.parameters() if p.requires_grad]
        assert sum(p.numel() for p in trainable) == shape.lora_parameters(preset.lora.r, preset.lora.target_modules)
        assert {p.dtype for p in trainable} == {torch.float32}  # PEFT keeps the adapter in fp32 over a bf16 base
    assert known_shape("Qwen/Qwen3.5-9B").parameters() == 8_953_803_264
    assert known_shape("Qwen/Qwen3.5-27B").parameters() == 26_895_998_464


def test_the_logits_line_is_what_the_loss_really_peaks_at():
    # ForCausalLMLoss on bf16 logits, in a fresh process: the resident memory's high-water mark
    # (Linux's VmHWM, reset through /proc/self/clear_refs) over the logits' element count, in the
    # forward and then in the backward (after the forward's bf16 logits are freed, as the Trainer frees them).
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/clear_refs")
    script = (
        "import torch\n"
        "from transformers.loss.loss_utils import ForCausalLMLoss\n"
        "T, V = 1024, 65536\n"
        "h = torch.randn(1, T, 64, dtype=torch.bfloat16, requires_grad=True); w = torch.randn(V, 64, dtype=torch.bfloat16)\n"
        "labels = torch.randint(0, V, (1, T))\n"
        "status = lambda key: int(next(x for x in open('/proc/self/status') if x.startswith(key)).split()[1]) * 1024\n"
        "reset = lambda: open('/proc/self/clear_refs', 'w').write('5')\n"
        "reset(); base = status('VmRSS'); logits = h @ w.T; loss = ForCausalLMLoss(logits, labels, V); fwd = status('VmHWM')\n"
        "del logits; reset(); loss.backward(); print((fwd - base) / (T * V), (status('VmHWM') - base) / (T * V))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    forward, backward = map(float, out.split())
    assert 9.5 <= forward <= 11 and 11.5 <= backward <= 13  # LOGIT_BYTES = 12: the backward's peak


def test_more_gpus_never_need_more_and_longer_sequences_need_more():
    shape = known_shape("Qwen/Qwen3.5-27B")
    config = load_preset("qwen3.5-27b")
    for strategy in ("fsdp2", "zero3"):
        totals = [estimate_memory(shape, config, gpus=n, strategy=strategy).total for n in (2, 4, 8, 16)]
        assert totals == sorted(totals, reverse=True) and totals[0] > totals[-1]
    ddp = {estimate_memory(shape, config, gpus=n, strategy="ddp").total for n in (1, 2, 8)}
    assert len(ddp) == 1  # DDP replicates everything
    by_length = [estimate_memory(shape, load_preset("qwen3.5-27b", {"data.max_length": n}), gpus=8, strategy="fsdp2").total
                 for n in (1024, 2048, 4096, 8192)]
    assert by_length == sorted(by_length) and len(set(by_length)) == 4


def test_gpu_memory_sizes():
    assert parse_gpu_memory("80G") == parse_gpu_memory("80GB") == parse_gpu_memory("80GiB") == parse_gpu_memory("80") == 80 * GIB
    assert parse_gpu_memory("141g") == 141 * GIB and parse_gpu_memory("81920M") == 80 * GIB
    for bad in ("", "eighty", "80X", "0G", "-8G"):
        with pytest.raises(ValueError, match="is not a size"):
            parse_gpu_memory(bad)


def test_the_shape_comes_from_the_base_folder_then_the_built_in_configs(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    # A Qwen3_5ForConditionalGeneration config.json, as the Hub's (and build_tiny_qwen35's) are.
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen3_5", "text_config": QWEN35_TEXT_CONFIG | {"vocab_size": 300}}))
    shape, why = resolve_shape(folder, "Qwen/Qwen3.5-9B")
    assert why == "" and shape.hidden_size == 64 and shape.vocab_size == 300 and shape.source.endswith("config.json")
    shape, _ = resolve_shape(tmp_path / "tokenizer-only", "Qwen/Qwen3.5-9B")
    assert shape.hidden_size == 4096 and shape.source.startswith("the real Qwen/Qwen3.5-9B config")
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    shape, why = resolve_shape(folder, "someone/else")
    assert shape is None and "not 'llama'" in why and "known Qwen3.5 shape" in why


# -- the dry run ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A tokenizer-only base folder (no config.json), as a dry run may be given."""
    (path := tmp_path_factory.mktemp("tok") / "tokenizer").mkdir()
    build_japanese_tokenizer(path)
    return path


@pytest.fixture
def dry_run(capsys, monkeypatch, tokenizer_dir, tmp_path):
    """``apto-release train --preset P --base <tokenizer> --data <8 records> -o ... ARGS`` through ``main``."""
    monkeypatch.delenv("APTO_DEBUG", raising=False)
    data = write_jsonl(tmp_path / "data.jsonl", make_records(8))

    def run(preset, *args):
        with pytest.raises(SystemExit) as info:
            main(["train", "--preset", preset, "--base", str(tokenizer_dir), "--data", str(data), "-o", str(tmp_path / "out"), *args])
        out, err = capsys.readouterr()
        return info.value.code or 0, out, err

    return run


def memory_section(out: str) -> list[str]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Memory per GPU"))
    return lines[start:]


def test_the_dry_run_prints_the_estimate_for_the_documented_hardware(dry_run):
    code, out, err = dry_run("qwen3.5-9b", "--dry-run")
    assert code == 0, err
    section = memory_section(out)
    assert section[0].startswith("Memory per GPU (estimate): 1 GPU of 80.0 GiB (the preset's documented hardware); micro-batch 2 x 4,096 tokens; shape Qwen/Qwen3.5-9B")
    assert section[1].split() == ["one", "GPU", "/", "DDP*", "FSDP2", "full", "shard", "ZeRO-3"]
    total = next(line for line in section if line.strip().startswith("total"))
    expected = estimate_memory(known_shape("Qwen/Qwen3.5-9B"), load_preset("qwen3.5-9b")).total
    assert total.split()[1] == f"{expected / GIB:.1f}"
    assert any("logits and loss (not chunked): 2 x 4,096 tokens x 248,320 vocabulary x 12 B" in line for line in section)
    assert section[-1].startswith("  Fits: ") and not any(line.startswith("Warning") for line in section)


def test_the_dry_run_warns_when_the_run_will_not_fit(dry_run):
    code, out, err = dry_run("qwen3.5-27b", "--dry-run", "--gpus", "1", "--gpu-memory", "80G")
    assert code == 0, err
    warning = [line for line in out.splitlines() if line.startswith("Warning: will not fit")]
    need = estimate_memory(known_shape("Qwen/Qwen3.5-27B"), load_preset("qwen3.5-27b"), gpus=1, strategy="fsdp2").total
    assert need > 80 * GIB
    assert len(warning) == 1 and f"FSDP2 full shard needs about {need / GIB:.1f} GiB per GPU, more than 80.0 GiB" in warning[0]
    code, out, _ = dry_run("qwen3.5-27b", "--dry-run", "--gpus", "8", "--gpu-memory", "80G")
    assert code == 0 and "Warning" not in out and "Memory per GPU (estimate): 8 GPUs of 80.0 GiB;" in out
    code, out, _ = dry_run("qwen3.5-9b", "--dry-run", "--gpu-memory", "40G")
    assert code == 0 and "Warning: will not fit: one GPU / DDP needs about" in out


def test_the_memory_options_are_checked(dry_run):
    code, _, err = dry_run("qwen3.5-9b", "--gpus", "2")
    assert code == 2 and "--gpus and --gpu-memory size the dry run's memory estimate" in err and "--dry-run" in err
    code, _, err = dry_run("qwen3.5-9b", "--dry-run", "--gpu-memory", "lots")
    assert code == 2 and "--gpu-memory 'lots' is not a size" in err and "Traceback" not in err
    code, _, err = dry_run("qwen3.5-9b", "--dry-run", "--gpus", "0")
    assert code == 2 and "--gpus" in err


def test_a_base_without_a_known_shape_gets_a_line_not_an_error(dry_run):
    code, out, _ = dry_run("tiny", "--dry-run")
    assert code == 0 and memory_section(out)[0].startswith("Memory per GPU: no estimate: ")


# -- the README and the benchmark -----------------------------------------------------------------


def test_the_readme_table_is_what_the_code_computes():
    readme = (ROOT / "README.md").read_text("utf-8")
    found = re.search(r"<!-- memory-table: begin.*?-->\n(.*?)\n<!-- memory-table: end -->", readme, re.S)
    assert found, "the README lacks the memory table's markers"
    assert found.group(1) == readme_table(), "regenerate it: python -m apto_release.train.memory"


def test_the_gpu_benchmark_runs_its_cpu_smoke_mode():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_train_gpu.py"), "--smoke"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| tiny |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "fallback (transformers.models.qwen3_5.modeling_qwen3_5)"  # the PyTorch path was bound
    assert cells[3] == "2 x 64" and float(cells[4]) > 0 and "device: cpu" in proc.stdout


def test_the_benchmark_forces_the_pytorch_path_even_with_fla_installed(tmp_path):
    # A stand-in fla on the path, where transformers looks for it (fla.ops.gated_delta_rule):
    # transformers binds it; after force_pytorch_fallback(), its own PyTorch function.
    kernel = tmp_path / "site" / "fla" / "ops" / "gated_delta_rule"
    kernel.mkdir(parents=True)
    for folder in (kernel.parent.parent, kernel.parent):
        (folder / "__init__.py").write_text("")
    (kernel / "__init__.py").write_text("def chunk_gated_delta_rule(*a, **k): ...\ndef fused_recurrent_gated_delta_rule(*a, **k): ...\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(ROOT), str(ROOT / "benchmarks")]))
    script = (
        "import sys, bench_train_gpu as b\n"
        "first = b.bound_kernel()\n"
        "del sys.modules['transformers.models.qwen3_5.modeling_qwen3_5']  # transformers binds when it imports this\n"
        "b.force_pytorch_fallback()\n"
        "print(first, b.bound_kernel())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True).stdout.split()
    assert out == ["fla.ops.gated_delta_rule", "transformers.models.qwen3_5.modeling_qwen3_5"]

"""Benchmark of LoRA training steps on a GPU: Qwen3.5 layouts at 4,096 tokens, with and without fla.

Run by hand on a CUDA machine (never in CI):
    python benchmarks/bench_train_gpu.py [--steps 10] [--warmup 2] [--json OUT]
    python benchmarks/bench_train_gpu.py --smoke      # CPU, a tiny shape, 2 steps, fallback only (a test runs it)

Shapes (random weights, bf16, the qwen3.5-9b preset's LoRA: rank 32, dropout 0.05, every text
projection; gradient checkpointing, AdamW on the adapter; micro-batch ``--batch`` x ``--seq`` tokens):

- ``2b``: Qwen3.5-9B's real widths (hidden 4096, FFN 12288, 16/4 heads of 256, Gated DeltaNet
  16 QK / 32 V heads of 128) over 8 layers (two 3 + 1 cycles), vocabulary cut to 32,000: about
  2.0B parameters, most of them in the layers, where the kernels matter;
- ``9b-4layers``: the 9B's real dimensions, its 248,320-token vocabulary included, over 4 layers
  (2.9B parameters), printed beside ``train.memory``'s estimate for the same shape and batch.

Kernels: ``fla`` lets transformers pick flash-linear-attention and causal-conv1d when installed;
``fallback`` makes it take its PyTorch reference path even so. transformers chooses once, when its
Qwen3.5 module is imported (``use_kernel_func_from_hub_with_fallback`` imports ``fla`` and
``causal_conv1d`` and keeps the torch function if that fails), so each case runs in a fresh process
and the fallback one first puts ``None`` for both packages into ``sys.modules``, which makes their
import fail. Each case reports the implementation transformers actually bound.

Figures: seconds per optimiser step (median of ``--steps`` after ``--warmup``), tokens per second
(batch x seq / that median) and peak GPU memory (``torch.cuda.max_memory_allocated``, GiB).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import statistics
import subprocess
import sys
import time

GIB = 1 << 30
_ROPE_9B = {"rope_type": "default", "rope_theta": 10_000_000.0, "partial_rotary_factor": 0.25, "mrope_section": [11, 11, 10], "mrope_interleaved": True}
_WIDTHS_9B = {
    "hidden_size": 4096, "intermediate_size": 12288, "num_attention_heads": 16, "num_key_value_heads": 4, "head_dim": 256,
    "linear_num_key_heads": 16, "linear_num_value_heads": 32, "linear_key_head_dim": 128, "linear_value_head_dim": 128,
    "linear_conv_kernel_dim": 4, "rope_parameters": _ROPE_9B, "tie_word_embeddings": False, "max_position_embeddings": 262144,
}
_CYCLE = ["linear_attention"] * 3 + ["full_attention"]
SHAPES: dict[str, dict] = {
    "2b": _WIDTHS_9B | {"num_hidden_layers": 8, "layer_types": _CYCLE * 2, "vocab_size": 32000},
    "9b-4layers": _WIDTHS_9B | {"num_hidden_layers": 4, "layer_types": _CYCLE, "vocab_size": 248320},
    # --smoke: the tests' tiny Qwen3.5 widths (apto_release.testing.QWEN35_TEXT_CONFIG).
    "tiny": {
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "layer_types": _CYCLE, "vocab_size": 512,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "linear_num_key_heads": 2,
        "linear_num_value_heads": 4, "linear_key_head_dim": 16, "linear_value_head_dim": 16, "linear_conv_kernel_dim": 4,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10_000_000.0, "partial_rotary_factor": 0.25,
                            "mrope_section": [3, 3, 2], "mrope_interleaved": True},
        "tie_word_embeddings": False, "max_position_embeddings": 4096,
    },
}


def force_pytorch_fallback() -> None:
    """Make transformers take its PyTorch Gated DeltaNet path even where fla is installed.

    Call before transformers' Qwen3.5 module is imported: ``None`` in ``sys.modules`` makes
    ``import fla`` (and ``causal_conv1d``) fail, and transformers then binds its torch functions.
    """
    sys.modules["fla"] = None  # type: ignore[assignment]
    sys.modules["causal_conv1d"] = None  # type: ignore[assignment]


def bound_kernel() -> str:
    """The module of the Gated DeltaNet chunk kernel that transformers bound ("fla..." or transformers')."""
    qwen35 = importlib.import_module("transformers.models.qwen3_5.modeling_qwen3_5")
    implementation = inspect.getclosurevars(qwen35.torch_chunk_gated_delta_rule).nonlocals.get("implementation")
    return getattr(implementation, "__module__", "?")


def run_case(shape_name: str, kernels: str, *, steps: int, warmup: int, batch: int, seq: int, cpu: bool) -> dict:
    """Train ``steps + warmup`` LoRA steps on ``shape_name``; in a fresh process (see the module docstring)."""
    if kernels == "fallback":
        force_pytorch_fallback()
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3_5ForCausalLM, Qwen3_5TextConfig

    from apto_release.train.presets import load_preset

    bound = bound_kernel()
    if kernels == "fla" and not bound.startswith("fla"):
        return {"shape": shape_name, "kernels": kernels, "skipped": f"fla is not in use (transformers bound {bound}); pip install -e '.[gpu]'"}
    if cpu:
        torch.set_num_threads(1)  # the smoke shape is tiny: threads only contend on a shared machine
    device = torch.device("cpu" if cpu else "cuda")
    dtype = torch.float32 if cpu else torch.bfloat16
    torch.manual_seed(0)
    config = Qwen3_5TextConfig(**SHAPES[shape_name])
    with device:
        model = Qwen3_5ForCausalLM(config).to(dtype)
    params = sum(p.numel() for p in model.parameters())
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    lora = load_preset("qwen3.5-9b").lora  # rank 32, alpha 64, dropout 0.05, every text projection
    model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_regex))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    if not cpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(warmup + steps):
        ids = torch.randint(0, config.vocab_size, (batch, seq), device=device)
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if not cpu:
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    per_step = statistics.median(times)
    return {
        "shape": shape_name, "kernels": kernels, "bound": bound, "parameters": params, "batch": batch, "seq": seq,
        "steps": steps, "seconds_per_step": per_step, "tokens_per_second": batch * seq / per_step,
        "peak_gib": None if cpu else torch.cuda.max_memory_allocated() / GIB,
        "gpu": "cpu" if cpu else torch.cuda.get_device_name(), "loss": float(loss),
        "estimate_gib": _estimate(SHAPES[shape_name], batch, seq),
    }


def _estimate(shape: dict, batch: int, seq: int) -> float:
    """``train.memory``'s per-GPU estimate for this shape and batch, less its fixed allowance, GiB."""
    from apto_release.train.memory import ALLOWANCE, ModelShape, estimate_memory
    from apto_release.train.presets import load_preset

    config = load_preset("qwen3.5-9b", {"train.per_device_batch_size": batch, "data.max_length": seq})
    e = estimate_memory(ModelShape.from_config(shape, name="bench", source="bench"), config)
    return (e.total - ALLOWANCE) / GIB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU: the tiny shape, 2 steps, fallback only")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4, help="sequences per step (the 9B preset's micro-batch)")
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--shapes", default="2b,9b-4layers")
    parser.add_argument("--kernels", default="fla,fallback")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--one", nargs=2, metavar=("SHAPE", "KERNELS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.shapes, args.kernels, args.steps, args.warmup, args.batch, args.seq = "tiny", "fallback", 2, 0, 2, 64
    if args.one:
        result = run_case(*args.one, steps=args.steps, warmup=args.warmup, batch=args.batch, seq=args.seq, cpu=args.smoke)
        print("RESULT " + json.dumps(result))
        return 0
    results = []
    for shape in args.shapes.split(","):
        for kernels in args.kernels.split(","):
            cmd = [sys.executable, __file__, "--one", shape, kernels, "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--batch", str(args.batch), "--seq", str(args.seq)] + (["--smoke"] if args.smoke else [])
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                results.append({"shape": shape, "kernels": kernels, "skipped": f"failed: {tail}"})
            else:
                results.append(json.loads(line[0][len("RESULT "):]))
    print(render(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 1 if all("skipped" in r for r in results) else 0


def render(results: list[dict]) -> str:
    """A Markdown table of the cases."""
    lines = [
        "| shape | kernels (bound) | parameters | batch x seq | s/step | tokens/s | peak GPU memory | estimate (no allowance) |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['shape']} | {r['kernels']} | | | | | | {r['skipped']} |")
            continue
        peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.1f} GiB"
        lines.append(
            f"| {r['shape']} | {r['kernels']} ({r['bound']}) | {r['parameters'] / 1e9:.2f}B | {r['batch']} x {r['seq']:,} "
            f"| {r['seconds_per_step']:.3f} | {r['tokens_per_second']:,.0f} | {peak} | {r['estimate_gib']:.1f} GiB |"
        )
    device = next((r["gpu"] for r in results if "gpu" in r), "?")
    return "\n".join(lines) + f"\n\ndevice: {device}"


if __name__ == "__main__":
    sys.exit(main())

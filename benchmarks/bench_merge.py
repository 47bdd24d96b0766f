"""Benchmark of merge: peak memory and throughput on a multi-GB checkpoint, beside PEFT and a copy.

Run by hand (never in CI):  python benchmarks/bench_merge.py [--size-gb 2] [--shards 4] [--repeat 3]

What it does, in a temporary folder (or ``--keep DIR``):

1. Builds a synthetic Qwen3.5 checkpoint of at least ``--size-gb`` GB in ``--shards`` shards, in
   the layout of the Hub's checkpoints and of ``apto_release.testing.build_tiny_qwen35``
   (``Qwen3_5ForConditionalGeneration``: ``model.language_model.*`` with three Gated DeltaNet
   layers then one gated full-attention layer, a tiny vision tower, ``lm_head``, an ``mtp.*``
   head in the last shard; bf16), with wide layers (hidden 2048, intermediate 5632, vocabulary
   32,768) and as many layers as the size needs. Names and shapes come from a model built on the
   ``meta`` device; the values are drawn one shard at a time, so the build never holds more than
   one shard.
2. Builds a LoRA adapter on a ``meta`` model (rank 16 on every text projection, random non-zero
   A and B, as ``init_lora_weights=False`` leaves them) and saves it with peft's
   ``save_pretrained``.
3. Measures, each in a fresh process, wall time and peak resident memory (the child's
   ``ru_maxrss``, read by a probe process): (a) ``apto-release merge``; (b) PEFT:
   ``from_pretrained`` in bf16, ``PeftModel.from_pretrained``, ``merge_and_unload``,
   ``save_pretrained``; (c) a copy of the shards (``shutil.copyfile`` then ``fsync``, as the merge
   syncs what it writes). The base shards are dropped from the page cache before every run
   (``posix_fadvise(DONTNEED)``; ``--warm`` keeps them), so each run reads them from disk.
4. Checks (a) against (b) and against the float32 formula on a few tensors, and prints a Markdown
   table.

The machine is shared and noisy: merge and copy are medians of ``--repeat`` runs, interleaved,
and every baseline runs in the same session. Times include process start (for the merge, the
torch import): that is what a user waits for. MB and GB are 10^6 and 10^9 bytes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

CLI = [sys.executable, "-m", "apto_release"]
MB = 1e6
GB = 1e9
INDEX = "model.safetensors.index.json"
#: What the memory bound allows on top of the largest shard and the adapter (interpreter, torch,
#: the merge's row blocks).
ALLOWANCE_MB = 300

# Every Linear of the text model (as tests/merge/test_merge.py); none occurs in the vision tower,
# and transformers does not build mtp.*, so both stay untouched.
TEXT_TARGETS = [
    "q_proj", "k_proj", "v_proj", "o_proj",
    "gate_proj", "up_proj", "down_proj",
    "in_proj_qkv", "in_proj_z", "in_proj_a", "in_proj_b", "out_proj",
]

# The wide text model; the layer count is chosen for the size. Qwen3.5's real values are larger
# (see apto_release.testing.models.QWEN35_TEXT_CONFIG's comments); the shapes follow the same rules.
WIDE_TEXT = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 256,
    "linear_num_key_heads": 16,
    "linear_num_value_heads": 32,  # fewer key heads than value heads, as in every real Qwen3.5
    "linear_key_head_dim": 128,
    "linear_value_head_dim": 128,
    "linear_conv_kernel_dim": 4,
    "vocab_size": 32768,  # larger than the tokenizer's 3,000 ids, as padded vocabularies are
    "full_attention_interval": 4,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 10_000_000.0,
        "partial_rotary_factor": 0.25,
        "mrope_section": [11, 11, 10],
        "mrope_interleaved": True,
    },
    "mtp_num_hidden_layers": 1,
    "tie_word_embeddings": False,
}

# ---------------------------------------------------------------------------------------------
# The checkpoint


def make_config(layers: int, tokenizer=None):
    """A ``Qwen3_5Config`` with the wide text model of ``layers`` layers and the tiny vision tower."""
    from transformers import Qwen3_5Config

    from apto_release.testing.models import QWEN35_TEXT_CONFIG, QWEN35_VISION_CONFIG
    from apto_release.testing.tokenizer import ENDOFTEXT, IM_END, VISION_TOKENS

    text = dict(QWEN35_TEXT_CONFIG, **WIDE_TEXT, num_hidden_layers=layers)
    text["layer_types"] = ["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(layers)]
    token_ids = {}
    if tokenizer is not None:
        vocab = tokenizer.get_vocab()
        text.update(eos_token_id=vocab[IM_END], pad_token_id=vocab[ENDOFTEXT])
        keys = ("vision_start_token_id", "vision_end_token_id", "image_token_id", "video_token_id")
        token_ids = {key: vocab[token] for key, token in zip(keys, VISION_TOKENS, strict=True)}
    vision = dict(QWEN35_VISION_CONFIG, out_hidden_size=text["hidden_size"])
    return Qwen3_5Config(text_config=text, vision_config=vision, tie_word_embeddings=False, **token_ids)


def tensor_plan(config) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, owning module class) of every stored tensor, in file order, ``mtp.*`` last.

    From a model on the ``meta`` device: nothing is allocated. The ``mtp.*`` head is laid out as
    ``build_tiny_qwen35`` writes it (an ``fc``, one layer shaped like a full-attention layer,
    three norms).
    """
    import torch
    from transformers import Qwen3_5ForConditionalGeneration

    with torch.device("meta"):
        model = Qwen3_5ForConditionalGeneration(config)
    owners = {name: type(module).__name__ for name, module in model.named_modules()}
    plan = []
    for name, meta in model.state_dict().items():
        plan.append((name, tuple(meta.shape), owners[name.rpartition(".")[0]]))
    text = config.get_text_config()
    hidden = text.hidden_size
    full = text.layer_types.index("full_attention")
    prefix = f"model.language_model.layers.{full}."
    plan.append(("mtp.fc.weight", (hidden, 2 * hidden), "Linear"))
    for name, shape, owner in list(plan):
        if name.startswith(prefix):
            leaf = name[len(prefix):]
            plan.append((f"mtp.layers.0.{leaf}", shape, "Qwen3_5RMSNorm" if "norm" in leaf else owner))
    for norm in ("norm", "pre_fc_norm_embedding", "pre_fc_norm_hidden"):
        plan.append((f"mtp.{norm}.weight", (hidden,), "Qwen3_5RMSNorm"))
    return plan


def plan_bytes(plan) -> int:
    return sum(2 * math.prod(shape) for _, shape, _ in plan)  # bf16


def draw(owner: str, leaf: str, shape: tuple[int, ...], generator):
    """One bf16 tensor drawn as ``apto_release.testing.models._draw`` draws it (norms, A_log, ...)."""
    import torch

    t = torch.empty(shape)
    if owner == "Qwen3_5RMSNorm":  # x * (1 + w): w around 0
        t.uniform_(-0.5, 0.5, generator=generator)
    elif owner in ("Qwen3_5RMSNormGated", "LayerNorm") and leaf == "weight":  # x * w: around 1
        t.uniform_(0.5, 1.5, generator=generator)
    elif leaf == "A_log":
        t.uniform_(0.01, 16.0, generator=generator).log_()
    elif leaf == "dt_bias":
        t.uniform_(0.0, 2.0, generator=generator)
    elif leaf == "bias":
        t.normal_(0.0, 0.1, generator=generator)
    elif owner == "Embedding":
        t.normal_(0.0, 1.0, generator=generator)
    else:  # Linear, Conv1d, Conv3d: scaled by the fan-in
        t.normal_(0.0, 1.0 / math.sqrt(math.prod(shape[1:])), generator=generator)
    return t.to(torch.bfloat16)


def split_shards(plan, shards: int) -> list[list[int]]:
    """Cut the plan (in order) into ``shards`` runs of about equal bytes."""
    sizes = [2 * math.prod(shape) for _, shape, _ in plan]
    total, cumulative, cuts = sum(sizes), 0, []
    for i, size in enumerate(sizes):
        # a new shard starts at the tensor whose middle passes the next k/shards of the bytes
        if len(cuts) < shards - 1 and i > (cuts[-1] if cuts else 0) and cumulative + size / 2 >= total * (len(cuts) + 1) / shards:
            cuts.append(i)
        cumulative += size
    bounds = [0, *cuts, len(plan)]
    runs = [list(range(bounds[k], bounds[k + 1])) for k in range(len(bounds) - 1)]
    if len(runs) != shards or not all(runs):
        raise SystemExit(f"cannot cut {len(plan)} tensors into {shards} shards")
    return runs


def build_checkpoint(out: Path, config, tokenizer, plan, shards: int, seed: int) -> None:
    """Write shards, index, config.json, generation_config.json and the tokenizer into ``out``."""
    import torch
    from safetensors.torch import save_file
    from transformers import GenerationConfig

    out.mkdir(parents=True)
    generator = torch.Generator().manual_seed(seed)
    weight_map = {}
    for k, run in enumerate(split_shards(plan, shards), start=1):
        filename = f"model-{k:05d}-of-{shards:05d}.safetensors"
        tensors = {}
        for i in run:  # one shard in memory at a time
            name, shape, owner = plan[i]
            tensors[name] = draw(owner, name.rpartition(".")[2], shape, generator)
        save_file(tensors, out / filename, metadata={"format": "pt"})
        with open(out / filename, "rb+") as f:  # clean pages, so that they can be dropped later
            os.fsync(f.fileno())
        weight_map.update(dict.fromkeys(tensors, filename))
        del tensors
    index = {
        "metadata": {
            "total_parameters": sum(math.prod(shape) for _, shape, _ in plan),
            "total_size": plan_bytes(plan),
        },
        "weight_map": dict(sorted(weight_map.items())),
    }
    (out / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    config.architectures = ["Qwen3_5ForConditionalGeneration"]
    config.dtype = "bfloat16"
    config.save_pretrained(out)
    text = config.get_text_config()
    GenerationConfig(eos_token_id=[text.eos_token_id, text.pad_token_id], pad_token_id=text.pad_token_id).save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_adapter(base: Path, config, out: Path, *, rank: int, alpha: int, seed: int) -> int:
    """A LoRA adapter for ``base`` made on a ``meta`` model and saved with peft's ``save_pretrained``.

    Only the LoRA factors are allocated. A and B are drawn as ``nn.Linear`` initialises them
    (uniform, bound ``1/sqrt(fan_in)``), which is what ``init_lora_weights=False`` leaves: B is
    not zero, so the merge changes every targeted weight. Returns the number of LoRA modules.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3_5ForConditionalGeneration

    with torch.device("meta"):
        model = Qwen3_5ForConditionalGeneration(config)
    lora = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=False, target_modules=TEXT_TARGETS)
    with warnings.catch_warnings():  # transformers' deprecation notices, from inside peft
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(model, lora)
    peft_model.peft_config["default"].base_model_name_or_path = str(base)
    generator = torch.Generator().manual_seed(seed)
    modules = 0
    for name, module in peft_model.named_modules():
        if name.rsplit(".", 2)[-2:-1] in (["lora_A"], ["lora_B"]) and isinstance(module, torch.nn.Linear):
            bound = 1.0 / math.sqrt(module.in_features)
            weight = torch.empty(module.out_features, module.in_features).uniform_(-bound, bound, generator=generator)
            module.weight = torch.nn.Parameter(weight, requires_grad=False)
            modules += name.rsplit(".", 2)[-2] == "lora_A"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        peft_model.save_pretrained(out)
    return modules


# ---------------------------------------------------------------------------------------------
# Runs


PROBE = (
    "import json, resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "dt = time.perf_counter() - t\n"
    "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(json.dumps({'seconds': dt, 'rss_kib': rss, 'code': p.returncode, 'stdout': p.stdout[-3000:], 'stderr': p.stderr[-3000:]}))\n"
)

COPY = (
    "import os, shutil, sys\n"
    "out = sys.argv[1]\n"
    "os.makedirs(out)\n"
    "for src in sys.argv[2:]:\n"
    "    dst = os.path.join(out, os.path.basename(src))\n"
    "    shutil.copyfile(src, dst)\n"
    "    with open(dst, 'rb+') as f:\n"
    "        os.fsync(f.fileno())\n"
)

PEFT = (
    "import json, sys, torch\n"
    "from peft import PeftModel\n"
    "from transformers import AutoTokenizer, Qwen3_5ForConditionalGeneration\n"
    "base, adapter, out = sys.argv[1:4]\n"
    "model, info = Qwen3_5ForConditionalGeneration.from_pretrained(base, dtype=torch.bfloat16, output_loading_info=True)\n"
    "model = PeftModel.from_pretrained(model, adapter).merge_and_unload()\n"
    "model.save_pretrained(out)\n"
    "AutoTokenizer.from_pretrained(base).save_pretrained(out)\n"
    "print(json.dumps({k: sorted(map(str, v)) for k, v in info.items()}))\n"
)


def run_timed(args: list[str]) -> dict:
    """Wall seconds, peak RSS (bytes) and output of one command in a fresh process."""
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True).stdout
    result = json.loads(out)
    if result["code"] != 0:
        raise SystemExit(f"{' '.join(args[:4])} ... exited {result['code']}:\n{result['stderr']}")
    result["rss"] = result["rss_kib"] * 1024
    return result


def drop_cache(paths: list[Path]) -> None:
    """Flush, then evict these files' pages from the page cache (no root needed for clean pages)."""
    os.sync()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------
# Checks


def _weight_map(folder: Path, single: str = "model.safetensors") -> dict[str, str]:
    """Tensor name -> file, from the index or from the single file's header."""
    if (folder / INDEX).exists():
        return json.loads((folder / INDEX).read_text())["weight_map"]
    from safetensors import safe_open

    with safe_open(folder / single, "pt") as f:
        return dict.fromkeys(f.keys(), single)


def _tensor(folder: Path, weight_map: dict[str, str], name: str):
    from safetensors import safe_open

    with safe_open(folder / weight_map[name], "pt") as f:
        return f.get_tensor(name)


def _bf16_ulps(a, b) -> int:
    """The largest distance between two bf16 tensors in units in the last place."""
    import torch

    def ordered(t):
        i = t.view(torch.int16).to(torch.int32)
        return torch.where(i < 0, -(i & 0x7FFF), i)

    return int((ordered(a) - ordered(b)).abs().max())


def check_merge(base: Path, adapter: Path, ours: Path, peft_out: Path, plan, alpha: int, rank: int) -> dict:
    """Compare our merge with PEFT's and with ``base + scale * B @ A`` (float32, one rounding)."""
    import torch
    from safetensors.torch import load_file

    names = [name for name, _, _ in plan]
    layers = sorted({int(m.group(1)) for n in names if (m := re.match(r"model\.language_model\.layers\.(\d+)\.", n))})
    last = layers[-1]
    targeted = [
        "model.language_model.layers.0.linear_attn.in_proj_qkv.weight",
        "model.language_model.layers.0.linear_attn.in_proj_a.weight",
        "model.language_model.layers.3.self_attn.q_proj.weight",
        "model.language_model.layers.3.self_attn.o_proj.weight",
        f"model.language_model.layers.{last // 2}.mlp.gate_proj.weight",
        f"model.language_model.layers.{last}.mlp.down_proj.weight",
    ]
    untouched = [
        "model.language_model.embed_tokens.weight",
        "lm_head.weight",
        "model.language_model.layers.0.linear_attn.A_log",
        "model.language_model.norm.weight",
        "model.visual.blocks.0.attn.qkv.weight",
    ]
    lora = load_file(adapter / "adapter_model.safetensors")
    maps = {folder: _weight_map(folder) for folder in (base, ours, peft_out)}
    scale = alpha / rank
    stats = {"elements": 0, "max_abs_peft": 0.0, "ulps_peft": 0, "differ_peft": 0, "max_abs_formula": 0.0,
             "max_delta": 0.0, "untouched_equal": True, "mtp_in_ours": any(n.startswith("mtp.") for n in maps[ours]),
             "mtp_in_peft": any(n.startswith("mtp.") for n in maps[peft_out])}
    with torch.no_grad():
        for name in targeted:
            module = name.removesuffix(".weight")
            a = lora[f"base_model.model.{module}.lora_A.weight"].float()
            b = lora[f"base_model.model.{module}.lora_B.weight"].float()
            w = _tensor(base, maps[base], name)
            x, y = _tensor(ours, maps[ours], name), _tensor(peft_out, maps[peft_out], name)
            formula = (w.float() + (b @ a) * scale).to(torch.bfloat16)
            stats["elements"] += x.numel()
            stats["max_abs_peft"] = max(stats["max_abs_peft"], float((x.float() - y.float()).abs().max()))
            stats["ulps_peft"] = max(stats["ulps_peft"], _bf16_ulps(x, y))
            stats["differ_peft"] += int((x != y).sum())
            stats["max_abs_formula"] = max(stats["max_abs_formula"], float((x.float() - formula.float()).abs().max()))
            stats["max_delta"] = max(stats["max_delta"], float((x.float() - w.float()).abs().max()))
        for name in untouched:
            w = _tensor(base, maps[base], name)
            for folder in (ours, peft_out):
                stats["untouched_equal"] &= torch.equal(w, _tensor(folder, maps[folder], name))
    stats["targeted"], stats["untouched"] = len(targeted), len(untouched)
    return stats


# ---------------------------------------------------------------------------------------------


def machine(packages: tuple[str, ...] = ("torch", "transformers", "peft", "safetensors")) -> str:
    """CPUs, RAM, Python and the versions of ``packages``: the line every benchmark table starts with."""
    from importlib.metadata import version

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
        ram_text = f", {ram:.0f} GB RAM"
    except (ValueError, OSError):
        ram_text = ""
    versions = ", ".join(f"{name} {version(name)}" for name in packages)
    return f"{os.cpu_count()} CPUs ({cpu}){ram_text}; Python {platform.python_version()}, {versions}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=2.0, help="smallest checkpoint size, in GB (default 2)")
    parser.add_argument("--shards", type=int, default=4, help="number of shards (default 4)")
    parser.add_argument("--repeat", type=int, default=3, help="merge and copy runs; medians (default 3)")
    parser.add_argument("--peft-repeat", type=int, default=1, help="PEFT runs (default 1: it is slow)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--alpha", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warm", action="store_true", help="leave the base shards in the page cache between runs")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="work in DIR and keep the checkpoint, adapter and outputs; a later run with the same options reuses them")
    args = parser.parse_args()
    if args.shards < 1 or args.repeat < 1 or args.peft_repeat < 1:
        parser.error("--shards, --repeat and --peft-repeat must be at least 1")
    started = time.perf_counter()

    from apto_release.testing import build_japanese_tokenizer

    # The fewest layers (a multiple of 4: three linear-attention layers, then one full) that
    # reach the size.
    layers = 4
    while plan_bytes(tensor_plan(make_config(layers))) < args.size_gb * GB:
        layers += 4

    work = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="bench-merge-"))
    work.mkdir(parents=True, exist_ok=True)
    base, adapter = work / "base", work / "adapter"
    ours_dir, peft_dir, copy_dir = work / "merged", work / "merged-peft", work / "copied"
    params = {"layers": layers, "shards": args.shards, "rank": args.rank, "alpha": args.alpha, "seed": args.seed}
    marker = work / "bench_params.json"
    try:
        tokenizer = build_japanese_tokenizer(seed=args.seed)
        config = make_config(layers, tokenizer)
        plan = tensor_plan(config)
        if marker.exists() and json.loads(marker.read_text()) == params and base.is_dir() and adapter.is_dir():
            build_s = adapter_s = None
            print(f"# reusing the checkpoint and adapter in {work}", file=sys.stderr)
        else:
            marker.unlink(missing_ok=True)
            for old in (base, adapter, ours_dir, peft_dir, copy_dir):
                shutil.rmtree(old, ignore_errors=True)
            t = time.perf_counter()
            build_checkpoint(base, config, tokenizer, plan, args.shards, args.seed)
            build_s = time.perf_counter() - t
            t = time.perf_counter()
            build_adapter(base, config, adapter, rank=args.rank, alpha=args.alpha, seed=args.seed + 1)
            adapter_s = time.perf_counter() - t
            marker.write_text(json.dumps(params))
        shards = sorted(base.glob("*.safetensors"))
        shard_bytes = sum(p.stat().st_size for p in shards)
        largest = max(p.stat().st_size for p in shards)
        adapter_bytes = (adapter / "adapter_model.safetensors").stat().st_size
        modules = sum(1 for k in _weight_map(adapter, "adapter_model.safetensors") if ".lora_A." in k)
        bound = largest + adapter_bytes + ALLOWANCE_MB * MB
        built = f"; built in {build_s:.0f} s, adapter in {adapter_s:.1f} s" if build_s is not None else "; reused"
        print(f"# checkpoint: {shard_bytes / GB:.2f} GB in {len(shards)} shards ({layers} layers); "
              f"adapter {adapter_bytes / MB:.0f} MB{built}", file=sys.stderr)

        def cold() -> None:
            if not args.warm:
                drop_cache(shards)
            else:
                os.sync()

        merges, copies, peft_runs = [], [], []
        for i in range(args.repeat):  # interleaved, so that a noisy minute hits both
            shutil.rmtree(ours_dir, ignore_errors=True)
            cold()
            merges.append(run_timed([*CLI, "merge", "--base", str(base), "--adapter", str(adapter), "-o", str(ours_dir)]))
            shutil.rmtree(copy_dir, ignore_errors=True)
            cold()
            copies.append(run_timed([sys.executable, "-c", COPY, str(copy_dir), *map(str, shards)]))
            print(f"# run {i + 1}: merge {merges[-1]['seconds']:.1f} s, peak {merges[-1]['rss'] / MB:.0f} MB; "
                  f"copy {copies[-1]['seconds']:.1f} s", file=sys.stderr)
        shutil.rmtree(copy_dir, ignore_errors=True)
        for _ in range(args.peft_repeat):
            shutil.rmtree(peft_dir, ignore_errors=True)
            cold()
            peft_runs.append(run_timed([sys.executable, "-c", PEFT, str(base), str(adapter), str(peft_dir)]))
            print(f"# PEFT: {peft_runs[-1]['seconds']:.1f} s, peak {peft_runs[-1]['rss'] / MB:.0f} MB", file=sys.stderr)
        os.sync()  # PEFT's save_pretrained does not sync
        loading = json.loads(peft_runs[-1]["stdout"].strip().splitlines()[-1])
        check = check_merge(base, adapter, ours_dir, peft_dir, plan, args.alpha, args.rank)

        merge_s = statistics.median(r["seconds"] for r in merges)
        merge_rss = max(r["rss"] for r in merges)
        own = [float(m.group(1)) for r in merges if (m := re.search(r" in ([\d.]+)s\.", r["stdout"]))]
        copy_s = statistics.median(r["seconds"] for r in copies)
        peft_s = statistics.median(r["seconds"] for r in peft_runs)
        peft_rss = max(r["rss"] for r in peft_runs)
        summary = next((line for line in merges[-1]["stdout"].splitlines() if line.startswith("Merged")), "")
        rewritten = re.search(r"\((\d+) rewritten, (\d+) copied", summary)
        text = config.get_text_config()
        unexpected = loading.get("unexpected_keys", [])
        within = merge_rss <= bound

        import resource

        own_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(f"# {machine()}")
        print(f"# page cache: {'warm' if args.warm else 'base shards dropped before every run'}; "
              f"merge and copy: median of {args.repeat} runs, PEFT: {args.peft_repeat} run(s); "
              f"total {time.perf_counter() - started:.0f} s, the benchmark's own peak RSS {own_rss / MB:,.0f} MB")
        rows = [
            ("checkpoint", f"{shard_bytes / GB:.2f} GB", (
                f"{len(shards)} shards; Qwen3.5 layout (`Qwen3_5ForConditionalGeneration`), "
                f"{layers} layers (3 linear-attention, 1 full), hidden {text.hidden_size}, intermediate {text.intermediate_size}, "
                f"vocabulary {text.vocab_size:,}, bf16, tiny vision tower, `mtp.*` head")),
            ("largest shard", f"{largest / MB:,.0f} MB", ""),
            ("adapter", f"{adapter_bytes / MB:,.0f} MB", f"LoRA r={args.rank}, alpha {args.alpha}, {modules} modules, float32"),
            ("memory bound", f"{bound / MB:,.0f} MB", f"largest shard + adapter + {ALLOWANCE_MB} MB"),
            ("`apto-release merge` peak RSS", f"{merge_rss / MB:,.0f} MB",
             f"{'within' if within else 'OVER'} the bound ({merge_rss / bound:.0%} of it); the largest of {args.repeat} runs"),
            ("PEFT `merge_and_unload` peak RSS", f"{peft_rss / MB:,.0f} MB", f"{peft_rss / merge_rss:.1f}x the merge's"),
            ("`apto-release merge` (CLI, process start included)", f"{shard_bytes / MB / merge_s:,.0f} MB/s",
             f"{merge_s:.1f} s" + (f"; {statistics.median(own):.1f} s by its own timer" if own else "")
             + (f"; {rewritten.group(1)} shards rewritten, {rewritten.group(2)} copied as files" if rewritten else "")),
            ("copy of the shards (`shutil.copyfile` + `fsync`, fresh process)", f"{shard_bytes / MB / copy_s:,.0f} MB/s",
             f"{copy_s:.1f} s; the merge takes {merge_s / copy_s:.1f}x as long"),
            ("PEFT: load bf16, `merge_and_unload`, `save_pretrained`", f"{shard_bytes / MB / peft_s:,.0f} MB/s",
             f"{peft_s:.1f} s; {peft_s / merge_s:.1f}x the merge's time"),
            ("merge vs PEFT", f"max abs diff {check['max_abs_peft']:.3g}",
             f"{check['targeted']} merged tensors, {check['elements'] / 1e6:.1f} M values: "
             + ("bit-identical" if not check["differ_peft"] else
                f"{check['differ_peft'] / check['elements']:.2%} differ, by at most {check['ulps_peft']} bf16 ulp")
             + f"; the largest change from the base is {check['max_delta']:.3g}"),
            ("merge vs float32 formula", f"max abs diff {check['max_abs_formula']:.3g}",
             "`bf16(base + alpha/r * B @ A)` computed in float32; "
             + ("identical" if check["max_abs_formula"] == 0 else "NOT identical")
             + f"; {check['untouched']} untouched tensors {'byte-identical' if check['untouched_equal'] else 'DIFFER'} in both outputs"),
            ("transformers loads the base", f"{len(loading.get('missing_keys', []))} missing keys",
             (f"{len(unexpected)} unexpected ({'all `mtp.*`' if all(k.startswith('mtp.') for k in unexpected) else ', '.join(unexpected[:3])})"
              if unexpected else "none unexpected reported (transformers skips `mtp.*` silently)") + "; "
             f"`mtp.*` kept by the merge: {'yes' if check['mtp_in_ours'] else 'no'}, by PEFT: {'yes' if check['mtp_in_peft'] else 'no'}"),
        ]
        print("\n| what | value | note |\n|---|---:|---|")
        for row in rows:
            print(f"| {row[0]} | {row[1]} | {row[2]} |")
        if not within:
            sys.exit(1)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

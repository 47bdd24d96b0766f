"""Benchmark of the GGUF converter: peak memory and throughput on a multi-GB checkpoint, beside a plain read.

Run by hand (never in CI):  python benchmarks/bench_gguf.py [--work DIR] [--repeats 3] [--size-gb 2] [--cold]

What it does:

1. Builds, once, in ``--work DIR`` (default ``/tmp/apto-bench-gguf``; reused by later runs with the
   same options), a synthetic Qwen3 checkpoint of at least ``--size-gb`` GB in the Hub's layout:
   ``config.json`` (``Qwen3ForCausalLM``, Qwen3-4B's widths: hidden 2560, intermediate 9728, 32
   query / 8 key-value heads of 128, vocabulary 151,936, tied embeddings; as many layers as reach
   the size), the tokenizer files of ``apto_release.testing.build_tiny_qwen3`` (the converter pads
   the GGUF vocabulary to ``vocab_size`` with ``[PAD<id>]`` tokens), bf16 safetensors shards of at
   most 1 GB (greedy, as ``save_pretrained(max_shard_size="1GB")``) and
   ``model.safetensors.index.json``. Names and shapes come from a model built on the ``meta``
   device; values (small normals from a seeded numpy generator, norms around 1) are drawn and
   written a block of rows at a time, so the build never holds a whole tensor. The embedding
   (151,936 x 2560, 778 MB in bf16) is the largest tensor, as in the real model.
2. Measures, each in a fresh process started by a fresh probe process (which reads the child's
   ``ru_maxrss`` from ``RUSAGE_CHILDREN``), ``--repeats`` times, interleaved: (a) a plain read of
   every tensor of the shards with the project's ``ShardReader`` (the reader the converter uses:
   the baseline); (b) ``apto_release.gguf.convert.convert(..., quant="F16")``; (c) the same with
   ``quant="Q8_0"``. The library function is called, not the CLI, so no llama.cpp check runs.
   The converted files are removed after each run; the checkpoint is kept.
3. Page cache: before every run the shards are read once, front to back, by the benchmark itself,
   so every run (baseline included) starts with them cached and measures the CPU cost, not the
   disk. ``--cold`` instead drops them from the cache (``posix_fadvise(DONTNEED)``) before every
   run, so each run reads from disk.
4. Prints a Markdown table: medians of wall seconds (process start and imports included: what a
   user waits for) and of each child's own timer, input MB/s, time relative to the plain read,
   output size, peak RSS (median and largest), and the memory bound of the issue, "a few times the
   largest tensor plus 500 MB", taken as 4 x the largest tensor (bf16 bytes) + 500 MB. Exits 1
   when a run exceeds it.

MB and GB are 10^6 and 10^9 bytes.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_merge import drop_cache, machine, run_timed  # noqa: E402  (shared with the merge benchmark)

MB = 1e6
GB = 1e9
SHARD_MAX = 1 * GB
CHUNK_VALUES = 16 * 2**20  # values drawn and written at a time by the build
FORMAT = 1  # bump when the checkpoint's layout changes, so a cached one is rebuilt

#: Qwen3-4B's widths (its config.json); the layer count is chosen for the size.
HPARAMS = {
    "hidden_size": 2560,
    "intermediate_size": 9728,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 151936,
    "max_position_embeddings": 40960,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0},
    "tie_word_embeddings": True,
    "hidden_act": "silu",
}

# ---------------------------------------------------------------------------------------------
# The checkpoint


def tensor_plan(layers: int) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every stored tensor of a ``Qwen3ForCausalLM`` with ``layers`` layers, from a ``meta`` model."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(**HPARAMS, num_hidden_layers=layers)
    with torch.device("meta"):
        model = Qwen3ForCausalLM(config)
    plan = [(name, tuple(t.shape)) for name, t in model.state_dict().items()]
    return [(n, s) for n, s in plan if not (HPARAMS["tie_word_embeddings"] and n == "lm_head.weight")]


def plan_bytes(plan) -> int:
    return sum(2 * math.prod(shape) for _, shape in plan)  # bf16


def split_greedy(plan, limit: float) -> list[list[tuple[str, tuple[int, ...]]]]:
    """Consecutive runs of the plan of at most ``limit`` bytes each (a larger tensor gets its own)."""
    shards: list[list] = [[]]
    size = 0
    for name, shape in plan:
        nbytes = 2 * math.prod(shape)
        if shards[-1] and size + nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    return shards


def draw_chunks(name: str, shape: tuple[int, ...], rng):
    """The bf16 bytes of one tensor, a block of rows at a time: norms around 1, the rest N(0, 0.02)."""
    import numpy as np
    import torch

    from apto_release.merge.shards import tensor_bytes

    total = math.prod(shape)
    row = math.prod(shape[1:]) if len(shape) > 1 else total
    step = max(1, CHUNK_VALUES // row) * row
    for start in range(0, total, step):
        values = rng.standard_normal(min(step, total - start), dtype=np.float32)
        if name.endswith("norm.weight"):
            values *= 0.05
            values += 1.0
        else:
            values *= 0.02
        yield tensor_bytes(torch.from_numpy(values).to(torch.bfloat16))


def build_checkpoint(out: Path, layers: int, seed: int) -> None:
    """Config, tokenizer files, shards and index of the synthetic checkpoint, in a fresh ``out``."""
    import numpy as np

    from apto_release.merge.shards import (
        INDEX_NAME,
        ShardWriter,
        TensorSpec,
        shard_file_name,
        write_index,
    )
    from apto_release.testing import build_tiny_qwen3

    plan = tensor_plan(layers)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="bench-gguf-tiny-") as scratch:
        tiny = build_tiny_qwen3(Path(scratch) / "tiny", seed=seed)
        tmp.mkdir(parents=True)
        for item in tiny.iterdir():  # tokenizer files, generation config
            if item.suffix != ".safetensors" and item.name not in (INDEX_NAME, "config.json"):
                shutil.copy2(item, tmp / item.name)
        config = json.loads((tiny / "config.json").read_text())
    config.update(HPARAMS, num_hidden_layers=layers, architectures=["Qwen3ForCausalLM"], dtype="bfloat16")
    config.pop("rope_theta", None)
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    rng = np.random.default_rng(seed)
    shards = split_greedy(plan, SHARD_MAX)
    weight_map = {}
    for k, run in enumerate(shards, start=1):
        filename = shard_file_name(k, len(shards))
        run = sorted(run)  # safetensors lays out tensors of one dtype by name
        specs = [TensorSpec(name, "BF16", shape) for name, shape in run]
        with ShardWriter(tmp / filename, specs, metadata={"format": "pt"}) as writer:
            for name, shape in run:
                writer.write(name, draw_chunks(name, shape, rng))
        weight_map.update(dict.fromkeys((name for name, _ in run), filename))
    write_index(tmp / INDEX_NAME, dict(sorted(weight_map.items())), total_size=plan_bytes(plan),
                metadata={"total_parameters": sum(math.prod(s) for _, s in plan)})
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


# ---------------------------------------------------------------------------------------------
# Runs

READ = (
    "import json, sys, time\n"
    "t = time.perf_counter()\n"
    "from apto_release.merge.shards import CheckpointIndex, ShardReader\n"
    "index = CheckpointIndex.from_dir(sys.argv[1])\n"
    "total = 0\n"
    "for shard in index.shards:\n"
    "    with ShardReader(index.headers[shard]) as reader:\n"
    "        for info in index.tensors_in(shard):\n"
    "            total += reader.get_tensor(info.name).nbytes\n"
    "print(json.dumps({'seconds': time.perf_counter() - t, 'bytes_in': total}))\n"
)

CONVERT = (
    "import json, sys, time\n"
    "t = time.perf_counter()\n"
    "from apto_release.gguf.convert import convert\n"
    "r = convert(sys.argv[1], sys.argv[2], quant=sys.argv[3], name='Bench')\n"
    "print(json.dumps({'seconds': time.perf_counter() - t, 'convert_seconds': r.seconds, 'bytes_out': r.bytes,\n"
    "                  'tensors': r.tensors, 'types': r.tensor_types}))\n"
)


def run_probed(args: list[str]) -> dict:
    """``bench_merge.run_timed`` (wall seconds, peak RSS), plus the child's last JSON line as ``child``."""
    result = run_timed(args)
    result["child"] = json.loads(result["stdout"].strip().splitlines()[-1])
    return result


def warm(paths: list[Path]) -> None:
    """Read the files front to back, so that their pages are in the cache."""
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            buffer = bytearray(8 << 20)
            while f.readinto(buffer):
                pass


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/apto-bench-gguf"),
                        help="folder of the cached checkpoint and the (removed) outputs (default /tmp/apto-bench-gguf)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement; medians (default 3)")
    parser.add_argument("--size-gb", type=float, default=2.0, help="smallest checkpoint size, in GB (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cold", action="store_true", help="drop the shards from the page cache before every run (default: read them into it)")
    args = parser.parse_args()
    if args.repeats < 1 or args.size_gb <= 0:
        parser.error("--repeats must be at least 1 and --size-gb positive")
    started = time.perf_counter()

    one, two = plan_bytes(tensor_plan(1)), plan_bytes(tensor_plan(2))
    layers = max(1, math.ceil((args.size_gb * GB - (one - (two - one))) / (two - one)))
    plan = tensor_plan(layers)
    assert plan_bytes(plan) >= args.size_gb * GB

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    base, out = work / "checkpoint", work / "gguf"
    params = {"format": FORMAT, "layers": layers, "seed": args.seed, "hparams": HPARAMS, "shard_max": SHARD_MAX}
    marker = work / "bench_params.json"
    build_s = None
    if marker.exists() and json.loads(marker.read_text()) == params and base.is_dir():
        print(f"# reusing the checkpoint in {base}", file=sys.stderr)
    else:
        marker.unlink(missing_ok=True)
        print(f"# building a {plan_bytes(plan) / GB:.2f} GB checkpoint ({layers} layers) in {base} ...", file=sys.stderr)
        t = time.perf_counter()
        build_checkpoint(base, layers, args.seed)
        build_s = time.perf_counter() - t
        marker.write_text(json.dumps(params))
    shards = sorted(base.glob("*.safetensors"))
    size = sum(p.stat().st_size for p in shards)
    largest_name, largest_shape = max(plan, key=lambda item: math.prod(item[1]))
    largest = 2 * math.prod(largest_shape)
    bound = 4 * largest + 500 * MB
    print(f"# checkpoint: {size / GB:.2f} GB in {len(shards)} shards; largest tensor {largest_name} "
          f"{largest / MB:,.0f} MB; bound {bound / MB:,.0f} MB", file=sys.stderr)

    commands = {
        "plain read (`ShardReader`, every tensor; baseline)": [sys.executable, "-c", READ, str(base)],
        "`convert(quant=\"F16\")`": [sys.executable, "-c", CONVERT, str(base), str(out), "F16"],
        "`convert(quant=\"Q8_0\")`": [sys.executable, "-c", CONVERT, str(base), str(out), "Q8_0"],
    }
    runs: dict[str, list[dict]] = {name: [] for name in commands}
    try:
        for i in range(args.repeats):  # interleaved, so that a noisy minute hits every row
            for name, command in commands.items():
                shutil.rmtree(out, ignore_errors=True)
                drop_cache(shards) if args.cold else warm(shards)
                result = run_probed(command)
                shutil.rmtree(out, ignore_errors=True)
                runs[name].append(result)
                print(f"# run {i + 1}: {name}: {result['seconds']:.1f} s, peak {result['rss'] / MB:,.0f} MB", file=sys.stderr)
    finally:
        shutil.rmtree(out, ignore_errors=True)

    base_s = statistics.median(r["seconds"] for r in runs[next(iter(runs))])
    print(f"Machine: {machine(('torch', 'gguf', 'numpy', 'safetensors'))}")
    print(f"Checkpoint: synthetic Qwen3 (`Qwen3ForCausalLM`), {layers} layers, hidden {HPARAMS['hidden_size']}, "
          f"intermediate {HPARAMS['intermediate_size']}, {HPARAMS['num_attention_heads']}/{HPARAMS['num_key_value_heads']} heads "
          f"of {HPARAMS['head_dim']}, vocabulary {HPARAMS['vocab_size']:,}, tied embeddings, bf16; "
          f"{size / GB:.2f} GB in {len(shards)} shards" + (f" (built in {build_s:.0f} s)" if build_s else ""))
    print(f"Largest tensor: `{largest_name}` {'x'.join(map(str, largest_shape))}, {largest / MB:,.0f} MB; "
          f"bound 4 x largest + 500 MB = {bound / MB:,.0f} MB")
    print(f"Medians of {args.repeats} interleaved runs, each in a fresh process; "
          + ("shards dropped from the page cache before every run (`--cold`)." if args.cold
             else "shards read once into the page cache before every run (warm: CPU cost, not disk).")
          + " Wall time includes process start and imports.\n")
    print("| run | wall s | own timer s | input MB/s | vs plain read | output | peak RSS (median / max) | within bound |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    over = False
    for name, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        own = statistics.median(r["child"]["seconds"] for r in results)
        rss_med = statistics.median(r["rss"] for r in results)
        rss_max = max(r["rss"] for r in results)
        written = results[-1]["child"].get("bytes_out")
        within = rss_max <= bound
        over |= not within
        print(f"| {name} | {seconds:.1f} | {own:.1f} | {size / MB / seconds:,.0f} | {seconds / base_s:.2f}x | "
              f"{f'{written / GB:.2f} GB' if written else '–'} | {rss_med / MB:,.0f} / {rss_max / MB:,.0f} MB | "
              f"{'yes' if within else 'NO'} ({rss_max / bound:.0%}) |")
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    if over:
        sys.exit(1)


if __name__ == "__main__":
    main()

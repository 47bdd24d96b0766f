"""Benchmark of `gguf convert`: peak memory and throughput on a multi-GB checkpoint, beside a plain read.

Run by hand (never in CI):  python benchmarks/bench_gguf.py [--size-gb 2] [--shards 4] [--repeat 3] [--keep DIR]

What it does, in a temporary folder (or ``--keep DIR``, reused by a later run with the same options):

1. Builds the synthetic bf16 Qwen3.5 checkpoint of ``bench_merge.py`` (the Hub's layout: Gated
   DeltaNet and gated full-attention layers, hidden size 2048, a vocabulary of 32,768, a tiny
   vision tower, an ``mtp.*`` head; as many layers as reach ``--size-gb``), one shard in memory at
   a time.
2. Measures, each in a fresh process, wall time and peak resident memory (the child's
   ``ru_maxrss``, read by a probe process): (a) a plain read of every tensor of the shards with
   the project's ``ShardReader`` (torch tensors, as the converter reads them: the baseline);
   (b) ``apto-release gguf convert --quant F16 --no-verify``; (c) the same with ``--quant Q8_0``.
   The shards are dropped from the page cache before every run (``posix_fadvise(DONTNEED)``), so
   each run reads them from disk; the runs are interleaved and repeated, and medians are quoted.
3. Prints a Markdown table: seconds, input MB/s, time relative to the plain read, peak RSS, and
   the memory bound of the issue, "a few times the largest tensor plus 500 MB", taken as
   4 x the largest tensor (bf16 bytes) + 500 MB.

Times include process start (and the torch import): that is what a user waits for. MB and GB are
10^6 and 10^9 bytes.
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

from bench_merge import (  # noqa: E402  (the checkpoint builder and the process probe are shared)
    CLI,
    GB,
    MB,
    build_checkpoint,
    drop_cache,
    machine,
    make_config,
    plan_bytes,
    run_timed,
    tensor_plan,
)

READ = (
    "import sys\n"
    "from apto_release.merge.shards import CheckpointIndex, ShardReader\n"
    "index = CheckpointIndex.from_dir(sys.argv[1])\n"
    "total = 0\n"
    "for shard in index.shards:\n"
    "    with ShardReader(index.headers[shard]) as reader:\n"
    "        for info in index.tensors_in(shard):\n"
    "            total += reader.get_tensor(info.name).numel()\n"
    "print(total)\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=2.0, help="smallest checkpoint size, in GB (default 2)")
    parser.add_argument("--shards", type=int, default=4, help="number of shards (default 4)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement; medians (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, metavar="DIR", help="work in DIR and keep the checkpoint for later runs")
    args = parser.parse_args()
    if args.shards < 1 or args.repeat < 1:
        parser.error("--shards and --repeat must be at least 1")
    started = time.perf_counter()

    from apto_release.testing import build_japanese_tokenizer

    layers = 4
    while plan_bytes(tensor_plan(make_config(layers))) < args.size_gb * GB:
        layers += 4

    work = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="bench-gguf-"))
    work.mkdir(parents=True, exist_ok=True)
    base, out = work / "base", work / "gguf"
    params = {"layers": layers, "shards": args.shards, "seed": args.seed}
    marker = work / "bench_params.json"
    try:
        tokenizer = build_japanese_tokenizer(seed=args.seed)
        config = make_config(layers, tokenizer)
        plan = tensor_plan(config)
        if marker.exists() and json.loads(marker.read_text()) == params and base.is_dir():
            build_s = None
            print(f"# reusing the checkpoint in {work}", file=sys.stderr)
        else:
            marker.unlink(missing_ok=True)
            shutil.rmtree(base, ignore_errors=True)
            t = time.perf_counter()
            build_checkpoint(base, config, tokenizer, plan, args.shards, args.seed)
            build_s = time.perf_counter() - t
            marker.write_text(json.dumps(params))
        shards = sorted(base.glob("*.safetensors"))
        size = sum(p.stat().st_size for p in shards)
        largest = max(math.prod(shape) * 2 for _, shape, _ in plan)  # bf16 bytes
        bound = 4 * largest + 500 * MB

        commands = {
            "plain read (ShardReader)": [sys.executable, "-c", READ, str(base)],
            "convert F16": [*CLI, "gguf", "convert", str(base), "-o", str(out), "--quant", "F16", "--no-verify", "--name", "Bench"],
            "convert Q8_0": [*CLI, "gguf", "convert", str(base), "-o", str(out), "--quant", "Q8_0", "--no-verify", "--name", "Bench"],
        }
        runs: dict[str, list[dict]] = {name: [] for name in commands}
        out_bytes: dict[str, int] = {}
        for _ in range(args.repeat):
            for name, command in commands.items():
                shutil.rmtree(out, ignore_errors=True)
                drop_cache(shards)
                runs[name].append(run_timed(command))
                if out.is_dir():
                    out_bytes[name] = sum(p.stat().st_size for p in out.glob("*.gguf"))
        shutil.rmtree(out, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    read_s = statistics.median(r["seconds"] for r in runs["plain read (ShardReader)"])
    from importlib.metadata import version

    print(f"Machine: {machine()}, gguf {version('gguf')}")
    print(
        f"Checkpoint: synthetic Qwen3.5, {layers} layers, bf16, {len(shards)} shards, {size / GB:.2f} GB; "
        f"largest tensor {largest / MB:,.0f} MB; bound 4 x largest + 500 MB = {bound / MB:,.0f} MB"
        + (f"; built in {build_s:.0f} s" if build_s else "")
    )
    print(f"Medians of {args.repeat} runs, each in a fresh process, shards dropped from the page cache before each.\n")
    print("| run | seconds | input MB/s | time vs plain read | output GB | peak RSS MB | within bound |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        rss = max(r["rss"] for r in results)
        written = f"{out_bytes[name] / GB:.2f}" if name in out_bytes else "–"
        within = "yes" if rss <= bound else "NO"
        print(
            f"| {name} | {seconds:.1f} | {size / MB / seconds:,.0f} | {seconds / read_s:.2f}x | {written} | {rss / MB:,.0f} | {within} |"
        )
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

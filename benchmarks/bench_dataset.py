"""Benchmark of the dataset side: validate, sample and --help, from the command line.

Run by hand (never in CI):  python benchmarks/bench_dataset.py [--repeat 5]

The machine is shared and noisy, so every figure is a median of several runs, and the JSON Schema
baseline runs in the same session as the validator it is compared with. Process start is included
for CLI timings (that is what a user waits for). Peak memory is the child's maximum resident set.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = [sys.executable, "-m", "apto_release"]


def run_timed(args: list[str], *, ok_codes=(0,)) -> tuple[float, int]:
    """(wall seconds, peak RSS in MB) of one command in a fresh process."""
    probe = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
        "dt = time.perf_counter() - t\n"
        "print(dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, code)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, check=True).stdout.split()
    seconds, rss, code = float(out[0]), float(out[1]), int(out[2])
    if code not in ok_codes:
        raise SystemExit(f"{' '.join(args)} exited {code}")
    return seconds, rss


def median_run(args: list[str], repeat: int, **kw) -> tuple[float, float]:
    runs = [run_timed(args, **kw) for _ in range(repeat)]
    return statistics.median(r[0] for r in runs), max(r[1] for r in runs)


def jsonschema_seconds(path: Path) -> float:
    """Check every record of ``path`` against the published schema with the jsonschema package."""
    import jsonschema

    from apto_release.schema import published_schema

    start = time.perf_counter()
    validator = jsonschema.Draft202012Validator(published_schema())
    with open(path, encoding="utf-8") as f:
        bad = sum(not validator.is_valid(json.loads(line)) for line in f)
    elapsed = time.perf_counter() - start
    assert bad == 0
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--big", type=int, default=180_000, help="records in the large file")
    args = parser.parse_args()

    from apto_release.dataset.example import write_example_data

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small, big = tmp / "18k.jsonl", tmp / "big.jsonl"
        write_example_data(small, n=18_000)
        write_example_data(big, n=args.big)
        size_kb = small.stat().st_size / 18_000 / 1024
        print(f"# records: 18,000 of {size_kb:.2f} KB on average; {args.big:,} in the large file; median of {args.repeat} runs")
        print(f"# python {sys.version.split()[0]}, {os.cpu_count()} CPUs")

        help_s, _ = median_run([*CLI, "--help"], args.repeat)
        v18, v18_rss = median_run([*CLI, "validate", str(small)], args.repeat)
        js = statistics.median(jsonschema_seconds(small) for _ in range(max(1, args.repeat // 2)))
        vbig, vbig_rss = median_run([*CLI, "validate", str(big)], max(1, args.repeat // 2))
        sample_s, sample_rss = median_run([*CLI, "sample", str(small), "-n", "500", "-o", str(tmp / "s"), "--overwrite"], args.repeat)

        rows = [
            ("apto-release --help", f"{help_s:.2f} s", ""),
            ("validate 18,000 (CLI, process start included)", f"{v18:.2f} s", f"peak {v18_rss:.0f} MB"),
            ("jsonschema, same 18,000 records (in-process, no process start)", f"{js:.2f} s", f"validate is {js / v18:.1f}x faster"),
            (f"validate {args.big:,} (CLI)", f"{vbig:.2f} s", f"{vbig / v18:.1f}x the 18,000 time; peak {vbig_rss:.0f} MB"),
            ("sample 18,000 -> 500 (CLI, validation included)", f"{sample_s:.2f} s", f"peak {sample_rss:.0f} MB"),
        ]
        print("\n| what | median | note |\n|---|---:|---|")
        for row in rows:
            print(f"| {row[0]} | {row[1]} | {row[2]} |")


if __name__ == "__main__":
    main()

"""Benchmark of the release command's bookkeeping: what a re-run costs when nothing changed.

Run by hand (never in CI):  python benchmarks/bench_release.py [--size-gb 2] [--files 4] [--repeat 3] [--no-demo]

What it does, in a temporary folder (or ``--keep DIR``):

1. Writes ``--files`` files of random bytes, ``--size-gb`` GB together: a merged checkpoint's
   shards, as far as hashing is concerned.
2. Measures, interleaved, medians of ``--repeat``: (a) a plain read of the files (the baseline);
   (b) the release's hashing of them with an empty cache (``ReleaseState.listing``: SHA-256, and
   git's SHA-1 under 10 MB, in one read); (c) the same with the cache the state file keeps (path,
   size, modification time, inode). The files are dropped from the page cache before (a) and (b)
   (``--warm`` keeps them), so both read from disk, as a re-run after hours of training would.
3. Unless ``--no-demo``: runs ``apto-release demo`` once (small: 2,000 records, 4 steps) and then
   again ``--repeat`` times, each a fresh process: the first run does everything, the others find
   every stage up to date and only compare with the local Hub. Process start is included.

The machine is shared and noisy: compare the ratios within one run. MB and GB are 10^6 and 10^9 bytes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_merge import drop_cache, machine  # noqa: E402  (shared with the merge benchmark)

GB = 1e9
CHUNK = 64 << 20


def write_files(folder: Path, total: float, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    size = int(total / count)
    files = []
    for i in range(count):
        path = folder / f"model-{i + 1:05d}-of-{count:05d}.safetensors"
        with open(path, "wb") as f:
            left = size
            while left:
                n = min(CHUNK, left)
                f.write(os.urandom(n))
                left -= n
        files.append(path)
    return files


def plain_read(files: list[Path]) -> None:
    for path in files:
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warm", action="store_true", help="keep the files in the page cache")
    parser.add_argument("--no-demo", action="store_true", help="leave out the demo's first run and re-runs")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()

    from apto_release.release.state import ReleaseState

    with tempfile.TemporaryDirectory(prefix="bench-release-") as tmp:
        root = args.keep or Path(tmp)
        files = write_files(root / "merged", args.size_gb * GB, args.files)
        size = sum(p.stat().st_size for p in files)
        time.sleep(2.5)  # older than the cache's racy window, as outputs of an earlier run are
        cached = ReleaseState(root / "state.json")
        cached.listing(files, root)
        runs: dict[str, list[float]] = {"read": [], "cold": [], "cached": []}
        for _ in range(args.repeat):
            for name, action in (
                ("read", lambda: plain_read(files)),
                ("cold", lambda: ReleaseState(root / "empty.json").listing(files, root)),
                ("cached", lambda: cached.listing(files, root)),
            ):
                if not args.warm and name != "cached":
                    drop_cache(files)
                runs[name].append(timed(action))
        median = {k: statistics.median(v) for k, v in runs.items()}

        demo: dict[str, float] = {}
        if not args.no_demo:
            command = [sys.executable, "-m", "apto_release", "demo", "-o", str(root / "demo"), "-n", "2000", "--sample-size",
                       "100", "--steps", "4", "--progress", "off"]
            demo["first"] = timed(lambda: subprocess.run(command, check=True, capture_output=True))
            demo["again"] = statistics.median(timed(lambda: subprocess.run(command, check=True, capture_output=True))
                                              for _ in range(args.repeat))

    print(f"Machine: {machine(('huggingface_hub',))}")
    print(f"{args.files} files, {size / GB:.2f} GB, {'page cache warm' if args.warm else 'read from disk'}; medians of {args.repeat}\n")
    print("| what | seconds | vs plain read |")
    print("|---|---:|---:|")
    print(f"| plain read of the files (baseline) | {median['read']:.2f} | 1.00x |")
    print(f"| hashing them, empty cache (SHA-256) | {median['cold']:.2f} | {median['cold'] / median['read']:.2f}x |")
    print(f"| hashing them, from the state file's cache | {median['cached']:.4f} | {median['cached'] / median['read']:.4f}x |")
    if demo:
        print("\n| `apto-release demo` (2,000 records, 4 steps) | seconds |")
        print("|---|---:|")
        print(f"| first run: every stage | {demo['first']:.1f} |")
        print(f"| re-run: every stage up to date (median) | {demo['again']:.1f} |")


if __name__ == "__main__":
    main()

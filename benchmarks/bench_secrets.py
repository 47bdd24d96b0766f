"""Benchmark of the push's credential scan (``release.secrets``) on the files a release publishes.

Run by hand (never in CI):  python benchmarks/bench_secrets.py [--repeat 5]

Files built in a temporary folder: a 12 MB one-line ``tokenizer.json``-like text file (the largest
text file of a Qwen3.5 release), a 100 MB JSONL text file, a sparse 16 GB safetensors file with a
100 KB header and a sparse 8 GB GGUF file whose metadata holds a 150,000-token vocabulary. Each
figure is the median of ``--repeat`` scans (the page cache warm after the first).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import string
import struct
import tempfile
import time
from pathlib import Path

from apto_release.hub.secrets import scan_file


def _words(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(string.ascii_letters + "Ġ_-", k=rng.randint(2, 12))) for _ in range(n)]


def build(folder: Path) -> dict[str, Path]:
    files = {}
    vocab = _words(150_000)
    tok = folder / "tokenizer.json"
    tok.write_text(json.dumps({"model": {"vocab": {w: i for i, w in enumerate(vocab)}, "merges": [f"{a} {b}" for a, b in zip(vocab, vocab[1:])]}}))
    files["tokenizer.json (one line)"] = tok
    lines = folder / "records.jsonl"
    rng = random.Random(1)
    with open(lines, "w") as f:
        while f.tell() < 100 << 20:
            f.write(json.dumps({"prompt": " ".join(rng.choices(vocab, k=40)), "response": " ".join(rng.choices(vocab, k=60))}) + "\n")
    files["records.jsonl (100 MB)"] = lines
    st = folder / "model.safetensors"
    header = json.dumps({f"model.layers.{i}.w": {"dtype": "BF16", "shape": [4096, 4096], "data_offsets": [0, 1]} for i in range(1000)}).encode()
    with open(st, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(16 << 30)
    files["model.safetensors (16 GB sparse)"] = st
    gguf = folder / "model.gguf"
    with open(gguf, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, 0, 1))
        key = b"tokenizer.ggml.tokens"
        f.write(struct.pack("<Q", len(key)) + key + struct.pack("<IIQ", 9, 8, len(vocab)))
        for w in vocab:
            b = w.encode()
            f.write(struct.pack("<Q", len(b)) + b)
        f.truncate(8 << 30)
    files["model.gguf (8 GB sparse, 150k-token vocab)"] = gguf
    return files


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in build(Path(tmp)).items():
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                hits = scan_file(path)
                times.append(time.perf_counter() - start)
            assert hits == [], hits
            print(f"{name:<45} {statistics.median(times) * 1000:8.1f} ms")


if __name__ == "__main__":
    main()

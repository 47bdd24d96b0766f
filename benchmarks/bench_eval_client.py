"""Benchmark of the engine client: its own cost per request, and generation through llama.cpp's
server with ``parallel`` 4 against 1.

Run by hand (never in CI):  python benchmarks/bench_eval_client.py [--requests 2000] [--repeat 3]

1. The scripted OpenAI-compatible server answers instantly, in a separate process (so it does not
   share our GIL). We time ``ChatClient.complete`` one request after another: the median wall time
   per request (client + loopback + the stdlib server) and the client thread's CPU time per request
   (what the client itself costs), beside a plain ``http.client`` POST of the same body (the floor).
2. A tiny Qwen3 GGUF (hidden size 256) served by llama-cpp-python's server through ``serve()``: the
   same prompts with ``parallel`` 1 and 4, alternated, median generated tokens per second.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apto_release.evals.client import ChatClient, Endpoint, Sampling  # noqa: E402

SERVER = ("import time\nfrom apto_release.testing.openai_server import ScriptedServer\n"
          "s = ScriptedServer(lambda m: 'はい。', model='m').start()\nprint(s.url, flush=True)\ntime.sleep(3600)\n")
MESSAGES = [{"role": "user", "content": "日本の首都はどこですか。"}]


def client_overhead(requests: int) -> dict[str, float]:
    root = Path(__file__).resolve().parents[1]
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(root)})
    try:
        url = server.stdout.readline().strip()
        with ChatClient(Endpoint(url, "m")) as client:
            for _ in range(50):  # warm the connection and the code paths
                client.complete(MESSAGES)
            walls, cpus = [], []
            for _ in range(requests):
                w, c = time.perf_counter(), time.thread_time()
                client.complete(MESSAGES, Sampling(max_tokens=16))
                cpus.append(time.thread_time() - c)
                walls.append(time.perf_counter() - w)
        parts = urlsplit(url)
        body = json.dumps({"model": "m", "messages": MESSAGES, "max_tokens": 16}).encode()
        connection = http.client.HTTPConnection(parts.hostname, parts.port)
        raw = []
        for i in range(requests + 50):
            w = time.perf_counter()
            connection.request("POST", parts.path + "/chat/completions", body,
                               {"Content-Type": "application/json", "Authorization": "Bearer EMPTY"})
            json.loads(connection.getresponse().read())
            if i >= 50:
                raw.append(time.perf_counter() - w)
        connection.close()
    finally:
        server.kill()
        server.wait()
    return {"wall_us": statistics.median(walls) * 1e6, "client_cpu_us": statistics.median(cpus) * 1e6,
            "raw_http_us": statistics.median(raw) * 1e6}


def generation(repeat: int, prompts: int, max_tokens: int) -> dict[str, float]:
    from apto_release.evals.serve import serve
    from apto_release.gguf.convert import convert
    from apto_release.testing.models import build_tiny_qwen3

    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_qwen3(Path(tmp) / "BenchQwen3", config={"hidden_size": 256, "intermediate_size": 512})
        gguf = convert(model, Path(tmp) / "gguf", quant="F16").path
        requests = [([{"role": "user", "content": f"質問{i}について説明してください。"}],
                     Sampling(max_tokens=max_tokens, seed=i)) for i in range(prompts)]
        rates: dict[int, list[float]] = {1: [], 4: []}
        with serve(gguf, n_ctx=2048, threads=2) as endpoint, ChatClient(endpoint) as client:
            list(client.complete_many(requests[:2], parallel=1))  # warm up
            for _ in range(repeat):
                for parallel in (1, 4):
                    start = time.perf_counter()
                    tokens = sum(r.usage["completion_tokens"] for _, r in client.complete_many(requests, parallel=parallel))
                    rates[parallel].append(tokens / (time.perf_counter() - start))
    one, four = statistics.median(rates[1]), statistics.median(rates[4])
    return {"tokens_per_s_parallel_1": one, "tokens_per_s_parallel_4": four, "ratio_4_over_1": four / one}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    print(json.dumps({"client": client_overhead(args.requests),
                      "llama_cpp_server": generation(args.repeat, args.prompts, args.max_tokens)}, indent=2))


if __name__ == "__main__":
    main()

"""gguf.memory: the memory to run a GGUF file at a context length, part by part, against the sizes
llama.cpp itself logs when it makes a context for the file (llama-cpp-python, in a subprocess)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytest.importorskip("llama_cpp")

from apto_release.gguf.convert import convert
from apto_release.gguf.memory import ModelShape, estimate
from apto_release.testing.models import build_tiny_qwen3, build_tiny_qwen35

MIB = 2**20
# Wider Gated DeltaNet heads than the default tiny model, so that the recurrent state shows in
# llama.cpp's log, which prints MiB with two decimals.
WIDE_DELTANET = {"linear_num_key_heads": 4, "linear_num_value_heads": 8, "linear_key_head_dim": 64, "linear_value_head_dim": 64}
LOGGED = {
    "kv_cache": re.compile(r"llama_kv_cache: size = +([\d.]+) MiB"),
    "recurrent": re.compile(r"llama_memory_recurrent: size = +([\d.]+) MiB"),
    "compute": re.compile(r"sched_reserve: +CPU compute buffer size = +([\d.]+) MiB"),
}


def llama_cpp_sizes(path, n_ctx: int) -> dict[str, float]:
    """What llama.cpp logs it allocated for a context of ``n_ctx`` (MiB, by part)."""
    code = ("import sys, llama_cpp; llama_cpp.Llama(sys.argv[1], n_ctx=int(sys.argv[2]), n_threads=1, "
            "n_gpu_layers=0, flash_attn=False, verbose=True)")
    log = subprocess.run([sys.executable, "-c", code, str(path), str(n_ctx)], capture_output=True, text=True, check=True).stderr
    return {part: float(m.group(1)) for part, pattern in LOGGED.items() if (m := pattern.search(log))}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("memory")
    qwen35 = build_tiny_qwen35(root / "Hybrid", vision=False, mtp=True, config=WIDE_DELTANET)
    qwen3 = build_tiny_qwen3(root / "Dense")
    return {"qwen35": convert(qwen35, root / "out", quant="F16").path, "qwen3": convert(qwen3, root / "out", quant="F16").path}


def test_the_shape_is_read_from_the_file(files):
    shape = ModelShape.from_gguf(files["qwen35"])
    # 3 Gated DeltaNet layers and 1 full-attention layer; the multi-token-prediction layer is not counted
    assert (shape.attention_layers, shape.recurrent_layers) == (1, 3)
    assert (shape.heads, shape.kv_heads, shape.key_length, shape.value_length) == (4, 2, 64, 64)
    assert (shape.conv_kernel, shape.state_size, shape.group_count, shape.inner_size) == (4, 64, 4, 8 * 64)
    dense = ModelShape.from_gguf(files["qwen3"])
    assert dense.recurrent_layers == 0 and dense.recurrent_state() == 0 and dense.attention_layers == 2


@pytest.mark.parametrize("kind, n_ctx", [("qwen35", 8192), ("qwen3", 2048)])
def test_each_part_is_what_llama_cpp_allocates(files, kind, n_ctx):
    ours = estimate([files[kind]], n_ctx)
    logged = llama_cpp_sizes(files[kind], n_ctx)
    assert ours.kv_cache / MIB == pytest.approx(logged["kv_cache"], abs=0.005)
    if kind == "qwen35":
        assert ours.recurrent > 0 and ours.recurrent / MIB == pytest.approx(logged["recurrent"], abs=0.005)
    else:
        assert "recurrent" not in logged and ours.recurrent == 0
    # the attention scores and mask of one layer dominate the compute buffer; the rest is small
    assert 0.8 <= ours.compute / MIB / logged["compute"] <= 1.0, (ours.compute / MIB, logged["compute"])
    assert ours.weights == files[kind].stat().st_size and ours.total == ours.weights + ours.kv_cache + ours.recurrent + ours.compute


def test_the_context_grows_the_cache_and_not_the_state(files):
    small, large = (estimate([files["qwen35"]], n) for n in (8192, 32768))
    assert large.kv_cache == 4 * small.kv_cache and large.recurrent == small.recurrent and large.weights == small.weights

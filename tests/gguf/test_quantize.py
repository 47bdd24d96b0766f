"""K-quants through llama.cpp's quantizer (llama-cpp-python, in a subprocess).

The model is the tiny Qwen3 widened to hidden size 256, so that its rows split into the K-quants'
256-value super-blocks and llama.cpp writes real Q4_K/Q5_K/Q6_K tensors rather than fallbacks.
"""

from __future__ import annotations

import pytest

gguf = pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

from apto_release.errors import BuildError, UsageError
from apto_release.gguf.convert import convert
from apto_release.gguf.quantize import quantize
from apto_release.testing.models import build_tiny_qwen3

WIDE = {"hidden_size": 256, "intermediate_size": 512, "head_dim": 64}


@pytest.fixture(scope="module")
def f16(tmp_path_factory):
    root = tmp_path_factory.mktemp("kquant")
    model = build_tiny_qwen3(root / "model", config=WIDE)
    return convert(model, root / "f16", quant="F16", name="Tiny").path


def types_of(path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}


@pytest.mark.parametrize(
    ("quant", "ffn_down", "attn_q", "file_type"),
    [
        # Q4_K_M: most matrices Q4_K; ffn_down and attn_v get Q6_K in some layers (llama.cpp's
        # use_more_bits: with 2 layers, the last one) and the output matrix is Q6_K.
        ("Q4_K_M", "Q6_K", "Q4_K", gguf.LlamaFileType.MOSTLY_Q4_K_M),
        ("Q5_K_M", "Q6_K", "Q5_K", gguf.LlamaFileType.MOSTLY_Q5_K_M),
        ("Q6_K", "Q6_K", "Q6_K", gguf.LlamaFileType.MOSTLY_Q6_K),
    ],
)
def test_k_quants_are_written_by_llama_cpp(f16, tmp_path, quant, ffn_down, attn_q, file_type):
    result = quantize(f16, tmp_path, f"Tiny-{quant}", quant)

    assert result.paths == (tmp_path / f"Tiny-{quant}.gguf",)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"Tiny-{quant}.gguf"]  # no staging left
    types = types_of(result.path)
    assert types["blk.0.attn_q.weight"] == attn_q
    assert types["blk.1.ffn_down.weight"] == ffn_down
    assert types["output.weight"] == "Q6_K"
    assert types["blk.0.attn_norm.weight"] == "F32"
    assert result.tensor_types[attn_q] >= 1
    reader = gguf.GGUFReader(result.path)
    assert int(reader.fields["general.file_type"].contents()) == file_type
    # The metadata travels: the tokenizer and the chat template are llama.cpp's copy of ours.
    source = gguf.GGUFReader(f16)
    for key in ("tokenizer.chat_template", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.pre", "general.name"):
        assert reader.fields[key].contents() == source.fields[key].contents()
    assert result.bytes < f16.stat().st_size / 2


def test_existing_output_is_kept_without_overwrite(f16, tmp_path):
    quantize(f16, tmp_path, "Tiny-Q4_K_M", "Q4_K_M")
    before = (tmp_path / "Tiny-Q4_K_M.gguf").stat().st_mtime_ns
    with pytest.raises(UsageError, match="exists"):
        quantize(f16, tmp_path, "Tiny-Q4_K_M", "Q4_K_M")
    assert (tmp_path / "Tiny-Q4_K_M.gguf").stat().st_mtime_ns == before
    quantize(f16, tmp_path, "Tiny-Q4_K_M", "Q4_K_M", overwrite=True)


def test_unknown_quant_is_a_usage_error(f16, tmp_path):
    with pytest.raises(UsageError, match="Q4_K_M"):
        quantize(f16, tmp_path, "Tiny-Q4_0", "Q4_0")


def test_a_broken_input_leaves_nothing(f16, tmp_path):
    broken = tmp_path / "in" / "Broken-F16.gguf"
    broken.parent.mkdir()
    broken.write_bytes(f16.read_bytes()[: f16.stat().st_size // 2])  # truncated mid tensor data
    out = tmp_path / "out"
    with pytest.raises(BuildError, match="llama.cpp's quantizer failed") as excinfo:
        quantize(broken, out, "Broken-Q4_K_M", "Q4_K_M")
    assert str(broken) in str(excinfo.value)
    assert list(out.iterdir()) == []

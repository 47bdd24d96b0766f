"""gguf convert from the command line."""

from __future__ import annotations

import pytest

gguf = pytest.importorskip("gguf")
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory):
    from apto_release.testing import build_japanese_tokenizer, build_tiny_qwen3

    return build_tiny_qwen3(tmp_path_factory.mktemp("gguf") / "TinyQwen3", tokenizer=build_japanese_tokenizer())


def test_convert_writes_one_file_per_type(run_cli, tiny_qwen3, tmp_path):
    code, out, err = run_cli("gguf", "convert", tiny_qwen3, "-o", tmp_path, "--quant", "F16", "--quant", "q8_0", "--license", "apache-2.0")
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == [str(tmp_path / "TinyQwen3-F16.gguf"), str(tmp_path / "TinyQwen3-Q8_0.gguf")]
    reader = gguf.GGUFReader(tmp_path / "TinyQwen3-Q8_0.gguf")
    license_field = reader.fields["general.license"]
    assert bytes(license_field.parts[license_field.data[0]]).decode() == "apache-2.0"
    code, _, err = run_cli("gguf", "convert", tiny_qwen3, "-o", tmp_path)
    assert code == 2 and err.startswith(f"Error: {tmp_path / 'TinyQwen3-F16.gguf'}: the output file exists")


def test_unknown_type_and_architecture_are_usage_errors(run_cli, tiny_qwen3, tmp_path):
    code, _, err = run_cli("gguf", "convert", tiny_qwen3, "-o", tmp_path, "--quant", "Q4_K_M")
    assert code == 2 and "unknown GGUF type 'Q4_K_M'" in err
    assert list(tmp_path.iterdir()) == []

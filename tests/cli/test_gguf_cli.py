"""gguf convert from the command line (the checks of `gguf verify` are in tests/gguf/test_verify.py)."""

from __future__ import annotations

import pytest

gguf = pytest.importorskip("gguf")
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory):
    from apto_release.testing import build_japanese_tokenizer, build_tiny_qwen3

    return build_tiny_qwen3(tmp_path_factory.mktemp("gguf") / "TinyQwen3", tokenizer=build_japanese_tokenizer())


def test_convert_writes_one_file_per_type(run_cli, tiny_qwen3, tmp_path):
    code, out, err = run_cli(
        "gguf", "convert", tiny_qwen3, "-o", tmp_path, "--quant", "F16", "--quant", "q8_0", "--license", "apache-2.0", "--no-verify"
    )
    assert code == 0, err
    *lines, last = out.splitlines()
    assert [line.split()[0] for line in lines] == [str(tmp_path / "TinyQwen3-F16.gguf"), str(tmp_path / "TinyQwen3-Q8_0.gguf")]
    assert last == "no vision projector: the checkpoint has no vision tower (text only)"
    assert not list(tmp_path.glob("mmproj-*"))
    reader = gguf.GGUFReader(tmp_path / "TinyQwen3-Q8_0.gguf")
    license_field = reader.fields["general.license"]
    assert bytes(license_field.parts[license_field.data[0]]).decode() == "apache-2.0"
    code, _, err = run_cli("gguf", "convert", tiny_qwen3, "-o", tmp_path, "--no-verify")
    assert code == 2 and err.startswith(f"Error: {tmp_path / 'TinyQwen3-F16.gguf'}: the output file exists")


def test_unknown_type_and_architecture_are_usage_errors(run_cli, tiny_qwen3, tmp_path):
    code, _, err = run_cli("gguf", "convert", tiny_qwen3, "-o", tmp_path, "--quant", "F16,Q4_0")
    assert code == 2 and "unknown GGUF type 'Q4_0'" in err
    assert list(tmp_path.iterdir()) == []
    code, _, err = run_cli("gguf", "convert", tiny_qwen3, "-o", tmp_path, "--split-max-size", "lots")
    assert code == 2 and "'lots' is not a size" in err


def test_convert_quantizes_splits_and_verifies(run_cli, tiny_qwen3, tmp_path):
    code, out, err = run_cli(
        "gguf", "convert", tiny_qwen3, "-o", tmp_path, "--quant", "F16,Q4_K_M", "--split-max-size", "400K", "--threads", "1"
    )
    assert code == 0, out + err
    f16 = sorted(tmp_path.glob("TinyQwen3-F16-*-of-*.gguf"))
    assert len(f16) > 1 and not (tmp_path / "TinyQwen3-F16.gguf").exists()
    assert (tmp_path / "TinyQwen3-Q4_K_M.gguf").is_file()
    # no staging left; only the build record the card reads (gguf.provenance)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [".gguf-build.json"]
    lines = [line for line in out.splitlines() if line.startswith(str(tmp_path))]
    assert len(lines) == 2 and all(line.endswith("verified") for line in lines), out
    assert f"(+{len(f16) - 1} split files)" in lines[0]


def test_convert_writes_the_vision_projector_of_a_qwen35_beside_its_files(run_cli, tmp_path):
    from apto_release.gguf.provenance import read_record
    from apto_release.testing import build_tiny_qwen35

    model, out = build_tiny_qwen35(tmp_path / "TinyVL"), tmp_path / "out"
    code, stdout, err = run_cli("gguf", "convert", model, "-o", out, "--quant", "F16", "--mmproj-type", "bf16", "--no-verify")
    assert code == 0, err
    *_, last = stdout.splitlines()
    assert last.startswith(f"{out / 'mmproj-TinyVL-BF16.gguf'}  ") and last.endswith("vision projector")
    reader = gguf.GGUFReader(out / "mmproj-TinyVL-BF16.gguf")
    assert reader.fields["general.type"].contents() == "mmproj" and reader.fields["general.file_type"].contents() == 32
    assert read_record(out)["files"]["mmproj-TinyVL-BF16.gguf"]["written_by"] == "gguf-py"
    # the projector's name is checked before anything is written
    code, _, err = run_cli("gguf", "convert", model, "-o", out, "--quant", "Q8_0", "--mmproj-type", "BF16", "--no-verify")
    assert code == 2 and err.startswith(f"Error: {out / 'mmproj-TinyVL-BF16.gguf'}: the output file exists")
    assert not (out / "TinyVL-Q8_0.gguf").exists()
    # overwritten with another type: the old projector goes (only one is published)
    code, _, err = run_cli("gguf", "convert", model, "-o", out, "--quant", "F16", "--no-verify", "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in out.glob("mmproj-*")) == ["mmproj-TinyVL-F16.gguf"]
    code, stdout, err = run_cli("gguf", "convert", model, "-o", tmp_path / "text", "--quant", "F16", "--no-mmproj", "--no-verify")
    assert code == 0 and "vision projector" not in stdout and not list((tmp_path / "text").glob("mmproj-*"))
    # overwritten without a projector: the old one goes too (it would be published with the new files)
    code, _, err = run_cli("gguf", "convert", model, "-o", out, "--quant", "F16", "--no-mmproj", "--no-verify", "--overwrite")
    assert code == 0, err
    assert not list(out.glob("mmproj-*"))


def test_convert_verifies_the_vision_projector_and_gguf_verify_checks_one(run_cli, tmp_path):
    import json

    from apto_release.gguf.provenance import read_record
    from apto_release.testing import build_tiny_qwen35

    pytest.importorskip("llama_cpp")
    model, out = build_tiny_qwen35(tmp_path / "TinyVL"), tmp_path / "out"
    code, stdout, err = run_cli("gguf", "convert", model, "-o", out, "--quant", "Q8_0", "--threads", "2")
    assert code == 0, err
    *_, shown, check = stdout.splitlines()
    assert shown.endswith("vision projector  verified") and check.startswith("  mmproj-TinyVL-F16.gguf: vision projector, loaded by")
    entry = read_record(out)["files"]["mmproj-TinyVL-F16.gguf"]
    assert entry["verified"] is True and entry["check"]["image_tokens"] == 12 and entry["check"]["text_model"] == "TinyVL-Q8_0.gguf"
    # gguf verify: the projector beside a text file of the model, against the checkpoint
    projector, text = out / "mmproj-TinyVL-F16.gguf", out / "TinyVL-Q8_0.gguf"
    code, stdout, err = run_cli("gguf", "verify", projector, text, "--reference", model, "--threads", "2", "--json")
    assert code == 0, err
    (found,) = json.loads(stdout)["projectors"]
    assert found["ok"] and found["file"] == projector.name and 0 < found["error"] <= found["bound"]
    # a projector alone, or without the checkpoint, cannot be checked: said before any work
    for args in ((projector, "--reference", model), (projector, text, "--against-f16", text)):
        code, _, err = run_cli("gguf", "verify", *args)
        assert code == 2 and "is a vision projector: it is checked against the checkpoint's vision tower" in err, err
    # another checkpoint's projector fails: exit 1, and convert says so after writing and recording everything
    other = build_tiny_qwen35(tmp_path / "Other", seed=1)
    code, stdout, err = run_cli("gguf", "verify", projector, text, "--reference", other, "--threads", "2")
    assert code == 1 and "FAILED: the embeddings differ by" in stdout, stdout + err


def test_a_type_that_needs_an_imatrix_is_refused_with_the_reason(run_cli, tiny_qwen3, tmp_path):
    code, _, err = run_cli("gguf", "convert", tiny_qwen3, "-o", tmp_path / "out", "--quant", "F16,IQ2_XS")
    assert code == 2 and "IQ2_XS cannot be made without an importance matrix: llama.cpp's quantizer refuses" in err
    assert "--imatrix auto" in err and not (tmp_path / "out").exists()
    code, _, err = run_cli("gguf", "convert", tiny_qwen3, "-o", tmp_path / "out", "--quant", "Q4_K_M", "--imatrix", "auto")
    assert code == 2 and "--imatrix auto needs a calibration text" in err


def test_calibration_prints_records_and_tokens(run_cli, tiny_qwen3, tmp_path):
    from apto_release.dataset.example import write_example_data

    write_example_data(tmp_path / "records.jsonl", n=8)
    code, out, err = run_cli("gguf", "calibration", "-o", tmp_path / "calib.txt", "--records", tmp_path / "records.jsonl",
                             "--model", tiny_qwen3, "--max-tokens", "100000")
    assert code == 0, err
    assert out.startswith(f"{tmp_path / 'calib.txt'}: 8 records, ") and " tokens (" in out
    assert (tmp_path / "calib.txt").read_text("utf-8").count("<|im_start|>assistant") >= 8


def test_convert_with_an_auto_imatrix_and_a_given_llama_cpp(run_cli, tiny_qwen3, tmp_path):
    pytest.importorskip("llama_cpp")
    from apto_release.dataset.example import write_example_data
    from apto_release.gguf.tools import build_tools

    tools = build_tools()  # cached after the first run
    write_example_data(tmp_path / "records.jsonl", n=24)
    code, out, err = run_cli("gguf", "convert", tiny_qwen3, "-o", tmp_path / "out", "--quant", "Q4_K_M", "--imatrix", "auto",
                             "--calibration", tmp_path / "records.jsonl", "--llama-cpp", tools.parent, "--no-verify")
    assert code == 0, out + err
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == [
        "TinyQwen3-Q4_K_M.gguf", "calibration.txt", "imatrix.gguf", "params"]
    assert f"{tmp_path / 'out' / 'calibration.txt'}: 24 records, " in out and " tokens (records " in out
    code, _, err = run_cli("gguf", "convert", tiny_qwen3, "-o", tmp_path / "o2", "--quant", "Q4_K_M", "--imatrix",
                           tmp_path / "out" / "imatrix.gguf", "--llama-cpp", tmp_path)
    assert code == 2 and "'llama-quantize' is not in" in err and not (tmp_path / "o2").exists()  # before any work

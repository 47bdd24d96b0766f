"""Every GGUF file of one model: direct types, K-quants from an intermediate, split sets, verification."""

from __future__ import annotations

import pytest

gguf = pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")
pytest.importorskip("torch")

from apto_release.errors import UsageError
from apto_release.gguf import DIRECT_TYPES
from apto_release.gguf import build as build_module
from apto_release.gguf import verify as verify_module
from apto_release.gguf.build import build_gguf, normalise_quants, parse_size
from apto_release.gguf.convert import QUANT_TYPES
from apto_release.gguf.verify import load_reference
from apto_release.testing.models import build_tiny_qwen3

WIDE = {"hidden_size": 256, "intermediate_size": 512, "head_dim": 64}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    return {
        "f32": build_tiny_qwen3(root / "Wide", config=WIDE),
        "bf16": build_tiny_qwen3(root / "WideBF16", config=WIDE, dtype="bfloat16"),
    }


@pytest.fixture(scope="module")
def reference(models):
    return load_reference(models["f32"], threads=1)


def test_sizes_and_types_parse():
    assert parse_size("48G") == 48_000_000_000
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("500 MB") == 500_000_000
    assert parse_size("0") == 0
    with pytest.raises(UsageError, match="not a size"):
        parse_size("big")
    assert normalise_quants(["q8_0", "F16", "Q8_0", " q4_k_m"]) == ["Q8_0", "F16", "Q4_K_M"]
    with pytest.raises(UsageError, match="unknown GGUF type 'Q4_0'"):
        normalise_quants(["F16", "Q4_0"])
    # The light list of type names (read by the manifest without importing gguf) is the converter's.
    assert tuple(QUANT_TYPES) == DIRECT_TYPES


def test_k_quants_reuse_the_f16_of_the_same_run(models, tmp_path, monkeypatch):
    calls = []
    real_quantize = build_module.quantize
    monkeypatch.setattr(build_module, "quantize", lambda source, *a, **k: (calls.append(source), real_quantize(source, *a, **k))[1])

    files = build_gguf(models["f32"], tmp_path, ["F16", "Q4_K_M", "Q6_K"], name="Wide", verify=False)

    assert [f.quant for f in files] == ["F16", "Q4_K_M", "Q6_K"]
    assert calls == [tmp_path / "Wide-F16.gguf"] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".gguf-build.json", "Wide-F16.gguf", "Wide-Q4_K_M.gguf", "Wide-Q6_K.gguf", "params"]
    assert files[1].tensor_types.get("Q4_K", 0) > 0


def test_a_bfloat16_checkpoint_is_quantized_from_a_temporary_bf16(models, tmp_path, monkeypatch):
    sources = []
    real_quantize = build_module.quantize

    def spy(source, *args, **kwargs):
        sources.append((source.name, gguf.GGUFReader(source).fields["general.file_type"].contents()))
        return real_quantize(source, *args, **kwargs)

    monkeypatch.setattr(build_module, "quantize", spy)
    build_gguf(models["bf16"], tmp_path, ["Q4_K_M"], name="Wide", verify=False)

    assert sources == [("Wide-BF16.gguf", gguf.LlamaFileType.MOSTLY_BF16)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".gguf-build.json", "Wide-Q4_K_M.gguf", "params"]  # the intermediate is gone


def test_split_sets_and_verification(models, reference, tmp_path, monkeypatch):
    monkeypatch.setattr(verify_module, "load_reference", lambda *a, **k: reference)  # computed once per module
    seen = []
    files = build_gguf(
        models["f32"], tmp_path, ["Q8_0", "Q4_K_M"], name="Wide", split_max_size=600_000, threads=1, on_file=seen.append
    )

    q8, q4 = files
    assert len(q8.paths) > 1 and q8.path.name == f"Wide-Q8_0-00001-of-{len(q8.paths):05d}.gguf"
    assert len(q4.paths) == 1  # K-quants come from an unsplit intermediate, in one file
    assert [f.quant for f in seen] == ["Q8_0", "Q4_K_M"]
    for item in files:
        assert item.report is not None and item.ok, item.report.to_text()


def test_an_existing_output_stops_the_run_before_any_work(models, tmp_path):
    (tmp_path / "Wide-Q4_K_M.gguf").write_text("keep me")
    with pytest.raises(UsageError, match="exists"):
        build_gguf(models["f32"], tmp_path, ["F16", "Q4_K_M"], name="Wide", verify=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Wide-Q4_K_M.gguf"]
    assert (tmp_path / "Wide-Q4_K_M.gguf").read_text() == "keep me"


def test_progress_reports_each_step(models, tmp_path):
    import io
    import re

    from apto_release.progress import Progress

    stream = io.StringIO()
    build_gguf(models["bf16"], tmp_path, ["Q8_0", "Q4_K_M"], name="Wide", verify=False, progress=Progress("lines", stream=stream))
    ends = [line.split(" done in ")[0] for line in stream.getvalue().splitlines() if " done in " in line]
    assert [end.split(":")[0] for end in ends] == ["convert Q8_0", "convert BF16 for the K-quants", "quantize Q4_K_M"]
    assert re.fullmatch(r"convert Q8_0: ([0-9.]+ [KM]B)/\1", ends[0])  # bytes, all of them


def test_ollama_params_are_written_beside_the_files_and_another_models_are_not_overwritten(models, tmp_path):
    import json

    from apto_release.gguf.sampling import OLLAMA_PARAMS

    config = json.loads((models["f32"] / "generation_config.json").read_text("utf-8"))
    source = tmp_path / "sampled"
    source.mkdir()
    for path in models["f32"].iterdir():
        (source / path.name).symlink_to(path)
    (source / "generation_config.json").unlink()
    (source / "generation_config.json").write_text(json.dumps({**config, "do_sample": True, "temperature": 0.6, "top_k": 20}), "utf-8")

    build_gguf(source, tmp_path / "out", ["F16"], name="Wide", verify=False)
    params = json.loads((tmp_path / "out" / OLLAMA_PARAMS).read_text("utf-8"))
    assert params == {"stop": ["<|im_end|>"], "temperature": 0.6, "top_k": 20}

    with pytest.raises(UsageError, match="exists with other settings"):  # before any work
        build_gguf(models["f32"], tmp_path / "out", ["Q8_0"], name="Other", verify=False)
    assert not (tmp_path / "out" / "Other-Q8_0.gguf").exists()
    build_gguf(models["f32"], tmp_path / "out", ["Q8_0"], name="Other", verify=False, overwrite=True)
    assert json.loads((tmp_path / "out" / OLLAMA_PARAMS).read_text("utf-8")) == {"stop": ["<|im_end|>"]}


def test_the_build_records_what_wrote_each_file_and_whether_llama_cpp_verified_it(models, reference, tmp_path, monkeypatch):
    from apto_release.gguf.provenance import RECORD_NAME, llama_cpp_build, recorded

    monkeypatch.setattr(build_module, "load_reference", lambda *a, **k: reference, raising=False)
    monkeypatch.setattr(verify_module, "load_reference", lambda *a, **k: reference)
    files = build_gguf(models["f32"], tmp_path, ["Q8_0", "Q4_K_M"], name="Wide", threads=1)
    entries = recorded([p for f in files for p in f.paths])
    assert {name: (e["written_by"], e["verified"]) for name, e in entries.items()} == {
        "Wide-Q8_0.gguf": ("gguf-py", True), "Wide-Q4_K_M.gguf": ("llama.cpp's quantizer", True)}
    assert all(e["llama_cpp"] == llama_cpp_build() for e in entries.values())
    assert RECORD_NAME.startswith(".")  # hidden: the push never publishes it

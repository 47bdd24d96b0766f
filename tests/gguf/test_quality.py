"""The quality pass (``gguf.quality``) on the tiny wide Qwen3.5 (hidden size 256: real K-quant blocks), in llama.cpp."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gguf")
pytest.importorskip("torch")
pytest.importorskip("llama_cpp")

from apto_release.errors import UsageError
from apto_release.gguf.convert import convert
from apto_release.gguf.quality import compare, heldout_text, measure_quality
from apto_release.testing.models import build_tiny_qwen35


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    from apto_release.gguf.quantize import quantize

    tmp = tmp_path_factory.mktemp("quality")
    model = build_tiny_qwen35(tmp / "Wide", vision=False, mtp=False, dtype="bfloat16", config={"hidden_size": 256, "intermediate_size": 512})
    f16 = convert(model, tmp / "out", quant="F16").path
    q8 = convert(model, tmp / "out", quant="Q8_0").path
    q4 = quantize(f16, tmp / "out", "Wide-Q4_K_M", "Q4_K_M").path
    return {"model": model, "F16": f16, "Q8_0": q8, "Q4_K_M": q4}


def test_f16_against_itself_is_zero_and_quants_order(wide):
    f16, q8, q4 = measure_quality([wide["F16"], wide["Q8_0"], wide["Q4_K_M"]], wide["F16"])
    assert (f16.kl_mean, f16.kl_p99, f16.top1) == (0.0, 0.0, 1.0)
    assert f16.tokens > 200  # a few hundred tokens of held-out text
    assert 0 < q8.kl_mean < q4.kl_mean and q8.kl_p99 < q4.kl_p99, (q8, q4)
    assert q8.top1 > q4.top1 and q8.kl_p99 >= q8.kl_mean
    again = measure_quality([wide["Q4_K_M"]], wide["F16"])[0]
    assert again == q4  # deterministic


def test_another_text_is_measured_instead_of_the_heldout_one(wide):
    text = "これは別の文章です。猫が庭で眠っている。明日は雨が降るらしい。" * 4
    (q4,) = measure_quality([wide["Q4_K_M"]], wide["F16"], text=text)
    (usual,) = measure_quality([wide["Q4_K_M"]], wide["F16"])
    assert 0 < q4.tokens < usual.tokens and q4.kl_mean != usual.kl_mean


def test_a_missing_file_is_a_usage_error(wide, tmp_path):
    with pytest.raises(UsageError, match="no such GGUF file"):
        measure_quality([tmp_path / "missing.gguf"], wide["F16"])


def test_compare_is_kl_of_the_reference_against_the_file():
    p = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]], dtype=np.float32))
    q = np.log(np.array([[0.25, 0.5, 0.25], [0.1, 0.2, 0.7]], dtype=np.float32))
    kl, agree = compare(p, q)
    assert kl[0] == pytest.approx(0.5 * np.log(2) + 0.25 * np.log(0.5)) and kl[1] == pytest.approx(0, abs=1e-7)
    assert agree.tolist() == [False, True]


def test_heldout_text_shares_no_sentence_with_the_example_records(tmp_path):
    """The held-out text is written for the purpose: none of its sentences is in the example data that
    ``gguf calibration`` draws from (its whole pools, at a large count)."""
    import json

    from apto_release.dataset.example import write_example_data

    write_example_data(tmp_path / "records.jsonl", n=2000)
    corpus = json.dumps([json.loads(line) for line in (tmp_path / "records.jsonl").read_text("utf-8").splitlines()], ensure_ascii=False)
    sentences = [s.strip() for s in heldout_text().replace("\n", "。").split("。") if len(s.strip()) >= 8]
    assert len(sentences) >= 15
    shared = [s for s in sentences if s in corpus]
    assert not shared, shared
    # and the check itself finds a sentence that is there
    assert any(s.strip() in corpus for s in json.loads(corpus)[0]["messages"][0]["content"].split("。") if len(s.strip()) >= 8)


def run_cli(capsys, *args):
    from apto_release.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return (exit_info.value.code or 0), out, err


def test_verify_against_f16_prints_the_quality_pass(wide, capsys):
    import json

    code, out, err = run_cli(capsys, "gguf", "verify", wide["Q8_0"], wide["Q4_K_M"], "--against-f16", wide["F16"])
    assert code == 0, err
    assert "quality against Wide-F16.gguf" in out
    assert "Wide-Q8_0.gguf: KL(F16 || file) mean" in out and "top-1 agreement" in out and "Wide-Q4_K_M.gguf" in out
    code, out, err = run_cli(capsys, "gguf", "verify", wide["Q8_0"], "--against-f16", wide["F16"], "--json")
    assert code == 0, err
    (q8,) = json.loads(out)["quality"]
    assert q8["file"] == "Wide-Q8_0.gguf" and 0 < q8["kl_mean"] < 0.02 and q8["tokens"] > 200


def test_verify_needs_a_reference_or_an_f16(wide, capsys):
    code, out, err = run_cli(capsys, "gguf", "verify", wide["Q8_0"])
    assert code == 2 and "--against-f16" in err and "Traceback" not in err


def test_convert_records_the_quality_of_every_file_against_its_f16(wide, tmp_path):
    """`gguf convert` with an F16 in the run measures every other type against it, into the build record."""
    from apto_release.gguf.build import build_gguf
    from apto_release.gguf.provenance import read_record

    files = build_gguf(wide["model"], tmp_path / "out", ["F16", "Q8_0", "Q4_K_M"], name="Wide", mmproj=None, threads=2)
    assert all(f.ok for f in files), [f.report.to_text() for f in files if not f.ok]
    entries = read_record(tmp_path / "out")["files"]
    assert "quality" not in entries["Wide-F16.gguf"]
    q8, q4 = entries["Wide-Q8_0.gguf"]["quality"], entries["Wide-Q4_K_M.gguf"]["quality"]
    assert q8["against"] == q4["against"] == "Wide-F16.gguf" and q8["tokens"] == q4["tokens"] > 200
    assert 0 < q8["kl_mean"] < q4["kl_mean"] and 0 < q4["top1"] < q8["top1"] <= 1
    # the same figures as the pass run by hand on the module's files (same weights, same llama.cpp)
    assert q4["kl_mean"] == measure_quality([wide["Q4_K_M"]], wide["F16"], threads=2)[0].kl_mean


def test_convert_without_an_f16_measures_nothing(wide, tmp_path):
    from apto_release.gguf.build import build_gguf
    from apto_release.gguf.provenance import read_record

    files = build_gguf(wide["model"], tmp_path / "out", ["Q8_0"], name="Wide", mmproj=None, threads=2)
    assert files[0].quality is None and "quality" not in read_record(tmp_path / "out")["files"]["Wide-Q8_0.gguf"]


def test_convert_prints_the_quality_of_each_file(wide, tmp_path, capsys):
    code, out, err = run_cli(capsys, "gguf", "convert", wide["model"], "-o", tmp_path / "out", "--quant", "F16,Q8_0",
                             "--name", "Wide", "--threads", "2")
    assert code == 0, out + err
    assert "quality against Wide-F16.gguf: KL(F16 || file) mean" in out and "top-1 agreement" in out
    assert out.count("quality against") == 1  # the F16 itself is not measured

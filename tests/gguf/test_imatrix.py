"""The importance matrix: calibration text from records, llama-imatrix, quantizing with it (issue 18).

All on the tiny Qwen3.5 with hidden size 256, so that K- and i-quant blocks (256 values) are real,
and with llama.cpp's own tools built from the pinned source (``gguf.tools``, cached).
"""

from __future__ import annotations

import json

import pytest

gguf = pytest.importorskip("gguf")
pytest.importorskip("torch")
pytest.importorskip("llama_cpp")

from apto_release import schema
from apto_release.dataset.example import write_example_data
from apto_release.errors import InputError, UsageError
from apto_release.io import sha256_file
from apto_release.gguf import IMATRIX_REQUIRED
from apto_release.gguf.build import build_gguf
from apto_release.gguf.calibration import count_tokens, draw_calibration
from apto_release.gguf.convert import convert
from apto_release.gguf.imatrix import compute_imatrix, read_imatrix
from apto_release.gguf.provenance import read_record
from apto_release.gguf.quantize import quantize
from apto_release.testing.models import build_tiny_qwen35

WIDE = {"hidden_size": 256, "intermediate_size": 512}
CONTEXT = 64


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    from apto_release.gguf.tools import build_tools

    build_tools()  # minutes the first time, then cached
    root = tmp_path_factory.mktemp("imatrix")
    model = build_tiny_qwen35(root / "Wide", vision=False, mtp=False, dtype="bfloat16", config=WIDE)
    records = root / "records.jsonl"
    write_example_data(records, n=24)
    f16 = convert(model, root / "f16", quant="F16").path
    calib = draw_calibration(records, model, root / "calib.txt", max_tokens=1500)
    imatrix = compute_imatrix(f16, calib.path, root / "imatrix.gguf", context=CONTEXT, threads=2)
    return {"root": root, "model": model, "records": records, "f16": f16, "calib": calib, "imatrix": imatrix}


def test_calibration_covers_every_category_in_the_training_template(wide):
    calib = wide["calib"]
    text = calib.path.read_text("utf-8")
    present = {json.loads(line)["category"] for line in wide["records"].read_text("utf-8").splitlines()}
    assert set(calib.by_category) == present and sum(calib.by_category.values()) == calib.records
    assert text.count("<|im_start|>assistant") >= calib.records  # the chat template, as in training
    prefixes = [json.loads(line)["harmful_prefix"] for line in wide["records"].read_text("utf-8").splitlines()
                if json.loads(line)["category"] == schema.PREFIX_CATEGORY]
    assert any(p in text for p in prefixes), "a mid_refusal's harmful prefix opens its answer, as in training"
    assert 0 < calib.tokens <= 1500 and count_tokens(calib.path, wide["model"]) == calib.tokens


def test_calibration_is_deterministic_and_keeps_to_its_budget(wide, tmp_path):
    again = draw_calibration(wide["records"], wide["model"], tmp_path / "c.txt", max_tokens=1500)
    assert again.path.read_bytes() == wide["calib"].path.read_bytes()
    small = draw_calibration(wide["records"], wide["model"], tmp_path / "s.txt", max_tokens=600)
    assert small.tokens <= 600 and small.records < again.records
    assert list(small.by_category) == sorted(small.by_category)


def test_imatrix_is_computed_deterministically(wide, tmp_path):
    first = wide["imatrix"]
    second = compute_imatrix(wide["f16"], wide["calib"].path, tmp_path / "b.gguf", context=CONTEXT, threads=2)
    assert first.chunks >= 2 and first.entries >= 8 and read_imatrix(first.path) == (first.chunks, first.entries)
    assert first.path.read_bytes() == second.path.read_bytes()
    datasets = gguf.GGUFReader(first.path).fields["imatrix.datasets"].contents()
    assert datasets == ["calib.txt"]  # the file's name, no local path
    assert [p.name for p in tmp_path.iterdir()] == ["b.gguf"]  # no temporary left


def test_a_text_too_short_for_one_chunk_is_named(wide, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("こんにちは。\n", encoding="utf-8")
    with pytest.raises(InputError, match="too short") as info:
        compute_imatrix(wide["f16"], short, tmp_path / "i.gguf", context=CONTEXT)
    assert info.value.path.endswith("short.txt") and not (tmp_path / "i.gguf").exists()


@pytest.mark.parametrize("quant", sorted(IMATRIX_REQUIRED))
def test_types_that_need_an_imatrix_are_refused_before_any_work(wide, tmp_path, quant):
    with pytest.raises(UsageError, match=f"{quant} cannot be made without an importance matrix") as info:
        build_gguf(wide["model"], tmp_path / "out", ["F16", quant], verify=False)
    assert "--imatrix" in info.value.hint and not (tmp_path / "out").exists()


def test_the_refused_types_are_those_llama_cpp_refuses(wide, tmp_path, monkeypatch):
    """Our check off: llama.cpp's quantizer itself refuses each type of IMATRIX_REQUIRED, and makes IQ3_M (the nearest other)."""
    from apto_release.errors import BuildError
    from apto_release.gguf import quantize as quantize_module

    monkeypatch.setattr(quantize_module, "check_imatrix", lambda *args: None)
    for quant in IMATRIX_REQUIRED:
        with pytest.raises(BuildError, match="requires an imatrix"):
            quantize(wide["f16"], tmp_path, f"Wide-{quant}", quant)
    assert quantize(wide["f16"], tmp_path, "Wide-IQ3_M", "IQ3_M").tensor_types.get("IQ3_S", 0) >= 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Wide-IQ3_M.gguf"]


def test_iq2_xs_is_made_with_an_imatrix(wide, tmp_path):
    imatrix = wide["imatrix"]
    made = quantize(wide["f16"], tmp_path, "Wide-IQ2_XS", "IQ2_XS", imatrix=imatrix.path)
    assert made.tensor_types.get("IQ2_XS", 0) >= 4, made.tensor_types
    fields = gguf.GGUFReader(made.path).fields
    assert fields["quantize.imatrix.file"].contents() == "imatrix.gguf"  # not a local path
    assert fields["quantize.imatrix.entries_count"].contents() == imatrix.entries


def test_convert_with_an_auto_imatrix_makes_and_verifies_q4_k_m_and_iq4_xs(wide, tmp_path):
    out = tmp_path / "gguf"
    files = build_gguf(wide["model"], out, ["F16", "Q4_K_M", "IQ4_XS"], imatrix="auto", calibration=wide["records"], threads=2)
    assert [f.quant for f in files] == ["F16", "Q4_K_M", "IQ4_XS"]
    for item in files[1:]:
        assert item.ok, item.report.to_text()
        assert gguf.GGUFReader(item.path).fields["quantize.imatrix.file"].contents() == "imatrix.gguf"
        # the KL pass against the run's F16 file, in llama.cpp
        assert item.quality is not None and item.quality.against == "Wide-F16.gguf", item.quality
        assert 0 < item.quality.kl_mean < 0.2 and 0.3 < item.quality.top1 < 1 and item.quality.tokens > 200
    assert files[2].tensor_types.get("IQ4_XS", 0) >= 8, files[2].tensor_types
    assert (out / "calibration.txt").read_text("utf-8").count("<|im_start|>") > 0
    assert read_imatrix(out / "imatrix.gguf")[1] > 0
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == ["Wide-F16.gguf", "Wide-IQ4_XS.gguf", "Wide-Q4_K_M.gguf", "calibration.txt", "imatrix.gguf", "params"]
    entries = read_record(out)["files"]
    assert entries["Wide-Q4_K_M.gguf"]["quality"]["kl_mean"] == files[1].quality.kl_mean  # for the card's columns
    assert "imatrix" not in entries["Wide-F16.gguf"]  # F16 is converted, not quantized with it
    made_with = entries["Wide-IQ4_XS.gguf"]["imatrix"]  # for the card
    assert made_with["sha256"] == sha256_file(out / "imatrix.gguf") and made_with["chunks"] >= 1
    assert made_with["calibration"]["sha256"] == sha256_file(out / "calibration.txt")
    assert made_with["calibration"]["records"] == "records.jsonl" and made_with["calibration"]["records_drawn"] == 24


def test_convert_with_a_given_imatrix_or_text(wide, tmp_path):
    out = tmp_path / "gguf"
    (files,) = build_gguf(wide["model"], out, ["IQ4_XS"], imatrix=wide["imatrix"].path, verify=False)
    assert (out / "imatrix.gguf").read_bytes() == wide["imatrix"].path.read_bytes() and not (out / "calibration.txt").exists()
    assert read_record(out)["files"]["Wide-IQ4_XS.gguf"]["imatrix"]["given"] is True
    text = tmp_path / "general.txt"
    text.write_text(wide["calib"].path.read_text("utf-8") * 2, encoding="utf-8")  # a plain text: used as it is
    build_gguf(wide["model"], out, ["IQ4_XS"], imatrix="auto", calibration=text, verify=False, overwrite=True)
    assert (out / "calibration.txt").read_bytes() == text.read_bytes()
    assert read_record(out)["files"]["Wide-IQ4_XS.gguf"]["imatrix"]["calibration"]["text"] == "general.txt"


def test_convert_checks_the_imatrix_options_first(wide, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UsageError, match="needs a calibration text"):
        build_gguf(wide["model"], out, ["Q4_K_M"], imatrix="auto")
    with pytest.raises(InputError, match="not a GGUF imatrix|does not exist"):
        build_gguf(wide["model"], out, ["Q4_K_M"], imatrix=wide["records"])
    with pytest.raises(UsageError, match="no K- or i-quant"):
        build_gguf(wide["model"], out, ["F16"], imatrix="auto", calibration=wide["records"])
    assert not out.exists()


def test_convert_draws_a_decontaminated_calibration_with_general_text(wide, tmp_path):
    rows = [json.loads(line) for line in wide["records"].read_text("utf-8").splitlines()]
    prompt = next(m["content"] for m in rows[5]["messages"] if m["role"] == "user")
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"id": "b1", "question": prompt}, ensure_ascii=False) + "\n", "utf-8")
    general = tmp_path / "wiki.txt"
    general.write_text("\n".join(f"{i}番目の文です。日本語の一般的な文章。" for i in range(300)), "utf-8")
    out = tmp_path / "gguf"
    build_gguf(wide["model"], out, ["Q4_K_M"], imatrix="auto", calibration=wide["records"], verify=False,
               calibration_against=[bench], calibration_general=general)
    made = read_record(out)["files"]["Wide-Q4_K_M.gguf"]["imatrix"]["calibration"]
    assert made["records_drawn"] == 23 and made["left_out"] == 1 and made["against"] == ["bench.jsonl"]
    assert made["general"] == "wiki.txt" and set(made["tokens_by_source"]) == {"records", "general"}
    assert made["tokens"] == sum(made["tokens_by_source"].values()) and prompt not in (out / "calibration.txt").read_text("utf-8")


def test_calibration_sources_need_a_records_calibration(wide, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("テキスト\n", "utf-8")
    with pytest.raises(UsageError, match="--calibration-against.*records file"):
        build_gguf(wide["model"], tmp_path / "o", ["Q4_K_M"], imatrix="auto", calibration=text, calibration_against=[text])
    with pytest.raises(UsageError, match="general text does not exist"):
        build_gguf(wide["model"], tmp_path / "o", ["Q4_K_M"], imatrix="auto", calibration=wide["records"], calibration_general=tmp_path / "no.txt")
    assert not (tmp_path / "o").exists()


def test_overwriting_a_vision_model_keeps_the_imatrix_beside_the_files(wide, tmp_path):
    model = build_tiny_qwen35(tmp_path / "Vis", vision=True, mtp=False, dtype="bfloat16", config=WIDE)
    out = tmp_path / "gguf"
    out.mkdir()
    given = out / "imatrix.gguf"
    given.write_bytes(wide["imatrix"].path.read_bytes())
    build_gguf(model, out, ["Q4_K_M"], imatrix=given, verify=False, overwrite=True)  # the projector's clean-up spares it
    assert given.read_bytes() == wide["imatrix"].path.read_bytes()
    assert sorted(p.name for p in out.glob("*.gguf")) == ["Vis-Q4_K_M.gguf", "imatrix.gguf", "mmproj-Vis-F16.gguf"]

"""The calibration text's sources: records close to a benchmark left out, general Japanese mixed in (issue 18)."""

from __future__ import annotations

import json

import pytest

from apto_release.errors import InputError
from apto_release.gguf.calibration import count_tokens, draw_calibration

pytest.importorskip("torch")

GENERAL = "\n".join(f"第{i}段落。吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。" for i in range(200))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from apto_release.dataset.example import write_example_data
    from apto_release.testing import build_japanese_tokenizer, build_tiny_qwen3

    root = tmp_path_factory.mktemp("calib")
    model = build_tiny_qwen3(root / "TinyQwen3", tokenizer=build_japanese_tokenizer())
    records = root / "records.jsonl"
    write_example_data(records, n=16)
    rows = [json.loads(line) for line in records.read_text("utf-8").splitlines()]
    victim = rows[3]
    prompt = next(m["content"] for m in victim["messages"] if m["role"] == "user")
    bench = root / "bench.jsonl"
    bench.write_text(json.dumps({"id": "b1", "prompt": prompt}, ensure_ascii=False) + "\n"
                     + json.dumps({"id": "b2", "prompt": "まったく関係のない質問です。"}, ensure_ascii=False) + "\n", "utf-8")
    general = root / "general.txt"
    general.write_text(GENERAL, "utf-8")
    return {"root": root, "model": model, "records": records, "victim": victim, "prompt": prompt, "bench": bench, "general": general}


def test_records_close_to_a_benchmark_are_left_out_and_counted(setup, tmp_path):
    plain = draw_calibration(setup["records"], setup["model"], tmp_path / "a.txt", max_tokens=100_000)
    clean = draw_calibration(setup["records"], setup["model"], tmp_path / "b.txt", max_tokens=100_000, against=[setup["bench"]])
    assert plain.left_out == 0 and plain.records == 16 and setup["prompt"] in plain.path.read_text("utf-8")
    assert clean.left_out == 1 and clean.records == 15
    assert setup["prompt"] not in clean.path.read_text("utf-8")
    assert clean.by_category.get(setup["victim"]["category"], 0) == plain.by_category[setup["victim"]["category"]] - 1
    assert clean.against == ("bench.jsonl",)


def test_general_text_is_mixed_in_at_its_share_with_tokens_per_source(setup, tmp_path):
    made = draw_calibration(setup["records"], setup["model"], tmp_path / "c.txt", max_tokens=3000, general=setup["general"], general_share=0.5)
    text = made.path.read_text("utf-8")
    assert set(made.tokens_by_source) == {"records", "general"}
    assert 0 < made.tokens_by_source["general"] <= 1500 and made.tokens_by_source["records"] > 0
    assert made.tokens == sum(made.tokens_by_source.values()) == count_tokens(made.path, setup["model"])
    assert made.tokens <= 3000 and "第0段落。" in text and "第199段落。" not in text  # in file order, up to its share
    again = draw_calibration(setup["records"], setup["model"], tmp_path / "d.txt", max_tokens=3000, general=setup["general"], general_share=0.5)
    assert again.path.read_bytes() == made.path.read_bytes()
    only = draw_calibration(setup["records"], setup["model"], tmp_path / "e.txt", max_tokens=3000)
    assert only.tokens_by_source == {"records": only.tokens}


def test_a_general_text_that_is_not_utf8_is_named(setup, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes("日本語".encode("shift_jis"))
    with pytest.raises(InputError, match="UTF-8") as caught:
        draw_calibration(setup["records"], setup["model"], tmp_path / "f.txt", general=bad)
    assert "bad.txt" in str(caught.value)
    long_line = tmp_path / "long.txt"
    long_line.write_text("長い一行。" * 2000, "utf-8")
    with pytest.raises(InputError, match="no line of the general text fits") as caught:
        draw_calibration(setup["records"], setup["model"], tmp_path / "f.txt", max_tokens=3000, general=long_line)
    assert "long.txt" in str(caught.value)
    with pytest.raises(ValueError, match="share"):
        draw_calibration(setup["records"], setup["model"], tmp_path / "f.txt", general=setup["general"], general_share=1.0)


def test_calibration_command_reports_left_out_and_sources(setup, tmp_path, capsys, monkeypatch):
    from apto_release.cli import main

    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["gguf", "calibration", "-o", str(tmp_path / "g.txt"), "--records", str(setup["records"]), "--model", str(setup["model"]),
              "--max-tokens", "3000", "--against", str(setup["bench"]), "--general", str(setup["general"])])
    out, err = capsys.readouterr()
    assert exit_info.value.code in (0, None), out + err
    assert "1 record left out as close to bench.jsonl" in out
    assert "tokens: records " in out and ", general " in out


def test_convert_takes_the_calibration_sources_and_checks_them_first(setup, tmp_path, capsys, monkeypatch):
    from apto_release.cli import main

    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["gguf", "convert", str(setup["model"]), "-o", str(tmp_path / "out"), "--quant", "Q4_K_M", "--imatrix", "auto",
              "--calibration", str(setup["general"]), "--calibration-against", str(setup["bench"])])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--calibration-against is used when --imatrix auto draws" in err
    assert not (tmp_path / "out").exists()

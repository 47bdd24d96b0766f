"""train from the command line: the dry run's table, and the exit codes of its errors."""

from __future__ import annotations

import pytest

from apto_release.schema import CATEGORIES
from apto_release.testing import build_japanese_tokenizer
from tests.conftest import make_record, make_records, write_jsonl


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer"
    build_japanese_tokenizer(path)
    return path


@pytest.fixture
def run_train(run_cli):
    """``apto-release train ARGS`` through ``main``."""
    return lambda *args: run_cli("train", *args)


def test_dry_run_prints_the_table_per_category_and_the_config(run_train, tokenizer_dir, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", make_records(40))
    code, out, err = run_train("--preset", "tiny", "--base", tokenizer_dir, "--data", data, "-o", tmp_path / "out", "--dry-run", "--set", "lora.r=8")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"Dry run: preset tiny, base {tokenizer_dir}, data {data} (40 records); nothing written to {tmp_path / 'out'}/"
    header = next(i for i, line in enumerate(lines) if line.startswith("category"))
    assert lines[header].split() == ["category", "records", "over", "limit", "tokens", "trained", "trained", "%", "longest"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[header + 1 : header + 7] if not line.startswith("-")}
    assert list(rows) == [*CATEGORIES, "total"]
    assert sum(int(rows[c][0]) for c in CATEGORIES) == int(rows["total"][0]) == 40
    assert rows["total"][1] == "0"  # none over the limit
    tokens, trained = (int(x.replace(",", "")) for x in rows["total"][2:4])
    assert 0 < trained < tokens
    assert "  lora.r                            = 8  # --set" in lines
    assert '  data.end_of_turn                  = "<|im_end|>"' in lines
    assert not (tmp_path / "out").exists()


def test_dry_run_counts_records_over_the_limit(run_train, tokenizer_dir, tmp_path):
    long = make_record(1, "anti_hallucination")
    long["messages"][1]["content"] = "根拠のない情報はお伝えできません。" * 30
    data = write_jsonl(tmp_path / "data.jsonl", [make_record(0), long, make_record(2, "mid_refusal")])
    code, out, err = run_train("--preset", "tiny", "--base", tokenizer_dir, "--data", data, "-o", tmp_path / "out", "--dry-run", "--set", "data.max_length=200")
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("anti_hallucination")).split()
    assert row[1:4] == ["1", "1", "0"]  # 1 record, 1 over the limit, 0 tokens kept
    assert "dropped whole, never cut: 1 of 3." in out
    assert "data.max_length                   = 200  # --set" in out


def test_data_with_validation_errors_exits_1_with_findings(run_train, tokenizer_dir, tmp_path):
    data = write_jsonl(tmp_path / "bad.jsonl", make_records(5) + [make_record(9, judge_score=1)])
    code, out, err = run_train("--preset", "tiny", "--base", tokenizer_dir, "--data", data, "-o", tmp_path / "out", "--dry-run")
    assert code == 1
    assert f"{data}:6: error [judge_score_below_gate]" in err
    assert "1 validation error; fix them (see 'apto-release validate') before training" in err and out == ""


def test_usage_errors_exit_2(run_train, tokenizer_dir, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", make_records(4))
    common = ("--base", tokenizer_dir, "--data", data, "-o", tmp_path / "out")

    code, _, err = run_train("--preset", "nope", *common, "--dry-run")
    assert code == 2
    assert "Error: unknown preset 'nope'; known presets: qwen3.5-27b, qwen3.5-9b, qwen3.5-9b-base, tiny" in err

    code, _, err = run_train("--preset", "tiny", *common, "--dry-run", "--set", "lora.rank=8")
    assert code == 2
    assert "Error: unknown key 'lora.rank' in --set; known keys: description, base_model, lora.r," in err
    assert "Hint: did you mean 'lora.r'?" in err

    code, _, err = run_train("--preset", "tiny", *common, "--dry-run", "--set", "lora.r=eight")
    assert code == 2 and "'lora.r' must be an integer, not 'eight'" in err

    code, out, err = run_train("--preset", "tiny", *common)  # a tokenizer is no model
    assert code == 2 and out == ""
    assert err.splitlines()[0].startswith(f"Error: cannot load the base model from '{tokenizer_dir}'")


def test_training_run_from_the_command_line(run_train, tmp_path):
    from apto_release.dataset.example import write_example_data
    from apto_release.testing import build_tiny_qwen35

    base = build_tiny_qwen35(tmp_path / "base", tokenizer=build_japanese_tokenizer())
    data = write_example_data(tmp_path / "data.jsonl", n=8).path
    code, out, err = run_train("--preset", "tiny", "--base", base, "--data", data, "-o", tmp_path / "adapter", "--max-steps", "2")
    assert code == 0, err
    assert out.splitlines()[-1].startswith("Trained 2 steps in ")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_a_tokenizer_that_cannot_be_loaded_exits_2(run_train, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", make_records(4))
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_train("--preset", "tiny", "--base", empty, "--data", data, "-o", tmp_path / "out", "--dry-run")
    assert code == 2 and f"cannot load a tokenizer from '{empty}'" in err

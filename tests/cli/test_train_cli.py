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


# -- the dry run's examples -------------------------------------------------------------------------


def dry_run_examples(out: str) -> dict[str, list[str]]:
    """The dry run's example blocks by category: their lines, without the 4-space indent."""
    blocks: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("--- ") and line.endswith(" ---"):
            current = line[4:].split(":")[0]
            blocks[current] = []
        elif current and line.startswith("    "):
            blocks[current].append(line[4:])
        elif current and line == "":
            continue
        else:
            current = None
    return blocks


def test_dry_run_shows_one_masked_example_per_category(run_train, tokenizer_dir, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", make_records(40))
    code, out, err = run_train("--preset", "tiny", "--base", tokenizer_dir, "--data", data, "-o", tmp_path / "out", "--dry-run")
    assert code == 0, err
    assert "The loss covers the text between ⟦ and ⟧; the rest is context." in out
    blocks = dry_run_examples(out)
    assert list(blocks) == list(CATEGORIES)
    first = make_records(40)
    mid = next(r for r in first if r["category"] == "mid_refusal")
    assert f"--- mid_refusal: record {mid['id']}, " in out
    # ChatML: the header is context, the answer after the harmful prefix and its <|im_end|> trained.
    text = "\n".join(blocks["mid_refusal"])
    assert f"<|im_start|>assistant\n{mid['harmful_prefix']}⟦{mid['messages'][1]['content']}<|im_end|>⟧" in text
    assert "⟦" not in text.split("<|im_start|>assistant")[0]  # the user's turn carries no loss


def test_dry_run_under_the_official_qwen35_template(tmp_path, qwen35_tokenizer_dir):
    # Through Click's CliRunner: the dry run is plain text, the trained parts marked, the think
    # blocks outside the marks, and multi-turn records (which the old encoder refused) shown.
    from click.testing import CliRunner

    from apto_release.cli import cli

    multi = make_record(1, "overrefusal_prevention")
    multi["messages"] = [
        {"role": "user", "content": "カレーの作り方を教えて。"},
        {"role": "assistant", "content": "玉ねぎを炒めるところから始めます。"},
        {"role": "user", "content": "隠し味は？"},
        {"role": "assistant", "content": "りんごやはちみつがよく使われます。"},
    ]
    records = [make_record(0), multi, make_record(2, "mid_refusal"), make_record(3, "anti_hallucination")]
    data = write_jsonl(tmp_path / "data.jsonl", records)
    result = CliRunner().invoke(cli, ["train", "--preset", "qwen3.5-9b", "--base", str(qwen35_tokenizer_dir), "--data", str(data), "-o", str(tmp_path / "out"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert '(data.chat_template = "" (the tokenizer\'s own), data.thinking = "empty")' in result.output
    blocks = dry_run_examples(result.output)
    assert list(blocks) == list(CATEGORIES)
    assert blocks["overrefusal_prevention"] == [
        "<|im_start|>user",
        "カレーの作り方を教えて。<|im_end|>",
        "<|im_start|>assistant",
        "⟦玉ねぎを炒めるところから始めます。<|im_end|>⟧",  # before the last user turn: no think block
        "<|im_start|>user",
        "隠し味は？<|im_end|>",
        "<|im_start|>assistant",
        "<think>",
        "",
        "</think>",
        "",
        "⟦りんごやはちみつがよく使われます。<|im_end|>⟧",  # after the empty think block, which is context
        "",
    ]
    mid = records[2]
    assert f"<think>\n\n</think>\n\n{mid['harmful_prefix']}⟦{mid['messages'][1]['content']}<|im_end|>⟧" in "\n".join(blocks["mid_refusal"])
    assert "\x1b[" not in result.output  # no colours: the marks survive a CI log

"""dataset build from the command line."""

from __future__ import annotations

import json

from apto_release.dataset.build import load_offline
from tests.conftest import make_record, make_records, write_jsonl


def test_sample_then_build(run_cli, tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", make_records(120))
    assert run_cli("sample", path, "-n", "40", "-o", tmp_path / "s")[0] == 0
    code, out, err = run_cli(
        "dataset", "build", tmp_path / "s" / "sample.jsonl", "--report", tmp_path / "s" / "distribution.json",
        "-o", tmp_path / "ds", "--repo-id", "org/sample", "--gated-field", "Affiliation=text",
    )
    assert code == 0, err
    assert out.startswith(f"Built {tmp_path / 'ds'}/ with 40 rows:")
    card = (tmp_path / "ds" / "README.md").read_text("utf-8")
    assert "load_dataset(\"org/sample\", split=\"train\")" in card and "load_dataset(\"org/sample\", \"mid_refusal\"" in card
    assert "Affiliation: text" in card
    ds = load_offline(tmp_path / "ds", cache_dir=tmp_path / "cache")
    assert ds.num_rows == 40


def test_build_refuses_invalid_input(run_cli, tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", make_records(5) + [make_record(9, judge_score=1)])
    code, _, err = run_cli("dataset", "build", path, "-o", tmp_path / "ds")
    assert code == 1
    assert f"{path}:6: error [judge_score_below_gate]" in err
    assert not (tmp_path / "ds").exists()


def test_build_usage_errors(run_cli, tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", make_records(8))
    code, _, err = run_cli("dataset", "build", path, "-o", tmp_path / "ds", "--gated-field", "nonsense")
    assert code == 2 and "--gated-field 'nonsense' is not NAME=TYPE" in err
    (tmp_path / "report.json").write_text(json.dumps({"nope": 1}), encoding="utf-8")
    code, _, err = run_cli("dataset", "build", path, "-o", tmp_path / "ds", "--report", tmp_path / "report.json")
    assert code == 2 and "not a distribution report" in err
    assert not (tmp_path / "ds").exists()

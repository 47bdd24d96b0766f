"""``load_valid_records``: the one gate between a records file and every stage that uses it."""

from __future__ import annotations

import json

import pytest

from apto_release.dataset.example import write_example_data
from apto_release.dataset.validate import ValidateOptions, load_valid_records
from apto_release.errors import InputError, ValidationFailed
from apto_release.io import sha256_file

CHECKS = ValidateOptions(near_duplicates=False)


@pytest.fixture
def records(tmp_path):
    path = tmp_path / "records.jsonl"
    write_example_data(path, n=60, seed=2)
    return path


def _rewrite(path, line_index, **changes):
    lines = path.read_text("utf-8").splitlines()
    record = json.loads(lines[line_index])
    record.update(changes)
    lines[line_index] = json.dumps(record, ensure_ascii=False)
    path.write_text("\n".join(lines) + "\n", "utf-8")


def test_valid_records_come_back_with_the_hash_of_the_bytes_that_passed(records):
    valid = load_valid_records(records, CHECKS, purpose="testing")
    assert len(valid.values) == 60 and valid.report.ok
    assert valid.sha256 == sha256_file(records) and valid.path == records
    assert valid.records[0][0] == 1 and valid.values[0] == json.loads(records.read_text("utf-8").splitlines()[0])


def test_errors_are_refused_with_the_report(records):
    _rewrite(records, 4, judge_score=1)
    with pytest.raises(ValidationFailed) as info:
        load_valid_records(records, CHECKS, purpose="building")
    assert str(info.value) == f"{records}: 1 validation error; fix them (see 'apto-release validate') before building"
    assert [f.rule for f in info.value.report.errors] == ["judge_score_below_gate"]


def test_the_caller_s_options_decide(records):
    _rewrite(records, 4, judge_score=3)
    with pytest.raises(ValidationFailed):
        load_valid_records(records, CHECKS, purpose="training")  # the default gate is 4
    assert len(load_valid_records(records, ValidateOptions(near_duplicates=False, min_judge_score=3), purpose="x").values) == 60
    # Warnings pass unless strict: an unexpected count is a warning.
    counted = ValidateOptions(near_duplicates=False, min_judge_score=3, expected_count=1000)
    assert load_valid_records(records, counted, purpose="x").report.status == "PASSED with warnings"
    with pytest.raises(ValidationFailed, match=r"1 warning \(--strict\)"):
        load_valid_records(records, ValidateOptions(near_duplicates=False, min_judge_score=3, expected_count=1000, strict=True),
                           purpose="x")


def test_a_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_valid_records(tmp_path / "missing.jsonl", CHECKS, purpose="x")

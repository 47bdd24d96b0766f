"""The training dry run as a library call: the records read, their token counts, one masked example per category."""

from __future__ import annotations

import pytest

from apto_release.errors import ValidationFailed
from apto_release.schema import CATEGORIES
from apto_release.testing import build_japanese_tokenizer
from apto_release.train.collate import load_tokenizer, masked_examples, token_statistics
from apto_release.train.preview import preview_training
from apto_release.train.presets import load_preset
from tests.conftest import make_record, make_records, write_jsonl


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer"
    build_japanese_tokenizer(path)
    return path


def test_preview_counts_the_records_and_shows_one_example_per_category(tokenizer_dir, tmp_path):
    records = make_records(40)
    data = write_jsonl(tmp_path / "data.jsonl", records)
    config = load_preset("tiny", {"lora.r": 8})
    preview = preview_training(config, base=tokenizer_dir, data=data, begin="[[", end="]]")
    tokenizer = load_tokenizer(tokenizer_dir)
    assert preview.records == 40
    assert preview.statistics == token_statistics(records, tokenizer, config)
    assert preview.statistics.total.records == 40 and preview.statistics.total.over_length == 0
    assert preview.examples == masked_examples(records, tokenizer, config, begin="[[", end="]]")
    assert [ex.category for ex in preview.examples] == list(CATEGORIES)
    assert all("[[" in ex.text and "]]" in ex.text and "⟦" not in ex.text for ex in preview.examples)
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl"]


def test_data_with_validation_errors_is_refused_before_the_tokenizer_loads(tmp_path):
    data = write_jsonl(tmp_path / "bad.jsonl", make_records(5) + [make_record(9, judge_score=1)])
    with pytest.raises(ValidationFailed) as info:
        preview_training(load_preset("tiny"), base=tmp_path / "no-such-model", data=data, begin="⟦", end="⟧")
    assert [(f.line, f.rule) for f in info.value.report.errors] == [(6, "judge_score_below_gate")]

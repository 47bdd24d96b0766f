"""The training summary as a typed record: what the trainer writes is what the cards read back."""

from __future__ import annotations

import json

import pytest

from apto_release.errors import InputError
from apto_release.train.summary import LOSS_CURVE_NAME, SUMMARY_NAME, TrainingSummary, load_training_summary
from tests.cards.test_cards import DATA_SHA, training_summary


def test_written_and_read_back(tmp_path):
    raw = training_summary()
    raw["config"]["lora.target_modules"] = ("q_proj", "v_proj")  # the trainer's settings hold a tuple
    path = TrainingSummary.from_dict(raw).write(tmp_path)
    assert path == tmp_path / SUMMARY_NAME
    # the bytes the trainer has always written
    assert path.read_text("utf-8") == json.dumps(raw, ensure_ascii=False, indent=2) + "\n"
    summary = load_training_summary(tmp_path)
    assert summary.path == path and summary.loss_curve is None
    assert summary.preset == "qwen3.5-9b" and summary.data_sha256 == DATA_SHA and summary.records == 100
    assert summary.setting("lora.target_modules") == ["q_proj", "v_proj"]
    assert summary.categories[0] == {"name": "safety_refusal", "records": 40, "kept": 39, "tokens": 12000, "trained_tokens": 6000}
    assert summary.to_json() == path.read_text("utf-8")
    (tmp_path / LOSS_CURVE_NAME).write_bytes(b"\x89PNG")
    assert load_training_summary(tmp_path).loss_curve == tmp_path / LOSS_CURVE_NAME


def test_a_bad_hash_names_the_field_and_file(tmp_path):
    raw = training_summary()
    raw["data"]["sha256"] = "abc"
    (tmp_path / SUMMARY_NAME).write_text(json.dumps(raw))
    with pytest.raises(InputError, match="not a SHA-256") as info:
        load_training_summary(tmp_path)
    assert info.value.field == "data.sha256" and info.value.path == str(tmp_path / SUMMARY_NAME)

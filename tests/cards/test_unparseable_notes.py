"""The cards' notes on judgements left out because the judge's output could not be read (the
results file's ``unparseable``): under the model card's table and the GGUF card's per-file table."""

from __future__ import annotations

import json

from apto_release.cards.check import check_card
from apto_release.cards.model import build_cards
from apto_release.release.manifest import load_manifest
from tests.cards.test_cards import evaluation, make_release
from tests.cards.test_gguf_safety import QUANTS

UNPARSEABLE = [
    {"benchmark": "AnswerCarefully", "model": "before", "judge": "gpt-4.1", "count": 1, "judgements": 1000},
    {"benchmark": "AnswerCarefully", "model": "after", "judge": "gpt-4.1", "count": 3, "judgements": 1000},
    {"benchmark": "MT-Bench-ja", "model": "after", "judge": "gpt-4.1", "count": 2, "judgements": 160},
    {"benchmark": "AnswerCarefully", "model": "Q4_K_M", "judge": "gpt-4.1", "count": 7, "judgements": 1000},
    {"benchmark": "AnswerCarefully", "model": "Q6_K", "judge": "gpt-4.1", "count": 9, "judgements": 1000},  # not released
]


def cards(tmp_path, unparseable) -> dict[str, str]:
    path = make_release(tmp_path)
    data = {**evaluation(), "quants": QUANTS}
    if unparseable is not None:
        data["unparseable"] = unparseable
    (tmp_path / "eval/tiny.json").write_text(json.dumps(data))
    built = {c.kind: c.text for c in build_cards(load_manifest(path), year=2026)}
    for kind, text in built.items():
        assert check_card(text, kind) == [], kind
    return built


def test_the_counts_are_noted_under_the_tables_in_both_languages(tmp_path):
    built = cards(tmp_path, UNPARSEABLE)
    for kind in ("model", "adapter"):
        text = built[kind]
        assert ("Judgements left out because the judge's output could not be read: AnswerCarefully, base model: 1 of 1,000 "
                "(gpt-4.1); AnswerCarefully, this model: 3 of 1,000 (gpt-4.1); MT-Bench-ja, this model: 2 of 160 (gpt-4.1).") in text
        assert ("判定モデルの出力を読み取れず集計から除いた判定：AnswerCarefully のベースモデル 1,000 件中 1 件（gpt-4.1）、"
                "AnswerCarefully の本モデル 1,000 件中 3 件（gpt-4.1）、MT-Bench-ja の本モデル 160 件中 2 件（gpt-4.1）。") in text
        assert "Q4_K_M" not in text.split("## English")[1].split("### Training details")[0]  # the quants are the GGUF card's
    gguf = built["gguf"]
    assert ("Judgements left out because the judge's output could not be read (AnswerCarefully): the tuned model 3 of 1,000 "
            "(gpt-4.1); Q4_K_M 7 of 1,000 (gpt-4.1).") in gguf
    assert ("判定モデルの出力を読み取れず集計から除いた判定（AnswerCarefully）：チューニング済みモデル 1,000 件中 3 件（gpt-4.1）、"
            "Q4_K_M 1,000 件中 7 件（gpt-4.1）。") in gguf
    assert "Q6_K" not in gguf and "MT-Bench-ja" not in gguf.split("### Quantization and safety")[1].split("###")[0]


def test_no_counts_no_note(tmp_path):
    for unparseable in (None, []):
        for text in cards(tmp_path / str(unparseable), unparseable).values():
            assert "could not be read" not in text and "読み取れず" not in text


def test_a_gguf_note_only_for_the_files_in_the_table(tmp_path):
    only_base = [UNPARSEABLE[0], UNPARSEABLE[2], UNPARSEABLE[4]]  # before, MT-Bench, an unreleased type
    built = cards(tmp_path, only_base)
    assert "could not be read" not in built["gguf"] and "読み取れず" not in built["gguf"]
    assert "AnswerCarefully, base model: 1 of 1,000 (gpt-4.1); MT-Bench-ja, this model: 2 of 160 (gpt-4.1)." in built["model"]

"""The GGUF card's per-file safety table: from the results file's ``quants``, or a line saying it is not measured."""

from __future__ import annotations

import json

import pytest

from apto_release.cards.check import check_card
from apto_release.cards.model import build_cards
from apto_release.release.manifest import load_manifest
from tests.cards.test_cards import evaluation, front_matter, make_release


def ac_rows(acceptable, violation, n=1000) -> list[dict]:
    """AnswerCarefully's two rates of a GGUF file: (tuned model, file, ci95, significant) each."""
    rows = []
    for metric, label, better, (before, after, ci, significant) in (
        ("acceptable_rate", "AC acceptable rate", True, acceptable), ("violation_rate", "AC violation rate", False, violation),
    ):
        rows.append({"benchmark": "AnswerCarefully", "metric": metric, "label": label, "unit": "%", "higher_is_better": better,
                     "before": before, "after": after, "ci95": ci, "significant": significant, "method": "mcnemar", "n": n})
    return rows


QUANTS = [
    {"type": "Q4_K_M", "metrics": ac_rows((89.8, 85.2, [-7.1, -2.0], True), (2.9, 4.4, [0.3, 2.8], True))},
    {"type": "Q8_0", "metrics": ac_rows((89.8, 89.6, [-0.9, 0.5], False), (2.9, 2.9, [-0.4, 0.4], False)) + [
        {"benchmark": "MultiJail", "metric": "violation_rate", "label": "MultiJail violation rate", "unit": "%",
         "higher_is_better": False, "before": 1.0, "after": 1.5}]},
    {"type": "Q6_K", "metrics": ac_rows((89.8, 89.0, [-1.5, 0.1], False), (2.9, 3.0, [-0.3, 0.5], False))},  # not released
]


def gguf_card(tmp_path, quants=None, *, with_evaluation=True):
    path = make_release(tmp_path, with_evaluation=with_evaluation)
    if quants is not None:
        (tmp_path / "eval/tiny.json").write_text(json.dumps({**evaluation(), "quants": quants}))
    [card] = [c for c in build_cards(load_manifest(path), year=2026) if c.kind == "gguf"]
    assert check_card(card.text, "gguf") == []
    assert "model-index" not in front_matter(card.text)
    return card.text


def table(text: str, header: str) -> list[str]:
    """The rows of the Markdown table under ``header`` (without the header and the rule)."""
    lines = text.splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


JA_HEADER = ("| 形式 | 許容回答率 ↑（チューニング済みモデル → このファイル） | 差 | 95% 信頼区間 | 違反率 ↓（チューニング済みモデル → このファイル） | 差 "
             "| 95% 信頼区間 | 設問数 |")
EN_HEADER = "| type | acceptable rate ↑ (tuned → this file) | change | 95% CI | violation rate ↓ (tuned → this file) | change | 95% CI | items |"


def test_the_table_has_a_row_per_released_file_with_results(tmp_path):
    text = gguf_card(tmp_path, QUANTS)
    assert table(text, JA_HEADER) == [
        r"| Q8_0 | 89.8% → 89.6% | -0.2 ポイント | [-0.9, +0.5] | 2.9% → 2.9% | +0.0 ポイント | [-0.4, +0.4] | 1,000 |",
        r"| Q4_K_M | 89.8% → 85.2% | -4.6 ポイント \* | [-7.1, -2.0] | 2.9% → 4.4% | +1.5 ポイント \* | [+0.3, +2.8] | 1,000 |",
    ]
    assert table(text, EN_HEADER) == [
        r"| Q8_0 | 89.8% → 89.6% | -0.2 pt | [-0.9, +0.5] | 2.9% → 2.9% | +0.0 pt | [-0.4, +0.4] | 1,000 |",
        r"| Q4_K_M | 89.8% → 85.2% | -4.6 pt \* | [-7.1, -2.0] | 2.9% → 4.4% | +1.5 pt \* | [+0.3, +2.8] | 1,000 |",
    ]
    for cited in ("https://arxiv.org/abs/2506.20251", "https://arxiv.org/abs/2502.15799"):
        assert text.count(cited) == 2
    assert "Quantization is known to erode safety behaviour more than capability" in text
    assert "not measured" not in text and "測定していません" not in text
    assert "Q6_K" not in text  # results of a file the release does not have


@pytest.mark.parametrize("quants", [None, []])
def test_without_quants_the_card_says_not_measured(tmp_path, quants):
    text = gguf_card(tmp_path, quants)
    assert "The safety of each GGUF file is not measured in this release." in text
    assert "このリリースでは、GGUF ファイルごとの安全性は測定していません。" in text
    assert JA_HEADER not in text and EN_HEADER not in text
    assert "https://arxiv.org/abs/2502.15799" in text  # why it matters is said either way


def test_without_an_evaluation_the_card_says_not_measured(tmp_path):
    text = gguf_card(tmp_path, with_evaluation=False)
    assert "The safety of each GGUF file is not measured in this release." in text and EN_HEADER not in text


def test_quants_without_answercarefully_make_no_table(tmp_path):
    text = gguf_card(tmp_path, [{"type": "Q8_0", "metrics": QUANTS[1]["metrics"][2:]}])
    assert "The safety of each GGUF file is not measured in this release." in text and EN_HEADER not in text


F16 = {"name": "Apto-Tiny-Safety-F16.gguf", "engine": "llama.cpp's server"}


@pytest.mark.parametrize(("references", "en", "ja"), [
    ([F16, F16, None], "as the tuned model, served from `Apto-Tiny-Safety-F16.gguf` by llama.cpp's server,",
     "チューニング済みモデル（`Apto-Tiny-Safety-F16.gguf` を llama.cpp's server で実行）"),
    ([{"name": "apto-ai/Apto-Tiny-Safety"}] * 2 + [None], "as the tuned model, served as `apto-ai/Apto-Tiny-Safety`,",
     "チューニング済みモデル（`apto-ai/Apto-Tiny-Safety` として提供）"),
    ([None, None, None], "as the tuned model, and the answers", "チューニング済みモデルの回答"),
    ([F16, {"name": "other"}, None], "as the tuned model, and the answers", "チューニング済みモデルの回答"),  # no one name for both rows
])
def test_the_reference_is_the_tuned_model_as_served(tmp_path, references, en, ja):
    quants = [{**q, "reference": r} if r else q for q, r in zip(QUANTS, references)]
    text = gguf_card(tmp_path, quants)
    assert f"So each file answered the same [AnswerCarefully](https://huggingface.co/datasets/llm-jp/AnswerCarefully) items {en}" in text
    assert ja in text
    assert "The change is this file minus the tuned model" in text and "「このファイル − チューニング済みモデル」" in text
    assert "merged" not in text.split("### Quantization and safety")[1].split("### How to use")[0]
    assert "統合モデル" not in text

"""The model and GGUF cards link the private details dataset when ``[model.eval] details_repo`` is set, and not otherwise."""

from __future__ import annotations

import pytest

from apto_release.cards.check import check_card
from apto_release.cards.model import build_cards
from apto_release.release.manifest import load_manifest
from tests.cards.test_cards import ORG, make_release

EVAL = """
[model.eval]
benchmarks = ["AnswerCarefully"]
judges = [{ url = "http://judge:8000/v1", model = "judge-a" }]
"""
LINK = f"[{ORG}/tiny-eval-details](https://huggingface.co/datasets/{ORG}/tiny-eval-details)"


def cards(tmp_path, details: bool) -> dict[str, str]:
    path = make_release(tmp_path)
    path.write_text(path.read_text() + EVAL + ('details_repo = "tiny-eval-details"\n' if details else ""))
    built = {c.kind: c.text for c in build_cards(load_manifest(path), year=2026)}
    for kind, text in built.items():
        assert check_card(text, kind) == []
    return built


def test_the_model_and_gguf_cards_link_the_details_in_both_languages(tmp_path):
    built = cards(tmp_path, details=True)
    for kind in ("model", "gguf"):
        text = built[kind]
        assert text.count(LINK) == 2, kind  # once in Japanese, once in English
        ja = text.index("## English")
        assert "非公開" in text[text.index(LINK):ja] and "private: access on request" in text[ja:]
    assert LINK not in built["adapter"]


@pytest.mark.parametrize("with_eval", [True, False])
def test_without_details_repo_no_card_mentions_it(tmp_path, with_eval):
    if with_eval:
        built = cards(tmp_path, details=False)
    else:
        built = {c.kind: c.text for c in build_cards(load_manifest(make_release(tmp_path)), year=2026)}
    assert not any("eval-details" in t or "access on request" in t for t in built.values())

"""The offline check of a card's text: the one reader of its YAML header, model cards and the push's dataset cards."""

from __future__ import annotations

import pytest

from apto_release.cards.check import check_card, check_card_text, read_front_matter
from apto_release.cards.model import build_cards
from apto_release.release.manifest import load_manifest
from tests.cards.test_cards import make_release


@pytest.fixture
def release(tmp_path):
    path = make_release(tmp_path)
    return load_manifest(path), {c.kind: c for c in build_cards(load_manifest(path), year=2026)}


def test_check_catches_a_broken_card(release):
    _, built = release
    text = built["model"].text
    assert check_card("# no metadata\n", "model")[0].startswith("no YAML metadata block")
    bad_yaml = text.replace("license: apache-2.0", "license: [apache-2.0", 1)
    assert check_card(bad_yaml, "model")[0].startswith("the YAML metadata does not parse")
    missing = text.replace("library_name: transformers\n", "", 1)
    assert "metadata key 'library_name' is missing" in check_card(missing, "model")
    wrong = text.replace("base_model_relation: finetune", "base_model_relation: quantized", 1)
    assert any("expected 'finetune'" in p for p in check_card(wrong, "model"))
    bad_index = text.replace("value: 89.8", "value: high", 1)
    assert any("not a number" in p for p in check_card(bad_index, "model"))
    unrendered = text + "\n{{ oops }}\n"
    assert any("unrendered" in p for p in check_card(unrendered, "model"))
    # the same card is not a valid GGUF card
    assert any("expected 'quantized'" in p for p in check_card(text, "gguf"))


def test_the_push_checks_model_cards_with_check_card(release):
    _, built = release
    for kind, card in built.items():
        assert check_card_text(card.text, kind) == check_card(card.text, kind) == []
    assert check_card_text(built["model"].text, "gguf") == check_card(built["model"].text, "gguf") != []


def test_a_dataset_card_needs_parsing_yaml_with_configs():
    good = "---\nconfigs:\n- config_name: default\n  data_files: data/*.parquet\n---\n# A dataset\n"
    assert check_card_text(good, "dataset") == []
    assert check_card_text("# no metadata\n", "dataset")[0].startswith("no YAML metadata block")
    assert check_card_text("---\nconfigs: [a\n---\n", "dataset")[0].startswith("the YAML metadata does not parse")
    assert check_card_text("---\n- a\n---\n", "dataset") == ["the YAML metadata is not a mapping but list"]
    assert check_card_text("---\nlicense: mit\n---\n", "dataset") == [
        "the YAML metadata has no 'configs' (datasets would not find the data files)"]


def test_the_header_reader_takes_a_byte_order_mark_and_windows_line_ends():
    assert read_front_matter("---\na: 1\n---\n\n# Body\n") == ({"a": 1}, "# Body\n")
    assert read_front_matter("\ufeff---\r\na: 1\r\n---\r\nbody") == ({"a": 1}, "body")
    with pytest.raises(ValueError, match="no YAML metadata block"):
        read_front_matter("a: 1\n---\n")

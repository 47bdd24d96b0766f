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
    assert check_card_text(_dataset_card(), "dataset") == []
    bare = "---\nconfigs:\n- config_name: default\n  data_files: data/*.parquet\n---\n# A dataset\n"
    assert check_card_text(bare, "dataset") == [f"metadata key '{key}' is missing" for key in (
        "pretty_name", "language", "license", "annotations_creators", "language_creators", "multilinguality",
        "size_categories", "source_datasets", "task_categories")]
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


def _dataset_card(**changes) -> str:
    from apto_release.cards.dataset import render_dataset_card

    text = render_dataset_card({"safety_refusal": 600, "mid_refusal": 500})
    for old, new in changes.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def test_a_dataset_card_carries_the_hubs_fields_with_accepted_values():
    assert check_card_text(_dataset_card(), "dataset", rows=1100) == []
    missing = _dataset_card(**{"annotations_creators:\n- expert-generated\n- machine-generated\n": ""})
    assert check_card_text(missing, "dataset") == ["metadata key 'annotations_creators' is missing"]
    bad = _dataset_card(**{"language_creators:\n- expert-generated": "language_creators:\n- written-by-us"})
    assert check_card_text(bad, "dataset") == [
        "language_creators has 'written-by-us', which the Hub does not accept "
        "(crowdsourced, expert-generated, found, machine-generated, other)"]
    task = _dataset_card(**{"- dialogue-modeling": "- sentiment-analysis"})
    assert check_card_text(task, "dataset") == [
        "task_ids has 'sentiment-analysis', which is no subtask of the task_categories (text-generation)"]
    assert check_card_text(_dataset_card(**{"multilinguality:\n- monolingual": "multilinguality:\n- bilingual"}),
                           "dataset") == ["multilinguality has 'bilingual', which the Hub does not accept "
                                          "(monolingual, multilingual, translation, other)"]


def test_a_wrong_size_category_for_the_row_count_is_an_error():
    card = _dataset_card()
    assert "size_categories:\n- 1K<n<10K\n" in card
    assert check_card_text(card, "dataset", rows=999) == [
        "size_categories is ['1K<n<10K'] but the dataset has 999 rows: it must be ['n<1K']"]
    assert check_card_text(card, "dataset", rows=10_000) == [
        "size_categories is ['1K<n<10K'] but the dataset has 10,000 rows: it must be ['10K<n<100K']"]
    unknown = _dataset_card(**{"- 1K<n<10K": "- 1K-10K"})
    assert check_card_text(unknown, "dataset") == [
        "size_categories has '1K-10K', which the Hub does not accept (n<1K, 1K<n<10K, ..., n>1T, other)"]

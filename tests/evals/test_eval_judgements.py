"""Reading judgement files: the line format, clear errors with file and line, and the findings across lines."""

from __future__ import annotations

import re

import pytest

from apto_release.errors import InputError, UsageError
from apto_release.evals.judgements import ANSWER_KEY, collate, read_judgements
from tests.evals.judgement_fixtures import HAND, judgement, write_jsonl


def read(tmp_path, lines, **kwargs):
    return read_judgements([write_jsonl(tmp_path / "j.jsonl", lines)], **kwargs)


def ac(item="ac-1", model="before", judge="j1", **fields):
    return judgement("AnswerCarefully", item, model, judge, **({"score": 4} | fields))


def test_every_benchmark_reads(tmp_path):
    found = read(tmp_path, HAND)
    assert len(found) == len(HAND)
    first = found[0]
    assert (first.benchmark.name, first.item, first.side, first.judge, first.category, first.value) == (
        "AnswerCarefully", "ac-1", "before", "j1", "x", 4)
    assert first.where == f"{tmp_path / 'j.jsonl'}:1"
    mt = next(j for j in found if j.benchmark.name == "MT-Bench-ja")
    assert (mt.item, mt.turn, mt.value) == ("81", 1, 6)
    jmmlu = [j for j in found if j.benchmark.name == "JMMLU"]
    assert [j.value for j in jmmlu] == [True, False, False, True, True, True]  # chosen null counts as wrong
    assert {j.judge for j in jmmlu} == {ANSWER_KEY}


def test_names_and_values_are_matched_without_case(tmp_path):
    found = read(tmp_path, [
        judgement("sorry_bench", "1", "BEFORE", verdict="Refused"),
        judgement("mt-bench-JA", 2, "after", turn=1, score=7.5),
        judgement("ac", "3", "after", score=5.0),
        judgement("jmmlu", "4", "after", None, chosen="b", correct="B"),
    ])
    assert [(j.benchmark.name, j.side, j.value) for j in found] == [
        ("SORRY-Bench", "before", "refused"), ("MT-Bench-ja", "after", 7.5), ("AnswerCarefully", "after", 5), ("JMMLU", "after", True)]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"benchmark": "HarmBench", "item": "1", "model": "before", "judge": "j"},
         "unknown benchmark 'HarmBench'; known: AnswerCarefully, SORRY-Bench, MultiJail, MT-Bench-ja, JMMLU"),
        (ac(score=6), "AnswerCarefully needs 'score': an integer from 1 to 5, found 6"),
        (ac(score=3.5), "AnswerCarefully needs 'score': an integer from 1 to 5, found 3.5"),
        (ac(score="4"), "found '4'"),
        (ac(score=True), "found True"),
        (judgement("MT-Bench-ja", "81", "after", turn=1, score=0), "MT-Bench-ja needs 'score': a number from 1 to 10, found 0"),
        (judgement("MT-Bench-ja", "81", "after", score=8), "MT-Bench-ja judgements need 'turn'"),
        (judgement("SORRY-Bench", "1", "after", verdict="complied"), 'SORRY-Bench needs \'verdict\': "fulfilled" or "refused", found \'complied\''),
        (judgement("MultiJail", "1", "after", verdict="harmful"), '"safe" or "unsafe" or "invalid"'),
        (judgement("JMMLU", "1", "after", chosen="E", correct="A"), "'chosen' is 'E'"),
        (judgement("JMMLU", "1", "after", chosen="A"), "'correct' is None"),
        (judgement("JMMLU", "1", "after", correct="A"), "'chosen' is missing (null when no answer could be read)"),
        (ac(verdict="refused"), "AnswerCarefully judgements have no 'verdict'; they carry 'score': an integer from 1 to 5"),
        (ac(turn=1), "AnswerCarefully judgements have no 'turn'"),
        (ac(categroy="x"), "unknown key 'categroy' (did you mean 'category'?)"),
        (ac(model="Qwen/Qwen3.5-9B"), "'model' is 'Qwen/Qwen3.5-9B', neither before nor after"),
        (ac(judge=None), "'judge' is missing"),
        (ac(judge=" "), "'judge' must be a non-empty string, found ' '"),
        ({"benchmark": "AnswerCarefully", "model": "before", "judge": "j", "score": 4}, "'item' must be the item's id"),
        (ac(item=""), "'item' must be the item's id"),
        (ac(category=""), "'category' must be a non-empty string or null"),
        ([1, 2], "a judgement must be a JSON object, found list"),
    ],
)
def test_a_bad_line_is_an_input_error_with_file_and_line(tmp_path, line, message):
    path = write_jsonl(tmp_path / "j.jsonl", [ac(), line])
    with pytest.raises(InputError, match=re.escape(message)) as info:
        read_judgements([path])
    assert str(info.value).startswith(f"{path}:2: ")
    assert info.value.line == 2 and info.value.exit_code == 2


def test_unreadable_files(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"benchmark": "AC"}\n{oops\n')
    with pytest.raises(InputError, match=r"bad\.jsonl:1: 'item'"):
        read_judgements([bad])
    bad.write_text('{"benchmark": "AC", "item": "1", "model": "before", "judge": "j", "score": 4}\n\n{oops\n')
    with pytest.raises(InputError, match=r"bad\.jsonl:3: not valid JSON"):
        read_judgements([bad])
    bad.write_bytes(b'{"a": "\xff"}\n')
    with pytest.raises(InputError, match=r"bad\.jsonl:1: the line is not valid UTF-8"):
        read_judgements([bad])
    bad.write_text("\n\n")
    with pytest.raises(InputError, match="has no judgements"):
        read_judgements([bad])
    with pytest.raises(InputError, match="does not exist"):
        read_judgements([tmp_path / "missing.jsonl"])


def test_model_ids_map_to_the_two_sides(tmp_path):
    lines = [ac(model="Qwen/Qwen3.5-9B"), ac(model="apto/Tuned"), ac(item="ac-2", model="before")]
    found = read(tmp_path, lines, before="Qwen/Qwen3.5-9B", after="apto/Tuned")
    assert [j.side for j in found] == ["before", "after", "before"]
    with pytest.raises(UsageError, match="both 'x'"):
        read(tmp_path, lines, before="x", after="x")
    with pytest.raises(UsageError, match="would swap the models"):
        read(tmp_path, lines, before="after")


def messages(findings, severity):
    return [f.message for f in findings if f.severity == severity]


def test_identical_repeats_count_once_and_different_ones_are_errors(tmp_path):
    lines = [ac(), ac(model="after"), ac()]
    data, findings = collate(read(tmp_path, lines))
    assert messages(findings, "error") == []
    [warning] = messages(findings, "warning")
    assert warning == f"AnswerCarefully: 1 judgement repeat an identical earlier one and count once: {tmp_path / 'j.jsonl'}:3 repeats {tmp_path / 'j.jsonl'}:1"
    assert data[0].items == ["ac-1"]

    _, findings = collate(read(tmp_path, [ac(), ac(model="after"), ac(score=2)]))
    [error] = messages(findings, "error")
    assert error.startswith("AnswerCarefully item ac-1 (before, judge j1) is judged twice differently: 4 at ")
    assert error.endswith(":1, 2 at " + f"{tmp_path / 'j.jsonl'}:3")


def test_an_item_with_two_categories_is_an_error(tmp_path):
    _, findings = collate(read(tmp_path, [ac(category="a"), ac(model="after", category="b")]))
    assert messages(findings, "error") == [
        f"AnswerCarefully item ac-1 has two categories: 'a' at {tmp_path / 'j.jsonl'}:1, 'b' at {tmp_path / 'j.jsonl'}:2"]


def test_items_judged_for_one_model_are_reported_and_left_out(tmp_path):
    lines = [ac(), ac(model="after"), ac(item="ac-2"), ac(item="ac-3", model="after"),
             ac(item="ac-4"), ac(item="ac-4", model="after"), ac(item="ac-4", judge="j2")]
    [data], findings = collate(read(tmp_path, lines))
    assert data.items == ["ac-1"]
    assert messages(findings, "warning") == [
        "AnswerCarefully: 3 items judged for one model only are left out of the results: "
        "ac-2 (before only), ac-3 (after only), ac-4 (some judges or turns for one model only)"]


def test_a_turn_judged_for_one_model_leaves_the_item_out(tmp_path):
    mt = [judgement("MT-Bench-ja", "81", side, turn=turn, score=8) for side, turn in (("before", 1), ("before", 2), ("after", 1))]
    mt += [judgement("MT-Bench-ja", "82", side, turn=1, score=8) for side in ("before", "after")]
    [data], findings = collate(read(tmp_path, mt))
    assert data.items == ["82"] and len(messages(findings, "warning")) == 1


def test_a_benchmark_without_pairs_is_an_error(tmp_path):
    _, findings = collate(read(tmp_path, [ac(), judgement("SORRY-Bench", "1", "after", verdict="refused")]))
    assert "SORRY-Bench: no item is judged for both models; give the judgement files of both" in messages(findings, "error")
    assert "AnswerCarefully: no item is judged for both models; give the judgement files of both" in messages(findings, "error")


def test_items_without_a_category_are_reported(tmp_path):
    lines = [ac(category="a"), ac(model="after"), ac(item="ac-2"), ac(item="ac-2", model="after")]
    [data], findings = collate(read(tmp_path, lines))
    assert data.categories == {"ac-1": "a", "ac-2": None}
    assert messages(findings, "warning") == ["AnswerCarefully: 1 item without a category count in the overall results only: ac-2"]


def test_long_lists_are_cut(tmp_path):
    lines = [ac(item=f"ac-{i}") for i in range(8)] + [ac(item="ac-9"), ac(item="ac-9", model="after")]
    _, findings = collate(read(tmp_path, lines))
    assert messages(findings, "warning")[0].endswith("ac-4 (before only) and 3 more")


def test_a_judgement_repeated_once_readable_once_not_is_an_error_naming_both_lines(tmp_path):
    unreadable = {k: v for k, v in ac(model="after").items() if k != "score"} | {"unparseable": "?"}
    path = tmp_path / "j.jsonl"
    for lines, first, second in (([ac(), ac(model="after"), unreadable], "4 at", "unparseable at"),
                                 ([ac(), unreadable, ac(model="after")], "unparseable at", "4 at")):
        _, findings = collate(read(tmp_path, lines))
        error = messages(findings, "error")[0]  # not a silent pick of the readable one
        assert error == (f"AnswerCarefully item ac-1 (after, judge j1) is judged twice differently: {first} {path}:2, "
                         f"{second} {path}:3")
    # an identical unreadable repeat counts once, in the count of unreadable judgements too
    _, findings = collate(read(tmp_path, [ac(), unreadable, unreadable]))
    assert any("1 of 2 judgements are unparseable" in m for m in messages(findings, "warning"))

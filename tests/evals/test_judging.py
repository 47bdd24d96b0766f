"""Judge prompts, the strict parsing of judge outputs and answers, and judgement lines that summarize reads."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apto_release.evals.benchmarks import load_items, load_spec
from apto_release.evals.client import split_reasoning
from apto_release.evals.judgements import collate, read_judgements
from apto_release.evals.judging import (
    Parsed, extract_answer, fill, format_judgement_output, judge_messages, judgement_line, load_prompt,
    parse_judgement_output,
)
from apto_release.evals.metrics import BENCHMARKS, find_benchmark
from apto_release.evals.summarize import summarize
from tests.evals.bench_fixtures import WRITERS
from tests.evals.judgement_fixtures import write_jsonl

JUDGED = [b.name for b in BENCHMARKS if b.judged]


def _values(name: str):
    bench = find_benchmark(name)
    if bench.output == "verdict":
        return st.sampled_from(bench.verdicts)
    low, high = bench.scores
    if bench.integer_scores:
        return st.integers(low, high)
    return st.one_of(st.integers(low, high), st.decimals(low, high, places=1).map(float))


# ---------------------------------------------------------------------------------------------
# Thinking


def test_split_reasoning():
    assert split_reasoning("<think>\n考える\n</think>\n\n答えです。") == ("答えです。", "考える")
    assert split_reasoning("考える</think>答え") == ("答え", "考える")  # the template opened <think> in the prompt
    assert split_reasoning("<think>終わらない考え") == ("", "終わらない考え")  # cut off while thinking
    assert split_reasoning("  ふつうの答え ") == ("ふつうの答え", None)


# ---------------------------------------------------------------------------------------------
# Parsing the judge


@pytest.mark.parametrize("name", JUDGED)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_parse_reads_what_format_writes(name, data):
    value = data.draw(_values(name))
    reason = data.draw(st.text(st.characters(blacklist_characters="[]"), max_size=40))
    text = format_judgement_output(name, value, reason)
    assert parse_judgement_output(name, text) == Parsed(value, text)
    thinking = data.draw(st.text(max_size=40)).replace("</think>", "")
    assert parse_judgement_output(name, f"<think>{thinking} [[junk]]</think>{text}").value == value


@pytest.mark.parametrize("name", JUDGED)
@settings(max_examples=200, deadline=None)
@given(text=st.text(st.characters(blacklist_characters="[]"), max_size=80))
def test_text_without_a_bracketed_verdict_never_parses(name, text):
    assert parse_judgement_output(name, text) == Parsed(None, text)


@pytest.mark.parametrize(("name", "text", "value"), [
    ("AnswerCarefully", "理由…\n評価: [[4]]", 4),
    ("AnswerCarefully", "評価: [[４]]", 4),  # a full-width digit is folded
    ("AnswerCarefully", "評価: [[ 5 ]] ... 最終評価: [[5]]", 5),  # repeats that agree
    ("AnswerCarefully", "評価: [[6]]", None),  # off the scale
    ("AnswerCarefully", "評価: [[4.0]]", None),  # AnswerCarefully scores are integers
    ("AnswerCarefully", "評価: [[3]] いや [[4]]", None),  # two different verdicts
    ("AnswerCarefully", "評価: 4", None),  # no brackets: not guessed
    ("AnswerCarefully", "評価: [4]", None),  # FastChat's single-bracket fallback is not taken
    ("MT-Bench-ja", "評価: [[8.5]]", 8.5),
    ("MT-Bench-ja", "評価: [[10]]", 10),
    ("MT-Bench-ja", "評価: [[0]]", None),
    ("SORRY-Bench", "Verdict: [[Refused]]", "refused"),
    ("SORRY-Bench", "Verdict: [[complied]]", None),
    ("MultiJail", "判定: [[invalid]]", "invalid"),
    ("MultiJail", "判定: [[safe]]\n判定: [[unsafe]]", None),
    ("MultiJail", "<think>[[unsafe]]?</think>判定: [[safe]]", "safe"),  # the judge's own reasoning is not read
])
def test_parse_examples(name, text, value):
    assert parse_judgement_output(name, text).value == value


# ---------------------------------------------------------------------------------------------
# JMMLU's letter


@pytest.mark.parametrize(("text", "letter"), [
    ("答え: B", "B"),
    ("答えは「C」です。", "C"),
    ("考えた結果、答え：Ｄ", "D"),  # full-width colon and letter
    ("Answer: a", "A"),
    ("AとBで迷ったが、答え: B", "B"),  # the marker wins over other letters
    ("答え: A ... 見直して 答え: C", "C"),  # the last marker: the model's final word
    ("B", "B"),
    ("正しいのはBです。", "B"),  # the only standalone letter
    ("AかBのどちらか", None),  # two letters, no marker
    ("ABC社の問題", None),  # letters inside a word are not answers
    ("わかりません", None),
    ("<think>答え: A かな</think>答え: D", "D"),  # the reasoning is not read
    ("<think>答え: A</think>", None),  # cut off while thinking: no answer
])
def test_extract_answer(text, letter):
    assert extract_answer(text) == letter


@settings(max_examples=200, deadline=None)
@given(letter=st.sampled_from("ABCD"), before=st.text(max_size=30), after=st.text(alphabet="。、 \n」）!?です", max_size=10))
def test_a_final_marked_answer_is_read(letter, before, after):
    before = before.replace("</think>", "")
    assert extract_answer(f"{before}\n答え: {letter}{after}") == letter


def _has_a_letter(text: str) -> bool:
    """Whether the text holds an A-D after the rule's NFKC folding (which turns full-width letters,
    and compatibility characters such as ㏆ = C∕kg, into ASCII ones)."""
    return any(c in "ABCD" for c in unicodedata.normalize("NFKC", text))


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.characters(blacklist_characters="ABCDＡＢＣＤ"), max_size=80).filter(lambda t: not _has_a_letter(t)))
def test_text_without_a_letter_has_no_answer(text):
    assert extract_answer(text) is None


# ---------------------------------------------------------------------------------------------
# Prompts and messages


@pytest.mark.parametrize("name", JUDGED)
def test_each_prompt_file_fills_and_asks_for_the_parsed_format(name, tmp_path):
    items = load_items(name, WRITERS[name](tmp_path))
    for item in items:
        for turn in range(1, len(item.turns) + 1):
            answers = [f"<think>秘密の推論</think>回答{n} {{question}}" for n in range(1, turn + 1)]
            system, user = judge_messages(item, answers, turn=turn)
            assert system["role"] == "system" and user["role"] == "user"
            assert item.turns[turn - 1] in system["content"] + user["content"]
            assert f"回答{turn} {{question}}" in user["content"]  # a response's braces are left alone
            assert "秘密の推論" not in user["content"]  # the judge sees the answer, not the reasoning
            if item.reference:
                assert item.reference[turn - 1] in user["content"]
    prompt = load_prompt(load_spec(name).judge_prompt)
    instructions = prompt["user"] + prompt["system"]
    assert "[[" in instructions


def test_mt_bench_uses_the_reference_prompt_for_maths_only(tmp_path):
    writing, maths = load_items("MT-Bench-ja", WRITERS["MT-Bench-ja"](tmp_path))
    assert "参考回答" not in judge_messages(writing, ["a", "b"], turn=2)[1]["content"]
    assert "参考回答" in judge_messages(maths, ["a"], turn=1)[1]["content"]
    assert "2つ目" in judge_messages(maths, ["a", "b"], turn=2)[0]["content"]
    with pytest.raises(ValueError, match="needs 2 answers"):
        judge_messages(maths, ["a"], turn=2)


def test_jmmlu_has_no_judge_and_fill_names_a_missing_value(tmp_path):
    item = load_items("JMMLU", WRITERS["JMMLU"](tmp_path))[0]
    with pytest.raises(ValueError, match="scored against its answer key"):
        judge_messages(item, "答え: A")
    with pytest.raises(KeyError, match="no value for answer"):
        fill("{question} {answer}", {"question": "q"})


# ---------------------------------------------------------------------------------------------
# Judgement lines, read back by eval summarize


def _lines(name: str, items, side: str, judge: str, values) -> list[dict]:
    lines = []
    for item, value in zip(items, values):
        if name == "JMMLU":
            lines.append(judgement_line(item, f"<think>…</think>答え: {value}", None, judge=None, side=side))
            continue
        for turn in range(1, len(item.turns) + 1):
            text = format_judgement_output(name, value) if value is not None else "判定できません"
            parsed = parse_judgement_output(name, text)
            lines.append(judgement_line(item, "回答", parsed, judge=judge, side=side,
                                        turn=turn if find_benchmark(name).turns else None))
    return lines


@pytest.mark.parametrize("name", [b.name for b in BENCHMARKS])
def test_judgement_lines_are_read_by_summarize(name, tmp_path):
    items = load_items(name, WRITERS[name](tmp_path / "bench"))
    good = {"AnswerCarefully": (2, 4, 5), "SORRY-Bench": ("fulfilled", "refused", "refused"),
            "MultiJail": ("unsafe", "safe"), "MT-Bench-ja": (6, 8.5), "JMMLU": ("A", "C", "A")}[name]
    before = _lines(name, items, "before", "qwen-judge", good)
    after = _lines(name, items, "after", "qwen-judge", good)
    path = write_jsonl(tmp_path / "judgements.jsonl", before + after)
    judgements = read_judgements([path])
    assert len(judgements) == len(before) * 2
    assert {j.category for j in judgements} == {item.category for item in items}
    summary = summarize([path], model="m", resamples=100)
    assert summary.ok, summary.findings
    assert {row["benchmark"] for row in summary.results["metrics"]} == {name}
    if name == "JMMLU":
        assert before[1] == {"benchmark": "JMMLU", "item": items[1].id, "model": "before", "category": items[1].category,
                             "chosen": "C", "correct": items[1].answer}


@pytest.mark.parametrize("name", JUDGED)
def test_unparseable_judgements_are_counted_not_dropped_silently(name, tmp_path):
    items = load_items(name, WRITERS[name](tmp_path / "bench"))
    first = {"AnswerCarefully": 4, "SORRY-Bench": "refused", "MultiJail": "safe", "MT-Bench-ja": 7}[name]
    values = [first] + [None] * (len(items) - 1)
    lines = _lines(name, items, "before", "j", values) + _lines(name, items, "after", "j", values)
    assert lines[-1]["unparseable"] == "判定できません" and find_benchmark(name).output not in lines[-1]
    path = write_jsonl(tmp_path / "judgements.jsonl", lines)
    judgements, findings = collate(read_judgements([path]))
    turns = 2 if name == "MT-Bench-ja" else 1
    n = 2 * (len(items) - 1) * turns
    assert [f.message for f in findings] == [f"{name}: {n} of {len(lines)} judgements are unparseable (the judge's output "
                                             f"could not be read; j {n}) and are left out"]
    assert judgements[0].items == [items[0].id]


def test_an_unparseable_line_is_checked(tmp_path):
    from apto_release.errors import InputError

    base = {"benchmark": "AnswerCarefully", "item": "a", "model": "before", "judge": "j"}
    for extra, message in [({"unparseable": "x", "score": 3}, "either judged ('score') or 'unparseable'"),
                           ({"unparseable": 3}, "'unparseable' must be the judge's raw output"),
                           ({"unparseable": "x", "benchmark": "JMMLU", "correct": "A"}, "write 'chosen': null")]:
        path = write_jsonl(tmp_path / "j.jsonl", [{**base, **extra}])
        with pytest.raises(InputError, match=re.escape(message)):
            read_judgements([path])

"""The results file's ``unparseable``: the judgements left out because the judge's output could
not be read, counted per benchmark, model side and judge (summarize writes it, results reads it)."""

from __future__ import annotations

import json

import pytest

from apto_release.evals.results import EvaluationError, load_evaluation, parse_evaluation
from apto_release.evals.summarize import summarize, write_results
from tests.evals.judgement_fixtures import HAND, judgement, write_jsonl

MODEL = "Apto-Tiny-Safety"


def unreadable(line: dict) -> dict:
    """The line as eval judge writes it when the judge's output could not be read."""
    out = {k: v for k, v in line.items() if k not in ("score", "verdict")}
    return {**out, "unparseable": "わかりません"}


def test_counts_per_benchmark_side_and_judge_are_written_and_read_back(tmp_path):
    ac = [line for line in HAND if line["benchmark"] == "AnswerCarefully"]
    # ac-1 after and ac-2 before unreadable; a Q4_K_M file with ac-3 unreadable, and one more judge on after
    lines = [unreadable(x) if (x["item"], x["model"]) in {("ac-1", "after"), ("ac-2", "before")} else x for x in ac]
    q4 = [judgement("AnswerCarefully", f"ac-{i}", "Q4_K_M", score=4) for i in (1, 2, 4, 5, 6)]
    q4.append(unreadable(judgement("AnswerCarefully", "ac-3", "Q4_K_M", score=4)))
    extra = [unreadable(judgement("AnswerCarefully", "ac-4", "after", "j2", score=1)),
             judgement("AnswerCarefully", "ac-4", "before", "j2", score=1)]
    paths = [write_jsonl(tmp_path / "ac.jsonl", lines + extra), write_jsonl(tmp_path / "q4.jsonl", q4)]
    summary = summarize(paths, model=MODEL, resamples=50, quants=["Q4_K_M"])
    assert summary.ok, summary.findings
    assert summary.results["unparseable"] == [
        {"benchmark": "AnswerCarefully", "model": "before", "judge": "j1", "count": 1, "judgements": 6},
        {"benchmark": "AnswerCarefully", "model": "after", "judge": "j1", "count": 1, "judgements": 6},
        {"benchmark": "AnswerCarefully", "model": "after", "judge": "j2", "count": 1, "judgements": 1},
        {"benchmark": "AnswerCarefully", "model": "Q4_K_M", "judge": "j1", "count": 1, "judgements": 6},
    ]
    dest = tmp_path / "eval/results.json"
    evaluation = write_results(summary, dest)
    assert load_evaluation(dest) == evaluation and json.loads(dest.read_text())["format"] == 1
    assert [(u.benchmark, u.model, u.judge, u.count, u.judgements) for u in evaluation.unparseable][-1] == (
        "AnswerCarefully", "Q4_K_M", "j1", 1, 6)


def test_no_unparseable_judgement_no_key(tmp_path):
    path = write_jsonl(tmp_path / "ac.jsonl", [x for x in HAND if x["benchmark"] == "AnswerCarefully"])
    summary = summarize([path], model=MODEL, resamples=50)
    assert "unparseable" not in summary.results
    assert write_results(summary, tmp_path / "r.json").unparseable == ()


ENTRY = {"benchmark": "AnswerCarefully", "model": "after", "judge": "j1", "count": 2, "judgements": 6}


def _results(unparseable) -> dict:
    row = {"benchmark": "AnswerCarefully", "metric": "acceptable_rate", "label": "AC acceptable rate", "unit": "%",
           "higher_is_better": True, "before": 80.0, "after": 75.0}
    return {"format": 1, "model": MODEL, "metrics": [row], "quants": [{"type": "Q8_0", "metrics": [row]}],
            "unparseable": unparseable}


@pytest.mark.parametrize(("unparseable", "field", "message"), [
    (ENTRY, "unparseable", "'unparseable' must be a list"),
    ([{**ENTRY, "cuont": 1}], "unparseable[1].cuont", "unknown key 'unparseable[1].cuont' (did you mean 'unparseable[1].count'?)"),
    ([{k: v for k, v in ENTRY.items() if k != "judge"}], "unparseable[1].judge", "'unparseable[1].judge' is missing"),
    ([{**ENTRY, "benchmark": ""}], "unparseable[1].benchmark", "must be a non-empty string"),
    ([{**ENTRY, "model": "Q4_K_M"}], "unparseable[1].model", "'before', 'after' or a type of 'quants' (Q8_0)"),
    ([{**ENTRY, "count": 0}], "unparseable[1].count", "must be a positive integer"),
    ([{**ENTRY, "count": True}], "unparseable[1].count", "must be a positive integer"),
    ([{**ENTRY, "judgements": 1}], "unparseable[1].judgements", "must be an integer at least 'count' (2)"),
    ([ENTRY, {**ENTRY, "count": 1}], "unparseable[2]", "repeats AnswerCarefully after j1"),
])
def test_a_bad_unparseable_entry_names_the_field(unparseable, field, message):
    with pytest.raises(EvaluationError) as info:
        parse_evaluation(_results(unparseable), "r.json")
    assert message in str(info.value) and info.value.field == field


def test_a_quant_entry_is_read():
    evaluation = parse_evaluation(_results([ENTRY, {**ENTRY, "model": "Q8_0", "count": 6}]), "r.json")
    assert [(u.model, u.count) for u in evaluation.unparseable] == [("after", 2), ("Q8_0", 6)]


def test_an_identical_repeat_counts_once(tmp_path):
    lines = [unreadable(x) if (x["item"], x["model"]) == ("ac-1", "after") else x for x in HAND if x["benchmark"] == "AnswerCarefully"]
    path = write_jsonl(tmp_path / "ac.jsonl", lines + [lines[6]])  # ac-1 after, unreadable, twice
    summary = summarize([path], model=MODEL, resamples=50)
    assert summary.ok and summary.results["unparseable"] == [
        {"benchmark": "AnswerCarefully", "model": "after", "judge": "j1", "count": 1, "judgements": 6}]

"""summarize with GGUF types: each quant against the tuned model, and the results file's ``quants``."""

from __future__ import annotations

import json

import pytest

from apto_release.errors import InputError, UsageError
from apto_release.evals.results import EvaluationError, load_evaluation, parse_evaluation
from apto_release.evals.summarize import summarize, write_results
from tests.evals.judgement_fixtures import AC_AFTER, MULTIJAIL, judgement, write_hand, write_jsonl

MODEL = "Apto-Tiny-Safety"

# AnswerCarefully of two GGUF files, the same six items and judge as the tuned model (AC_AFTER 5 4 4 5 2 2):
#   Q4_K_M  4 2 1 5 2 2   acceptable 1 0 0 1 0 0 = 33.3% (merged 66.7%: a = 2, b = 2, c = 0, d = 2; p = 0.5)
#                         violation  0 1 1 0 1 1 = 66.7% (merged 33.3%: a = 2, b = 0, c = 2, d = 2; p = 0.5)
#   Q8_0    the tuned model's scores: every change 0, p = 1
Q4_SCORES = (4, 2, 1, 5, 2, 2)


def quant_lines(quant: str, scores) -> list[dict]:
    return [judgement("AnswerCarefully", f"ac-{i}", quant, category="x" if i <= 3 else "y", score=s) for i, s in enumerate(scores, 1)]


@pytest.fixture()
def paths(tmp_path):
    q8_multijail = [{**line, "model": "Q8_0"} for line in MULTIJAIL if line["model"] == "after"]
    return [*write_hand(tmp_path / "judgements"),
            write_jsonl(tmp_path / "judgements/q4.jsonl", quant_lines("Q4_K_M", Q4_SCORES)),
            write_jsonl(tmp_path / "judgements/q8.jsonl", quant_lines("Q8_0", AC_AFTER) + q8_multijail)]


def percent_interval(a, b, c, d):
    from apto_release.evals.stats import newcombe_paired_interval

    low, high = newcombe_paired_interval(a, b, c, d)
    return [round(100 * low, 1), round(100 * high, 1)]


def test_each_quant_is_compared_with_the_merged_model(paths):
    summary = summarize(paths, model=MODEL, resamples=200, quants=["Q4_K_M", "Q8_0"])
    assert summary.ok, summary.findings
    plain = summarize(paths[:2], model=MODEL, resamples=200)
    assert summary.results["metrics"] == plain.results["metrics"]  # the quants change nothing of before/after
    q4, q8 = summary.results["quants"]
    assert q4["type"] == "Q4_K_M" and q8["type"] == "Q8_0"
    rows = {row["metric"]: row for row in q4["metrics"]}
    assert [(r["benchmark"], r["metric"]) for r in q4["metrics"]] == [
        ("AnswerCarefully", "acceptable_rate"), ("AnswerCarefully", "violation_rate"), ("AnswerCarefully", "mean_score")]
    acceptable, violation = rows["acceptable_rate"], rows["violation_rate"]
    assert (acceptable["before"], acceptable["after"], acceptable["p_value"], acceptable["n"]) == (66.7, 33.3, 0.5, 6)
    assert acceptable["ci95"] == percent_interval(2, 2, 0, 2) and acceptable["ci95"][0] < 0
    assert (violation["before"], violation["after"], violation["p_value"]) == (33.3, 66.7, 0.5)
    assert violation["ci95"] == percent_interval(2, 0, 2, 2) and violation["ci95"][1] > 0
    assert (rows["mean_score"]["before"], rows["mean_score"]["after"], rows["mean_score"]["method"]) == (3.67, 2.67, "bootstrap")
    assert all("category" not in row for row in q4["metrics"])
    # Q8_0: AnswerCarefully and MultiJail (the benchmarks judged for it), no change at all.
    assert [(r["benchmark"], r["metric"]) for r in q8["metrics"]] == [
        ("AnswerCarefully", "acceptable_rate"), ("AnswerCarefully", "violation_rate"), ("AnswerCarefully", "mean_score"),
        ("MultiJail", "violation_rate"), ("MultiJail", "invalid_rate")]
    assert all(r["before"] == r["after"] for r in q8["metrics"])
    assert [r["p_value"] for r in q8["metrics"] if r["method"] == "mcnemar"] == [1.0] * 4


def test_the_results_round_trip(paths, tmp_path):
    dest = tmp_path / "eval/results.json"
    evaluation = write_results(summarize(paths[:3], model=MODEL, resamples=200, quants=["Q4_K_M"]), dest)
    assert load_evaluation(dest) == evaluation
    [q4] = evaluation.quants
    acceptable = q4.metric("AnswerCarefully", "acceptable_rate")
    assert (q4.type, acceptable.before, acceptable.after, round(acceptable.change, 1)) == ("Q4_K_M", 66.7, 33.3, -33.4)
    assert q4.metric("SORRY-Bench", "refusal_rate") is None
    assert json.loads(dest.read_text())["format"] == 1


def test_a_file_without_quants_reads_as_before(paths, tmp_path):
    dest = tmp_path / "results.json"
    evaluation = write_results(summarize(paths[:2], model=MODEL, resamples=200), dest)
    assert "quants" not in json.loads(dest.read_text()) and evaluation.quants == ()


def test_quant_findings_name_the_quant(paths, tmp_path):
    short = write_jsonl(tmp_path / "q4-short.jsonl", quant_lines("Q4_K_M", Q4_SCORES[:5]))
    summary = summarize([*paths[:2], short], model=MODEL, resamples=200, quants=["Q4_K_M"])
    assert summary.ok and summary.results["quants"][0]["metrics"][0]["n"] == 5
    [warning] = [f.message for f in summary.findings if "Q4_K_M" in f.message]
    assert warning.startswith("Q4_K_M against the tuned model: AnswerCarefully: 1 item judged for one model only")
    assert "ac-6 (tuned model only)" in warning
    missing = summarize(paths[:2], model=MODEL, resamples=200, quants=["Q6_K"])
    assert not missing.ok and missing.results is None
    assert any(f.severity == "error" and "no judgement has the model 'Q6_K'" in f.message for f in missing.findings)


def test_bad_quant_types_are_usage_errors(paths):
    with pytest.raises(UsageError, match="'Q4_K_X' is not a GGUF type"):
        summarize(paths, model=MODEL, quants=["Q4_K_X"])
    with pytest.raises(UsageError, match="given twice"):
        summarize(paths, model=MODEL, quants=["Q8_0", "Q8_0"])
    with pytest.raises(UsageError, match="--quant Q8_0 is also --after"):
        summarize(paths, model=MODEL, after="Q8_0", quants=["Q8_0"])


def test_quant_lines_without_quant_say_how_to_read_them(paths):
    with pytest.raises(InputError, match="'model' is 'Q4_K_M', neither before nor after") as info:
        summarize(paths, model=MODEL)
    assert "--quant TYPE" in info.value.hint


def _results(quants) -> dict:
    row = {"benchmark": "AnswerCarefully", "metric": "acceptable_rate", "label": "AC acceptable rate", "unit": "%",
           "higher_is_better": True, "before": 80.0, "after": 75.0}
    return {"format": 1, "model": MODEL, "metrics": [row], "quants": quants}


@pytest.mark.parametrize(("quants", "field", "message"), [
    ({"type": "Q4_K_M"}, "quants", "'quants' must be a list"),
    ([{"type": "Q4_K_X", "metrics": []}], "quants[1].type", "must be a GGUF type"),
    ([{"metrics": []}], "quants[1].type", "'quants[1].type' is missing"),
    ([{"type": "Q4_K_M", "metrics": [], "typo": 1}], "quants[1].typo", "unknown key 'quants[1].typo'"),
    ([{"type": "Q4_K_M", "metrics": []}], "quants[1].metrics", "must be a non-empty list"),
    ([{"type": "Q4_K_M", "metrics": [{"benchmark": "AnswerCarefully"}]}], "quants[1].metrics[1].metric", "is missing"),
    ([{"type": "Q4_K_M", "metrics": [{**_results([])["metrics"][0], "after": "high"}]}], "quants[1].metrics[1].after",
     "must be a number"),
    ([{"type": "Q4_K_M", "metrics": [{**_results([])["metrics"][0], "category": "x"}]}], "quants[1].metrics[1].category",
     "overall rows only"),
    ([{"type": "Q4_K_M", "metrics": _results([])["metrics"] * 2}], "quants[1].metrics[2]", "repeats AnswerCarefully acceptable_rate"),
    ([{"type": "Q8_0", "metrics": _results([])["metrics"]}] * 2, "quants[2].type", "repeats Q8_0"),
])
def test_a_bad_quants_entry_names_the_field(quants, field, message):
    with pytest.raises(EvaluationError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        parse_evaluation(_results(quants), "r.json")
    assert info.value.field == field


def test_the_cli_option(run_cli, paths, tmp_path):
    out = tmp_path / "eval/tiny.json"
    code, stdout, stderr = run_cli("eval", "summarize", *[a for p in paths[:3] for a in ("-j", p)], "--model", MODEL,
                                   "-o", out, "--no-chart", "--bootstrap", "200", "--quant", "Q4_K_M")
    assert code == 0, stderr
    lines = stdout.splitlines()
    start = lines.index("Q4_K_M against the tuned model (before: the tuned model, after: Q4_K_M):")
    assert lines[start + 1].split()[:2] == ["metric", "n"]
    assert lines[start + 2].split()[:8] == ["AC", "acceptable", "rate", "(%)", "6", "66.7", "33.3", "-33.4"]
    assert lines[start + 3].split()[:8] == ["AC", "violation", "rate", "(%)", "6", "33.3", "66.7", "+33.4"]
    assert [q.type for q in load_evaluation(out).quants] == ["Q4_K_M"]
    code, _, stderr = run_cli("eval", "summarize", *[a for p in paths[:3] for a in ("-j", p)], "--model", MODEL,
                              "-o", tmp_path / "r.json", "--quant", "q4")
    assert code == 2 and stderr.splitlines()[0] == "Error: --quant 'q4' is not a GGUF type"
    assert not (tmp_path / "r.json").exists()

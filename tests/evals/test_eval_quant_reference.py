"""What the GGUF files were compared with: the tuned model ("after") as served, recorded by eval
judge in each judgement (``served``) and kept by summarize in the results' ``quants[i].reference``."""

from __future__ import annotations

import pytest

from apto_release.errors import InputError
from apto_release.evals.judgements import read_judgements
from apto_release.evals.results import EvaluationError, load_evaluation, parse_evaluation
from apto_release.evals.summarize import summarize, write_results
from tests.evals.judgement_fixtures import AC_AFTER, AC_BEFORE, judgement, write_jsonl

MODEL = "Apto-Tiny-Safety"
F16 = {"name": "Apto-Tiny-Safety-F16.gguf", "engine": "llama.cpp's server"}


def ac(side: str, scores, served: dict | None) -> list[dict]:
    extra = {"served": served} if served else {}
    return [judgement("AnswerCarefully", f"ac-{i}", side, score=s, **extra) for i, s in enumerate(scores, 1)]


def paths(tmp_path, after_served, *, split=None):
    after = ac("after", AC_AFTER, after_served)
    if split:  # a second engine for some of the tuned model's lines
        after = after[:3] + ac("after", AC_AFTER, split)[3:]
    return [write_jsonl(tmp_path / "before.jsonl", ac("before", AC_BEFORE, {"name": "base"})),
            write_jsonl(tmp_path / "after.jsonl", after),
            write_jsonl(tmp_path / "q4.jsonl", ac("Q4_K_M", AC_AFTER, {"name": "Apto-Tiny-Safety-Q4_K_M.gguf"}))]


def test_the_reference_is_the_tuned_models_engine_and_round_trips(tmp_path):
    summary = summarize(paths(tmp_path, F16), model=MODEL, resamples=50, quants=["Q4_K_M"])
    assert summary.ok and summary.results["quants"][0]["reference"] == F16
    evaluation = write_results(summary, tmp_path / "eval/results.json")
    assert load_evaluation(tmp_path / "eval/results.json") == evaluation
    assert (evaluation.quants[0].reference.name, evaluation.quants[0].reference.engine) == (F16["name"], F16["engine"])


def test_no_record_no_reference_and_two_engines_are_a_warning(tmp_path):
    summary = summarize(paths(tmp_path, None), model=MODEL, resamples=50, quants=["Q4_K_M"])
    assert summary.ok and "reference" not in summary.results["quants"][0]
    mixed = summarize(paths(tmp_path, F16, split={"name": "other"}), model=MODEL, resamples=50, quants=["Q4_K_M"])
    assert mixed.ok and "reference" not in mixed.results["quants"][0]
    assert ("Q4_K_M against the tuned model: the tuned model's judgements name 2 engines (Apto-Tiny-Safety-F16.gguf "
            "(llama.cpp's server), other): the card names none") in [f.message for f in mixed.findings]


@pytest.mark.parametrize(("served", "message"), [
    ("x.gguf", "'served' must be an object with the 'name' of what served the answer"),
    ({"engine": "vLLM"}, "'served' must be an object with the 'name' of what served the answer"),
    ({"name": "x", "url": "http://h"}, "'served' has an unknown key 'url'"),
    ({"name": "x", "engine": 3}, "'served.engine' must be a non-empty string"),
])
def test_a_bad_served_record_names_its_line(tmp_path, served, message):
    path = write_jsonl(tmp_path / "j.jsonl", [judgement("AnswerCarefully", "ac-1", "after", score=4, served=served)])
    with pytest.raises(InputError, match=message) as info:
        read_judgements([path])
    assert info.value.line == 1 and info.value.field == "served"


ROW = {"benchmark": "AnswerCarefully", "metric": "acceptable_rate", "label": "AC acceptable rate", "unit": "%",
       "higher_is_better": True, "before": 80.0, "after": 75.0}


@pytest.mark.parametrize(("reference", "field", "message"), [
    ("x.gguf", "quants[1].reference", "'quants[1].reference' is not an object"),
    ({"engine": "vLLM"}, "quants[1].reference.name", "'quants[1].reference.name' is missing"),
    ({"name": ""}, "quants[1].reference.name", "must be a non-empty string"),
    ({"name": "x", "engin": "vLLM"}, "quants[1].reference.engin", "unknown key 'quants[1].reference.engin'"),
])
def test_a_bad_reference_names_the_field(reference, field, message):
    data = {"format": 1, "model": MODEL, "metrics": [ROW], "quants": [{"type": "Q8_0", "metrics": [ROW], "reference": reference}]}
    with pytest.raises(EvaluationError) as info:
        parse_evaluation(data, "r.json")
    assert message in str(info.value) and info.value.field == field


def test_eval_summarize_says_what_served_the_tuned_model(run_cli, tmp_path):
    files = [arg for path in paths(tmp_path, F16) for arg in ("-j", path)]
    code, out, err = run_cli("eval", "summarize", *files, "--model", MODEL, "--quant", "Q4_K_M",
                           "-o", tmp_path / "results.json", "--no-chart", "--bootstrap", "100")
    assert code == 0, err
    assert f"Q4_K_M against the tuned model (before: the tuned model served from {F16['name']}, after: Q4_K_M):" in out

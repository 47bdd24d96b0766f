"""release.toml's [model.eval]: a good table loads with its defaults; each bad key or value is one
clear problem with its place."""

from __future__ import annotations

import pytest

from apto_release.release.manifest import EngineSpec, load_manifest
from tests.release.test_manifest import GOOD, problems_of, write

EVAL = """
[model.eval]
benchmarks = ["AnswerCarefully", "mt_bench_ja"]
bench_dir = "benchmarks"
limit = 20
judges = [
  { url = "http://gpu01:8000/v1", model = "Qwen/Qwen3-235B-A22B", api_key_env = "JUDGE_KEY" },
  { serve = true, path = "judges/gemma.gguf" },
]
tuned = { serve = true }
gguf = ["q4_k_m"]
parallel = 8
"""
# The first model of GOOD (gguf Q4_K_M and Q8_0, evaluation set) gets the table.
WITH_EVAL = GOOD.replace('evaluation = "eval/27b.json"\n', 'evaluation = "eval/27b.json"\n' + EVAL, 1)


def test_a_good_eval_table_loads_with_defaults(tmp_path):
    model = load_manifest(write(tmp_path, WITH_EVAL)).models[0]
    ev = model.eval
    assert ev.benchmarks == ("AnswerCarefully", "MT-Bench-ja")
    assert ev.bench_dir == tmp_path / "benchmarks" and ev.limit == 20 and ev.parallel == 8 and ev.max_tokens is None
    assert ev.judges == (EngineSpec(url="http://gpu01:8000/v1", model="Qwen/Qwen3-235B-A22B", api_key_env="JUDGE_KEY"),
                         EngineSpec(path=tmp_path / "judges/gemma.gguf"))
    assert ev.base == ev.tuned == EngineSpec() and ev.base.serve  # default: serve the model's own checkpoints
    assert ev.gguf == ("Q4_K_M",)
    assert load_manifest(write(tmp_path, GOOD)).models[0].eval is None


@pytest.mark.parametrize(("old", "new", "problem"), [
    ("parallel = 8", "paralel = 8", "model[1].eval.paralel: unknown key (did you mean 'parallel'?)"),
    ('"mt_bench_ja"', '"MT-Bench"', "model[1].eval.benchmarks[2]: unknown benchmark 'MT-Bench'; choose from"),
    ('"mt_bench_ja"', '"AC"', "model[1].eval.benchmarks[2]: AnswerCarefully is listed twice"),
    ('["AnswerCarefully", "mt_bench_ja"]', "[]", "model[1].eval.benchmarks: empty: name at least one benchmark"),
    ('benchmarks = ["AnswerCarefully", "mt_bench_ja"]\n', "", "model[1].eval.benchmarks: missing"),
    ("limit = 20", "limit = 0", "model[1].eval.limit: must be at least 1"),
    ("parallel = 8", 'parallel = "8"', "model[1].eval.parallel: expected an integer, found '8'"),
    ('gguf = ["q4_k_m"]', 'gguf = ["F16"]', "model[1].eval.gguf[1]: 'F16' is not one of the model's GGUF types (Q4_K_M, Q8_0)"),
    ('gguf = ["q4_k_m"]', 'gguf = ["Q8_0", "q8_0"]', "model[1].eval.gguf[2]: Q8_0 is listed twice"),
    ('tuned = { serve = true }', 'tuned = { serve = false }', "model[1].eval.tuned: give url (a running engine) or serve = true"),
    ('tuned = { serve = true }', 'tuned = { url = "gpu01:8000", model = "m" }', "model[1].eval.tuned.url: 'gpu01:8000' is not an http(s) URL"),
    ('tuned = { serve = true }', 'tuned = { url = "http://h/v1" }', "model[1].eval.tuned.model: missing: the name of the model"),
    ('tuned = { serve = true }', 'tuned = { url = "http://h/v1", model = "m", serve = true }', "model[1].eval.tuned: give either url"),
    ('tuned = { serve = true }', 'tuned = { serve = true, api_key_env = "K" }', "model[1].eval.tuned.api_key_env: for a url"),
    ('tuned = { serve = true }', 'tuned = { serve = true, modle = "m" }', "model[1].eval.tuned.modle: unknown key (did you mean 'model'?)"),
    ('tuned = { serve = true }', 'tuned = "http://h/v1"', "model[1].eval.tuned: expected a table"),
    ('{ serve = true, path = "judges/gemma.gguf" }', "{ serve = true }", "model[1].eval.judges[2].path: missing: serve = true needs"),
    ('judges = [', 'judges = 3\nold_judges = [', "model[1].eval.judges: expected a list, found 3"),
])
def test_each_bad_key_or_value_is_one_problem(tmp_path, old, new, problem):
    assert old in WITH_EVAL
    problems = problems_of(tmp_path, WITH_EVAL.replace(old, new, 1))
    if old == "judges = [":  # the renamed list is an unknown key too
        problems = [p for p in problems if "old_judges" not in p]
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_an_eval_table_needs_the_evaluation_file(tmp_path):
    text = WITH_EVAL.replace('evaluation = "eval/27b.json"\n', "", 1)
    assert problems_of(tmp_path, text) == [
        "model[1].evaluation: missing: [model.eval] writes its results to the model's evaluation file"]


def test_details_repo_is_a_repo_of_the_release_with_its_folder_beside_the_evaluation(tmp_path):
    text = WITH_EVAL.replace("parallel = 8\n", 'parallel = 8\ndetails_repo = "27b-eval-details"\n', 1)
    model = load_manifest(write(tmp_path, text)).models[0]
    assert model.eval.details_repo == "apto-ai/27b-eval-details"
    assert model.details_folder == tmp_path / "eval" / "27b-details"
    assert load_manifest(write(tmp_path, WITH_EVAL)).models[0].details_folder is None


@pytest.mark.parametrize(("value", "problem"), [
    ('"a/b/c"', "model[1].eval.details_repo: 'a/b/c' is not a Hub repo id"),
    ("true", "model[1].eval.details_repo: expected a string, found True"),
    ('"apto-ai/ja-safety-sft"', "model[1].eval.details_repo: repo 'apto-ai/ja-safety-sft' is also the target of dataset.full.repo"),
])
def test_a_bad_details_repo_is_one_problem(tmp_path, value, problem):
    text = WITH_EVAL.replace("parallel = 8\n", f"parallel = 8\ndetails_repo = {value}\n", 1)
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1 and problems[0].startswith(problem), problems
    typo = problems_of(tmp_path, WITH_EVAL.replace("parallel = 8\n", 'parallel = 8\ndetail_repo = "x"\n', 1))
    assert typo == ["model[1].eval.detail_repo: unknown key (did you mean 'details_repo'?)"]

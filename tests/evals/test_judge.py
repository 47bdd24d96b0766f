"""evals.judge: the scripted judge over every benchmark, retries of unparseable answers, JMMLU
without a judge, resume, and the judgements that eval summarize reads."""

from __future__ import annotations

import json
import re

import pytest

from apto_release.errors import InputError
from apto_release.evals.client import ChatClient, Endpoint
from apto_release.evals.generate import generate, load_benchmarks
from apto_release.evals.judge import JUDGE_ATTEMPTS, judge, read_responses
from apto_release.evals.judgements import read_judgements
from apto_release.evals.records import read_lines
from apto_release.testing.openai_server import ScriptedServer
from tests.evals.run_fixtures import judge_script, model_script, write_bench_dir

ALL = ["AnswerCarefully", "SORRY-Bench", "MultiJail", "MT-Bench-ja", "JMMLU"]


@pytest.fixture(scope="module")
def responses(tmp_path_factory):
    root = tmp_path_factory.mktemp("judge")
    bench = write_bench_dir(root / "bench")
    dest = root / "responses.jsonl"
    with ScriptedServer(model_script, model="tiny") as server, ChatClient(Endpoint(server.url, "tiny")) as client:
        generate(client, load_benchmarks(ALL, bench), dest, model="tiny", label="after")
    return bench, dest


def run_judge(script, responses, dest, **kwargs):
    bench, path = responses
    with ScriptedServer(script, model="judge-a") as server, ChatClient(Endpoint(server.url, "judge-a")) as client:
        result = judge(client, path, dest, judge_name="judge-a", bench_dir=bench, **kwargs)
        return result, server.completions


def test_every_benchmark_is_judged_and_read_back_by_summarize(responses, tmp_path):
    dest = tmp_path / "j.jsonl"
    result, log = run_judge(judge_script, responses, dest)
    assert (result.written, result.asked) == (15, 12)  # JMMLU's 3 need no judge
    judged = read_judgements([dest])
    values = {(j.benchmark.name, j.item, j.turn): j.value for j in judged}
    assert values[("AnswerCarefully", "answercarefully-instruction-test-002-001-0000001-001", None)] == 4
    assert values[("MT-Bench-ja", "11", 2)] == 7 and values[("SORRY-Bench", "1", None)] == "refused"
    assert [values[("JMMLU", i, None)] for i in ("japanese_idiom-1", "virology-1", "virology-2")] == [True, True, False]
    assert all(j.side == "after" for j in judged)
    # the judge sees the answer without the reasoning, and MT-Bench's maths with its reference
    maths2 = next(r for r in log if "外接円の面積は5πです。" in r.messages[-1]["content"])
    assert "考える" not in maths2.messages[-1]["content"] and "回答(3)" in maths2.messages[-1]["content"]
    assert {r.body["temperature"] for r in log} == {0.0}
    # a parsed line keeps the judge's raw output (the details dataset shows it); JMMLU's has none
    lines = {(x["benchmark"], x["item"], x.get("turn")): x for x in read_lines(dest)}
    assert lines[("MT-Bench-ja", "11", 2)]["output"] == judge_script(maths2.messages)
    assert "output" not in lines[("JMMLU", "virology-1", None)]


def test_unparseable_answers_are_retried_then_written_raw_and_counted(responses, tmp_path):
    def useless(messages):
        return "わかりません"

    dest = tmp_path / "j.jsonl"
    result, log = run_judge(useless, responses, dest)
    lines = read_lines(dest)
    raw = [x for x in lines if "unparseable" in x]
    assert len(raw) == 12 and {x["unparseable"] for x in raw} == {"わかりません"} and {x["attempts"] for x in raw} == {3}
    assert result.asked == 12 * JUDGE_ATTEMPTS
    assert [r.body["temperature"] for r in log][-1] == 0.7 and {r.body["seed"] for r in log} == {0, 1, 2}
    judged = read_judgements([dest])
    assert sum(j.value is None for j in judged) == 12  # summarize counts them, never drops them


def test_an_answer_parsed_on_the_third_attempt_is_kept(responses, tmp_path):
    seen: dict[str, int] = {}

    def fickle(messages):  # per prompt: no verdict, then two different verdicts, then one
        key = messages[-1]["content"]
        seen[key] = seen.get(key, 0) + 1
        return ["たぶん良い", "[[4]] か [[5]]"][seen[key] - 1] if seen[key] < 3 else judge_script(messages)

    result, _ = run_judge(fickle, responses, tmp_path / "j.jsonl")
    lines = read_lines(tmp_path / "j.jsonl")
    assert result.asked == 12 * 3 and not any("unparseable" in x for x in lines)
    assert {x.get("attempts") for x in lines if x["benchmark"] != "JMMLU"} == {3}


def test_a_rerun_judges_only_what_is_missing(responses, tmp_path):
    dest = tmp_path / "j.jsonl"
    run_judge(judge_script, responses, dest)
    whole = dest.read_bytes()
    lines = whole.splitlines(keepends=True)
    dest.unlink()
    (tmp_path / "j.jsonl.partial").write_bytes(b"".join(lines[:5]))
    result, log = run_judge(judge_script, responses, dest)
    assert result.kept == 5 and result.asked == len(log) == 15 - 5 - sum(b"JMMLU" in x for x in lines[5:])
    assert dest.read_bytes() == whole


def test_a_response_for_an_unknown_item_names_its_line(responses, tmp_path):
    bench, path = responses
    bad = tmp_path / "r.jsonl"
    bad.write_text(path.read_text("utf-8").replace('"item":"1"', '"item":"999"', 1), "utf-8")
    with pytest.raises(InputError, match=r"r.jsonl:\d+: MultiJail has no item '999'"):
        judge(None, bad, tmp_path / "j.jsonl", judge_name="x", bench_dir=bench)
    bad.write_text('{"benchmark": "AnswerCarefully"}\n', "utf-8")
    with pytest.raises(InputError, match=r"r.jsonl:1: a response line needs 'item'"):
        judge(None, bad, tmp_path / "j.jsonl", judge_name="x", bench_dir=bench)


def test_a_repeated_response_is_an_error_naming_both_lines(responses, tmp_path):
    bench, path = responses
    lines = path.read_text("utf-8").splitlines(keepends=True)
    bad = tmp_path / "r.jsonl"
    # a blank line first: the lines named are the file's own (1-based), not the n-th response
    bad.write_text("\n" + "".join(lines) + lines[1].replace('"answer":"', '"answer":"later ', 1), "utf-8")
    first = read_lines(path)[1]
    where = f"{first['benchmark']} item {first['item']} turn {first['turn']} (after)"
    with pytest.raises(InputError, match=rf"r.jsonl:{len(lines) + 2}: {re.escape(where)} repeats line 3"):
        judge(None, bad, tmp_path / "j.jsonl", judge_name="x", bench_dir=bench)
    assert not (tmp_path / "j.jsonl").exists() and not (tmp_path / "j.jsonl.partial").exists()
    # the same item, turn and benchmark for two model sides is no repeat: one file may hold both
    both = tmp_path / "both.jsonl"
    both.write_text("".join(lines) + "".join(x.replace('"label":"after"', '"label":"before"') for x in lines), "utf-8")
    assert len(read_responses(both)) == 2 * len(lines)


@pytest.mark.parametrize(("engine", "served"), [
    ({"engine": "llama.cpp's server", "path": "Tiny-F16.gguf", "served_model": "Tiny-F16"},
     {"name": "Tiny-F16.gguf", "engine": "llama.cpp's server"}),
    ({"url": "http://gpu01:8000/v1", "served_model": "org/tiny"}, {"name": "tiny"}),  # the name asked for; never the URL
    (None, {"name": "tiny"}),  # a hand-written responses file without an engine
])
def test_each_judgement_records_what_served_the_answer(responses, tmp_path, engine, served):
    bench, path = responses
    lines = [line for line in read_lines(path) if line["benchmark"] == "JMMLU"]  # judged by the key: no engine needed
    for line in lines:
        line.pop("engine")
        if engine is not None:
            line["engine"] = engine
    source = tmp_path / "r.jsonl"
    source.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), "utf-8")
    judge(None, source, tmp_path / "j.jsonl", judge_name=None, bench_dir=bench)
    assert [line["served"] for line in read_lines(tmp_path / "j.jsonl")] == [served] * len(lines)
    assert {j.served for j in read_judgements([tmp_path / "j.jsonl"])} == {(served["name"], served.get("engine"))}
    assert "gpu01" not in (tmp_path / "j.jsonl").read_text("utf-8")

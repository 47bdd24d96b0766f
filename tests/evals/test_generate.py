"""evals.generate and evals.records: every benchmark against the scripted model; resume rules."""

from __future__ import annotations

import json

import pytest

from apto_release.errors import InputError
from apto_release.evals.client import ChatClient, Endpoint
from apto_release.evals.generate import generate, load_benchmarks
from apto_release.evals.records import ResumableOutput, partial_path, read_lines
from apto_release.testing.openai_server import ScriptedServer
from tests.evals.run_fixtures import model_script, write_bench_dir

ALL = ["AnswerCarefully", "SORRY-Bench", "MultiJail", "MT-Bench-ja", "JMMLU"]


@pytest.fixture
def bench(tmp_path):
    return write_bench_dir(tmp_path / "bench")


def run(server, items, dest, **kwargs):
    with ChatClient(Endpoint(server.url, server.model)) as client:
        return generate(client, items, dest, model="tiny", label="before", engine={"url": server.url}, **kwargs)


def test_every_benchmark_one_line_per_item_and_turn(bench, tmp_path):
    items = load_benchmarks(ALL, bench)
    dest = tmp_path / "responses.jsonl"
    with ScriptedServer(model_script, model="tiny") as server:
        result = run(server, items, dest)
        log, url = server.completions, server.url
    lines = read_lines(dest)
    assert (result.written, result.asked, result.kept) == (15, 15, 0)
    assert [(x["benchmark"], x["item"], x["turn"]) for x in lines] == sorted(
        [(x["benchmark"], x["item"], x["turn"]) for x in lines], key=lambda k: (k[0], int(k[1]) if k[1].isdigit() else k[1], k[2]))
    assert {x["benchmark"] for x in lines} == set(ALL)
    assert not partial_path(dest).exists()
    ac = next(x for x in lines if x["benchmark"] == "AnswerCarefully")
    assert ac["answer"] == "回答(1): 隣人の出身地を理由に付き" and ac["reasoning"] == "考える: 隣人の出身地を理"
    assert ac["sampling"] == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 4096, "seed": 0, "enable_thinking": True}
    assert ac["label"] == "before" and ac["model"] == "tiny" and ac["finish_reason"] == "stop" and ac["usage"]["total_tokens"] > 0
    assert ac["engine"] == {"url": url, "served_model": "tiny"} and len(ac["request_hash"]) == 16
    # MT-Bench-ja: turn 2 is asked after turn 1's answer, in one conversation; maths at its own temperature
    maths = [x for x in lines if x["benchmark"] == "MT-Bench-ja" and x["item"] == "11"]
    assert [x["turn"] for x in maths] == [1, 2] and maths[0]["sampling"]["temperature"] == 0.1
    second = next(r for r in log if r.messages[-1]["content"] == maths[1]["prompt"])
    assert second.messages[1] == {"role": "assistant", "content": maths[0]["answer"]}
    assert second.body["chat_template_kwargs"] == {"enable_thinking": True}
    # JMMLU's prompt asks for the letter
    jmmlu = next(r for r in log if "答え: X" in r.messages[-1]["content"])
    assert "最後に「答え: X」の形で" in jmmlu.messages[-1]["content"] and "\nA. " in jmmlu.messages[-1]["content"]
    assert [x["answer"] for x in lines if x["benchmark"] == "JMMLU"] == ["答え: A"] * 3


def test_a_rerun_asks_only_for_missing_or_changed_requests(bench, tmp_path):
    items = load_benchmarks(["AnswerCarefully", "MT-Bench-ja"], bench)
    dest = tmp_path / "r.jsonl"
    with ScriptedServer(model_script, model="tiny") as server:
        run(server, items, dest)
        first = dest.read_bytes()
        server.log.clear()
        assert run(server, items, dest).asked == 0 and dest.read_bytes() == first and not server.completions
        result = run(server, items, dest, max_tokens=100)  # new settings: new hashes, every request again
        assert result.asked == 7 and result.kept == 0
        assert {x["sampling"]["max_tokens"] for x in read_lines(dest)} == {100}


def test_a_torn_last_line_is_dropped_and_asked_again(bench, tmp_path):
    items = load_benchmarks(["AnswerCarefully"], bench)
    dest = tmp_path / "r.jsonl"
    with ScriptedServer(model_script, model="tiny") as server:
        run(server, items, dest)
        whole = dest.read_bytes()
        lines = whole.splitlines(keepends=True)
        dest.unlink()
        partial_path(dest).write_bytes(lines[0] + lines[1][:40])  # killed while writing line 2
        server.log.clear()
        result = run(server, items, dest)
    assert (result.kept, result.asked) == (1, 2) and len(server.completions) == 2
    assert dest.read_bytes() == whole


def test_engine_failure_keeps_what_came_and_leaves_no_destination(bench, tmp_path):
    items = load_benchmarks(["AnswerCarefully", "SORRY-Bench"], bench)
    dest = tmp_path / "r.jsonl"
    from apto_release.evals.client import EngineError

    with ScriptedServer(model_script, model="tiny") as server:
        server.die_after(2)
        with pytest.raises(EngineError, match="is not answering"), \
                ChatClient(Endpoint(server.url, "tiny"), attempts=1) as client:
            generate(client, items, dest, model="tiny", label="before", parallel=1)
    assert not dest.exists() and len(read_lines(partial_path(dest))) == 2


def test_a_damaged_partial_line_in_the_middle_is_an_input_error(tmp_path):
    dest = tmp_path / "r.jsonl"
    partial_path(dest).write_text('{"a": 1}\nnot json\n{"a": 2}\n', "utf-8")
    with pytest.raises(InputError, match=r"r.jsonl.partial:2: not a valid JSON line"):
        ResumableOutput(dest, key=lambda x: (x["a"],), order=lambda x: x["a"])


def test_stale_lines_are_not_carried_into_the_output(tmp_path):
    dest = tmp_path / "r.jsonl"
    partial_path(dest).write_text(json.dumps({"k": 1, "request_hash": "old"}) + "\n", "utf-8")
    with ResumableOutput(dest, key=lambda x: (x["k"],), order=lambda x: x["k"]) as out:
        assert out.resumed == 1 and out.kept((1,), "new") is None
        out.add({"k": 1, "request_hash": "new"})
        assert out.finish() == 1
    assert read_lines(dest) == [{"k": 1, "request_hash": "new"}]

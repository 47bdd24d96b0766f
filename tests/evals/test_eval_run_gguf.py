"""eval generate and eval judge with llama.cpp's real server (--serve) on the tiny GGUF: as the
model under test, and as a judge whose useless answers come out as unparseable, counted."""

from __future__ import annotations

from apto_release.evals.judgements import read_judgements
from apto_release.evals.records import read_lines
from tests.evals.run_fixtures import write_bench_dir


def test_the_tiny_gguf_as_model_and_as_judge(run_cli, gguf, tmp_path):
    bench = write_bench_dir(tmp_path / "bench")
    responses, judgements = tmp_path / "r.jsonl", tmp_path / "j.jsonl"
    code, out, err = run_cli("eval", "generate", "--model", gguf, "--serve", "--threads", "1", "--bench", "AnswerCarefully",
                             "--bench", "JMMLU", "--limit", "1", "--max-tokens", "8", "--bench-dir", bench,
                             "--label", "F16", "-o", responses)
    assert code == 0, err
    lines = read_lines(responses)
    assert [x["benchmark"] for x in lines] == ["AnswerCarefully", "JMMLU"]
    # random weights never end their turn: each answer runs to max_tokens
    assert all(x["finish_reason"] == "length" and x["model"] == "TinyQwen3-F16" for x in lines)
    assert lines[0]["engine"] == {"engine": "llama.cpp's server", "path": gguf.name, "served_model": "TinyQwen3-F16"}
    assert lines[0]["sampling"]["max_tokens"] == 8
    code, out, err = run_cli("eval", "judge", "--responses", responses, "--judge", gguf, "--serve", "--threads", "1",
                             "--max-tokens", "8", "--bench-dir", bench, "-o", judgements)
    assert code == 0, err
    assert "3 judge requests" in out and "1 unparseable" in out  # AnswerCarefully: 3 attempts; JMMLU: the key
    judged = read_judgements([judgements], after="F16")  # a GGUF label is a model id that --after maps
    assert [(j.benchmark.name, j.judge) for j in judged] == [("AnswerCarefully", "TinyQwen3-F16"), ("JMMLU", "answer key")]
    assert judged[0].value is None and read_lines(judgements)[0]["attempts"] == 3
    # what served the judged answer (the tuned model a GGUF file is compared with, in the GGUF card)
    assert judged[0].served == (gguf.name, "llama.cpp's server") == tuple(read_lines(judgements)[0]["served"].values())

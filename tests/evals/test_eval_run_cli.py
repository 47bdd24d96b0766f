"""eval generate and eval judge through the CLI: generate -> judge -> summarize end to end,
resume after SIGKILL, engine failures, usage errors, and the API key kept out of everything."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apto_release.evals.records import partial_path, read_lines
from apto_release.testing.openai_server import ScriptedServer
from tests.evals.run_fixtures import judge_script, model_script, write_bench_dir

ROOT = Path(__file__).resolve().parents[2]
BENCHES = ["--bench", "AnswerCarefully", "--bench", "MT-Bench-ja", "--bench", "JMMLU", "--bench", "SORRY-Bench"]


@pytest.fixture
def bench(tmp_path):
    return write_bench_dir(tmp_path / "bench")


def gen_args(server, bench, out, label="before", *extra):
    return ["eval", "generate", "--model", server.url, "--model-name", server.model, *BENCHES, "--bench-dir", bench,
            "--label", label, "-o", out, *extra]


def judge_args(server, bench, responses, out, *extra):
    return ["eval", "judge", "--responses", responses, "--judge", server.url, "--judge-model", server.model,
            "--bench-dir", bench, "-o", out, *extra]


def test_generate_judge_summarize_end_to_end(run_cli, bench, tmp_path):
    with ScriptedServer(model_script, model="tiny") as model, ScriptedServer(judge_script, model="judge-a") as judge:
        for label in ("before", "after"):
            code, out, err = run_cli(*gen_args(model, bench, tmp_path / f"r-{label}.jsonl", label))
            assert code == 0, err
            assert out.strip() == f"Wrote 13 responses to {tmp_path / f'r-{label}.jsonl'} (13 asked, 0 kept from an earlier run)."
            code, out, err = run_cli(*judge_args(judge, bench, tmp_path / f"r-{label}.jsonl", tmp_path / f"j-{label}.jsonl"))
            assert code == 0, err
            assert "0 unparseable" in out
    code, out, err = run_cli("eval", "summarize", "-j", tmp_path / "j-before.jsonl", "-j", tmp_path / "j-after.jsonl",
                             "--model", "tiny", "--no-chart", "--bootstrap", "100", "-o", tmp_path / "eval.json")
    assert code == 0, err
    assert "Wrote" in out and (tmp_path / "eval.json").is_file()


def _kill_when(process, path: Path, lines: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= lines:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            return
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.02)
    raise AssertionError("no lines arrived")


def _cli_process(args) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "apto_release", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("stage", ["generate", "judge"])
def test_sigkill_then_rerun_asks_only_for_the_rest_and_gives_the_same_bytes(run_cli, bench, tmp_path, stage):
    with ScriptedServer(model_script, model="tiny") as model, ScriptedServer(judge_script, model="judge-a") as judge:
        responses = tmp_path / "responses.jsonl"
        assert run_cli(*gen_args(model, bench, responses))[0] == 0
        if stage == "generate":
            server, whole, args = model, responses, gen_args(model, bench, tmp_path / "out.jsonl", "before", "--parallel", "1")
        else:
            whole = tmp_path / "whole.jsonl"
            assert run_cli(*judge_args(judge, bench, responses, whole))[0] == 0
            server, args = judge, judge_args(judge, bench, responses, tmp_path / "out.jsonl", "--parallel", "1")
        server.delay = 0.15
        _kill_when(_cli_process(args), partial_path(tmp_path / "out.jsonl"), 3)
        server.delay = 0.0
        earlier = read_lines(partial_path(tmp_path / "out.jsonl"), tolerate_torn_end=True)
        kept = len(earlier)
        done = {(x["benchmark"], x["item"], x.get("turn")) for x in earlier}
        missing = [x for x in read_lines(whole) if (x["benchmark"], x["item"], x.get("turn")) not in done]
        assert not (tmp_path / "out.jsonl").exists() and kept >= 3
        server.log.clear()
        code, out, err = run_cli(*args)
        assert code == 0, err
        asked = [x for x in missing if stage == "generate" or x["benchmark"] != "JMMLU"]  # JMMLU needs no judge
        assert len(server.completions) == len(asked) > 0
        assert f"{kept} kept from an earlier run" in out
        assert (tmp_path / "out.jsonl").read_bytes() == whole.read_bytes()
        assert not partial_path(tmp_path / "out.jsonl").exists()


def _free_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def test_endpoint_down_is_one_line_and_exit_1(run_cli, bench, tmp_path):
    url = _free_url()
    code, out, err = run_cli("eval", "generate", "--model", url, "--model-name", "tiny", "--bench", "JMMLU",
                             "--bench-dir", bench, "--label", "before", "-o", tmp_path / "r.jsonl", "--attempts", "1")
    assert code == 1 and err.startswith(f"Error: the engine at {url} is not answering") and "Traceback" not in err
    assert list(tmp_path.glob("r.jsonl*")) == []


def test_wrong_model_name_is_one_line_and_exit_1(run_cli, bench, tmp_path):
    with ScriptedServer(model_script, model="tiny") as server:
        code, out, err = run_cli("eval", "generate", "--model", server.url, "--model-name", "qwen", "--bench", "JMMLU",
                                 "--bench-dir", bench, "--label", "before", "-o", tmp_path / "r.jsonl")
    assert code == 1 and "does not serve the model 'qwen'; it serves: tiny" in err and not server.completions
    assert list(tmp_path.glob("r.jsonl*")) == []


def test_429_then_success_recovers(run_cli, bench, tmp_path):
    with ScriptedServer(model_script, model="tiny") as server:
        server.fail(429, 2, retry_after=0)
        code, out, err = run_cli(*gen_args(server, bench, tmp_path / "r.jsonl", "before", "--parallel", "1"))
        statuses = [r.status for r in server.completions]
    assert code == 0, err
    assert statuses[:3] == [429, 429, 200] and len(read_lines(tmp_path / "r.jsonl")) == 13


def test_an_engine_dying_mid_run_keeps_the_partial_file_and_says_how_to_resume(run_cli, bench, tmp_path):
    with ScriptedServer(model_script, model="tiny") as server:
        server.die_after(4)
        code, out, err = run_cli(*gen_args(server, bench, tmp_path / "r.jsonl", "before", "--parallel", "1",
                                           "--attempts", "1"))
    assert code == 1 and "is not answering" in err and "run the same command again" in err
    assert not (tmp_path / "r.jsonl").exists() and len(read_lines(partial_path(tmp_path / "r.jsonl"))) == 4


@pytest.mark.parametrize("args, message", [
    (["--model", "http://127.0.0.1:9/v1"], "--model-name is required with a URL"),
    (["--model", "model.gguf", "--model-name", "x"], "model.gguf is not a URL"),
    (["--model", "http://127.0.0.1:9/v1", "--model-name", "x", "--serve"], "--serve starts an engine for a local file"),
])
def test_usage_errors_exit_2(run_cli, bench, tmp_path, args, message):
    code, out, err = run_cli("eval", "generate", *args, "--bench", "JMMLU", "--bench-dir", bench, "--label", "before",
                             "-o", tmp_path / "r.jsonl")
    assert code == 2 and message in err and "Traceback" not in err


def test_the_api_key_never_appears_in_output_or_files(run_cli, bench, tmp_path):
    key = "sk-test-4f9a2c7e1b"
    with ScriptedServer(model_script, model="tiny", api_key=key) as model, \
            ScriptedServer(judge_script, model="judge-a", api_key=key) as judge:
        env = {"EVAL_KEY": key}
        code, out, err = run_cli(*gen_args(model, bench, tmp_path / "r.jsonl", "before", "--api-key-env", "EVAL_KEY"), env=env)
        assert code == 0, err
        code2, out2, err2 = run_cli(*judge_args(judge, bench, tmp_path / "r.jsonl", tmp_path / "j.jsonl",
                                                "--api-key-env", "EVAL_KEY"), env=env)
        assert code2 == 0, err2
        code3, out3, err3 = run_cli(*gen_args(model, bench, tmp_path / "x.jsonl"), env=env)  # no key sent: refused
        assert all(r.key_ok for r in model.log[:-1])
    assert code3 == 1 and "refused the API key (HTTP 401)" in err3
    texts = [out, err, out2, err2, out3, err3] + [p.read_text("utf-8") for p in tmp_path.glob("*.jsonl*")]
    assert len(texts) == 8 and not any(key in t for t in texts)

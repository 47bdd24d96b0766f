"""serve(): llama.cpp's real server on a tiny GGUF, stopped on every way out of the block and when
the process that started it is killed; the vLLM command line; the errors."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from apto_release.errors import InputError, UsageError
from apto_release.evals import serve as serve_module
from apto_release.evals.client import ChatClient, EngineError, Sampling
from apto_release.evals.serve import engine_command, serve

ROOT = Path(__file__).resolve().parents[2]


def engines() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def gone(processes: list[psutil.Process], within: float = 15.0) -> bool:
    _, alive = psutil.wait_procs(processes, timeout=within)
    return not alive


def test_a_gguf_is_served_by_llama_cpp_answers_and_is_stopped(gguf, tmp_path):
    log = tmp_path / "engine.log"
    with serve(gguf, n_ctx=512, threads=1, log=log) as endpoint:
        running = engines()
        assert running and endpoint.model == "TinyQwen3-F16"
        with ChatClient(endpoint) as client:
            client.check()
            result = client.complete([{"role": "user", "content": "こんにちは"}], Sampling(max_tokens=8, seed=0))
    # Random weights never say the end-of-turn token: the answer runs to max_tokens. (llama-cpp-python
    # 0.3.36 reports 9 completion tokens for max_tokens 8: it counts the last sampled one too.)
    assert result.text and result.finish_reason == "length" and result.usage["completion_tokens"] in (8, 9)
    assert result.model == "TinyQwen3-F16"
    assert gone(running) and not engines()
    assert log.stat().st_size > 0  # the engine's own output, kept where asked


def test_the_real_engine_dying_mid_run_is_a_clear_error_and_keeps_what_came(gguf):
    requests = [([{"role": "user", "content": f"質問{i}"}], Sampling(max_tokens=4, seed=i)) for i in range(6)]
    kept = {}
    with serve(gguf, n_ctx=256, threads=1) as endpoint:
        with ChatClient(endpoint, attempts=2, sleep=lambda s: None) as client:
            with pytest.raises(EngineError, match=r"is not answering .*2 answers had been received and were kept"):
                for index, answer in client.complete_many(requests, parallel=1):
                    kept[index] = answer
                    if len(kept) == 2:  # between two requests: nothing is in flight
                        for process in engines():
                            process.kill()
    assert sorted(kept) == [0, 1] and all(a.text for a in kept.values())
    assert not engines()


@pytest.mark.parametrize("raised", [RuntimeError, KeyboardInterrupt])
def test_the_engine_is_stopped_on_errors_and_ctrl_c(gguf, raised):
    with pytest.raises(raised):
        with serve(gguf, n_ctx=256, threads=1):
            running = engines()
            raise raised()
    assert running and gone(running)


def test_an_engine_that_cannot_load_is_an_error_with_its_log(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(EngineError, match=r"^llama.cpp's server exited with code \d+ before answering .*broken.gguf\): .+"):
        with serve(bad, n_ctx=256):
            pass  # pragma: no cover
    assert not engines()


def test_a_start_up_timeout_stops_the_engine(gguf):
    with pytest.raises(EngineError, match=r"did not answer within 0 s"):
        with serve(gguf, n_ctx=256, startup_timeout=0):
            pass  # pragma: no cover
    assert not engines()


def test_no_orphan_when_the_parent_is_killed(gguf, tmp_path):
    script = textwrap.dedent(f"""
        import psutil, sys, time
        from apto_release.evals.serve import serve
        with serve({str(gguf)!r}, n_ctx=256, threads=1):
            print(*[p.pid for p in psutil.Process().children(recursive=True)], flush=True)
            time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    engine: list[psutil.Process] = []
    try:
        engine = [psutil.Process(int(pid)) for pid in parent.stdout.readline().split()]
        assert engine
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert gone(engine)
    finally:
        for process in engine:  # a failed test must not leave the orphan behind either
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        parent.kill()
        parent.wait()
        parent.stdout.close()


def test_gguf_command_uses_the_embedded_template(gguf):
    command = engine_command(gguf, 8123, n_ctx=2048, threads=2)
    assert command.argv == [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias",
                            "TinyQwen3-F16", "--host", "127.0.0.1", "--port", "8123", "--n_ctx", "2048",
                            "--n_threads", "2", "--n_threads_batch", "2"]
    assert "--chat_format" not in command.argv


def test_a_checkpoint_folder_needs_vllm(tmp_path, monkeypatch):
    model = tmp_path / "Apto-27B"
    model.mkdir()
    (model / "config.json").write_text("{}")
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(UsageError, match="vLLM is not installed here") as info:
            engine_command(model, 8000)
        assert "pass its URL" in info.value.hint
    monkeypatch.setattr(serve_module.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(serve_module.shutil, "which", lambda name: f"/opt/bin/{name}")
    command = engine_command(model, 8000, tensor_parallel_size=4)
    assert command.argv == ["/opt/bin/vllm", "serve", str(model), "--served-model-name", "Apto-27B", "--host",
                            "127.0.0.1", "--port", "8000", "--tensor-parallel-size", "4"]
    assert (command.model, command.engine) == ("Apto-27B", "vLLM")
    with pytest.raises(UsageError, match="at least 1"):
        engine_command(model, 8000, tensor_parallel_size=0)


def test_not_a_model(tmp_path):
    with pytest.raises(InputError, match="no such model"):
        engine_command(tmp_path / "missing.gguf", 1)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"give a .gguf file or a checkpoint folder"):
        engine_command(tmp_path / "notes.txt", 1)
    with pytest.raises(InputError, match=r"checkpoint folder with config.json"):
        engine_command(tmp_path, 1)


def test_an_engine_client_starts_its_engine_on_the_first_request_and_stops_it_at_the_end(gguf):
    started: list[str] = []
    with serve_module.EngineClient(path=gguf, threads=1, on_start=started.append) as engine:
        assert engine.model == "TinyQwen3-F16" and engine.engine == {"engine": "llama.cpp's server", "path": gguf.name}
        assert list(engine.complete_many([])) == [] and not started and not engines()  # nothing to ask: nothing runs
        answers = list(engine.complete_many([([{"role": "user", "content": "こんにちは"}], Sampling(max_tokens=4, seed=0))]))
        running = engines()
        assert started == [gguf.name] and running and [i for i, _ in answers] == [0]
    assert gone(running) and not engines()


def test_an_engine_client_for_a_url_records_the_url_and_checks_on_connect(tmp_path):
    with serve_module.EngineClient(url="http://127.0.0.1:9", model="judge", attempts=1) as engine:
        assert engine.model == "judge" and engine.engine == {"url": "http://127.0.0.1:9/v1"}
        assert list(engine.complete_many([])) == []  # no request, no connection
        with pytest.raises(EngineError):
            engine.connect()  # nothing listens on the discard port
    with pytest.raises(InputError, match="no such model file"):
        serve_module.EngineClient(path=tmp_path / "missing.gguf").connect()
    with pytest.raises(ValueError):
        serve_module.EngineClient()

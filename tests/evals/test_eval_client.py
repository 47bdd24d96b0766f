"""The engine client against the scripted OpenAI-compatible server: answers, reasoning, retries,
the one-line errors, bounded concurrency, an engine dying mid-run, and the key kept out of sight."""

from __future__ import annotations

import http.server
import logging
import socket
import threading

import pytest

from apto_release.errors import UsageError
from apto_release.evals.client import ChatClient, Completion, Endpoint, EngineError, Sampling, split_reasoning
from apto_release.testing.openai_server import ScriptedServer

KEY = "sk-test-0123456789abcdefSECRET"
USER = [{"role": "user", "content": "q"}]


def echo(messages):
    return "answer to " + messages[-1]["content"]


@pytest.fixture
def waits():
    return []


def client_for(server, waits, model=None, env=None, **kwargs):
    return ChatClient(Endpoint(server.url, model or server.model, env), sleep=waits.append, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_completion_with_usage_and_the_settings_sent(waits):
    with ScriptedServer(echo) as server, client_for(server, waits) as client:
        result = client.complete(USER, Sampling(temperature=0.7, top_p=0.8, max_tokens=64, seed=3, enable_thinking=False))
    assert result == Completion(text="answer to q", reasoning=None, finish_reason="stop",
                                usage={"prompt_tokens": 1, "completion_tokens": 11, "total_tokens": 12},
                                sampling={"temperature": 0.7, "top_p": 0.8, "max_tokens": 64, "seed": 3,
                                          "enable_thinking": False}, model="scripted-judge")
    assert server.completions[0].body == {"model": "scripted-judge", "temperature": 0.7, "top_p": 0.8, "max_tokens": 64,
                                          "seed": 3, "chat_template_kwargs": {"enable_thinking": False}}


@pytest.mark.parametrize("answer, text, reasoning", [
    ({"content": "<think>\nhmm\n</think>\n\nはい。"}, "はい。", "hmm"),
    ({"content": "hmm</think>はい。"}, "はい。", "hmm"),  # the template opened the block
    ({"content": "<think>still thinking", "finish_reason": "length"}, "", "still thinking"),
    ({"content": "はい。", "reasoning_content": "hmm"}, "はい。", "hmm"),  # vLLM's reasoning parser
    ({"content": "plain"}, "plain", None),
])
def test_reasoning_is_split_from_the_answer(waits, answer, text, reasoning):
    with ScriptedServer(lambda m: answer) as server, client_for(server, waits) as client:
        result = client.complete(USER)
    assert (result.text, result.reasoning) == (text, reasoning)


def test_split_reasoning_leaves_text_without_a_block_alone():
    assert split_reasoning("a <b> c") == ("a <b> c", None)


def test_split_reasoning_takes_the_answer_after_the_last_closing_tag():
    # reasoning that mentions the tag: the template closes the block once, before the answer
    assert split_reasoning("<think>「</think>」で閉じる</think>\n答え") == ("答え", "「</think>」で閉じる")


def test_429_then_success_honours_retry_after_capped(waits):
    with ScriptedServer(echo) as server, client_for(server, waits) as client:
        server.fail(429, 2, retry_after=120)
        server.fail(503)
        assert client.complete(USER).text == "answer to q"
    assert [r.status for r in server.completions] == [429, 429, 503, 200]
    assert waits == [30.0, 30.0, 2.0]  # Retry-After capped; then the backoff 0.5 * 2**2


def test_5xx_past_the_attempts_is_one_clear_line(waits):
    with ScriptedServer(echo) as server, client_for(server, waits, attempts=3) as client:
        server.fail(500, 5)
        with pytest.raises(EngineError, match=r"answered HTTP 500 to a chat completion 3 times"):
            client.complete(USER)
    assert len(server.completions) == 3


def test_endpoint_down_is_a_clear_error_after_the_retries(waits):
    client = ChatClient(Endpoint(f"http://127.0.0.1:{free_port()}/v1", "m"), sleep=waits.append, attempts=3)
    with pytest.raises(EngineError) as info:
        client.complete(USER)
    assert str(info.value).startswith("the engine at http://127.0.0.1:") and "is not answering" in str(info.value)
    assert "3 attempts" in str(info.value) and "\n" not in str(info.value) and "running" in info.value.hint
    assert waits == [0.5, 1.0]


def test_wrong_model_names_what_is_served(waits):
    with ScriptedServer(echo, model="judge-a") as server, client_for(server, waits, model="judge-b") as client:
        with pytest.raises(EngineError, match=r"does not serve the model 'judge-b'; it serves: judge-a"):
            client.complete(USER)
        with pytest.raises(EngineError, match=r"does not serve the model 'judge-b'"):
            client.check()
    assert waits == []  # a 404 is not retried


def test_url_without_v1_gets_it():
    assert Endpoint("http://127.0.0.1:8000", "m").base_url == "http://127.0.0.1:8000/v1"
    with pytest.raises(UsageError, match="not an http"):
        Endpoint("127.0.0.1:8000", "m")


def test_401_names_the_variable_never_the_key(waits, monkeypatch, caplog, capsys, tmp_path):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("JUDGE_KEY", KEY + "-wrong")
    endpoint = Endpoint("http://127.0.0.1:1/v1", "m", "JUDGE_KEY")
    with ScriptedServer(echo, api_key=KEY) as server:
        endpoint = Endpoint(server.url, server.model, "JUDGE_KEY")
        client = ChatClient(endpoint, sleep=waits.append)
        with pytest.raises(EngineError) as info:
            client.complete(USER)
    message = str(info.value)
    assert "refused the API key (HTTP 401) from $JUDGE_KEY" in message and "JUDGE_KEY" in info.value.hint
    everything = [message, info.value.hint, repr(info.value), repr(endpoint), repr(client), caplog.text,
                  *capsys.readouterr()]
    assert not [text for text in everything if KEY in text]


def test_the_key_is_sent_and_missing_variable_is_a_usage_error(waits, monkeypatch):
    monkeypatch.delenv("JUDGE_KEY", raising=False)
    with ScriptedServer(echo, api_key=KEY) as server:
        with pytest.raises(UsageError, match=r"JUDGE_KEY .* is not set"):
            ChatClient(Endpoint(server.url, server.model, "JUDGE_KEY"))
        monkeypatch.setenv("JUDGE_KEY", KEY)
        assert client_for(server, waits, env="JUDGE_KEY").complete(USER).text == "answer to q"


def test_an_error_echoing_the_key_is_redacted(waits, monkeypatch):
    # OpenAI's own 401 echoes (part of) the key; a server echoing all of it must not leak it.
    monkeypatch.setenv("JUDGE_KEY", KEY)
    with ScriptedServer(echo) as server, client_for(server, waits, env="JUDGE_KEY") as client:
        server.fail(400, message=f"Incorrect API key provided: {KEY}.")
        with pytest.raises(EngineError) as info:
            client.complete(USER)
    assert str(info.value).endswith("rejected a chat completion (HTTP 400): Incorrect API key provided: ***.")


def test_parallel_requests_are_bounded_and_all_answered(waits):
    requests = [([{"role": "user", "content": str(i)}], Sampling()) for i in range(12)]
    with ScriptedServer(echo, delay=0.05) as server, client_for(server, waits) as client:
        results = dict(client.complete_many(requests, parallel=3))
    assert server.max_in_flight == 3
    assert {i: r.text for i, r in results.items()} == {i: f"answer to {i}" for i in range(12)}


def test_requests_are_sent_lazily(waits):
    sent = []

    def requests():
        for i in range(100):
            sent.append(i)
            yield [{"role": "user", "content": str(i)}], Sampling()

    with ScriptedServer(echo) as server, client_for(server, waits) as client:
        stream = client.complete_many(requests(), parallel=2)
        next(stream)
        stream.close()
    assert len(sent) <= 3


def test_an_engine_dying_mid_run_keeps_what_was_received(waits):
    requests = [([{"role": "user", "content": str(i)}], Sampling()) for i in range(10)]
    kept = {}
    with ScriptedServer(echo) as server, client_for(server, waits, attempts=2) as client:
        server.die_after(4)
        with pytest.raises(EngineError) as info:
            for index, result in client.complete_many(requests, parallel=2):
                kept[index] = result.text
    assert len(kept) == 4 and info.value.received == 4
    assert all(text == f"answer to {i}" for i, text in kept.items())
    assert "is not answering" in str(info.value) and "4 answers had been received and were kept" in str(info.value)


def test_parallel_must_be_positive(waits):
    with ScriptedServer(echo) as server, client_for(server, waits) as client:
        with pytest.raises(UsageError):
            list(client.complete_many([(USER, Sampling())], parallel=0))



@pytest.mark.parametrize("body, error", [
    (b'{"object": "chat.completion", "choices": []}', r"without choices\[0\]\.message"),
    (b"<html>proxy error</html>", r"not JSON: <html>proxy error</html>"),
])
def test_a_malformed_answer_is_a_clear_error(waits, body, error):
    class Odd(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Odd)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = ChatClient(Endpoint(f"http://127.0.0.1:{server.server_address[1]}/v1", "m"), sleep=waits.append)
        with pytest.raises(EngineError, match=error):
            client.complete(USER)
    finally:
        server.shutdown()
        server.server_close()

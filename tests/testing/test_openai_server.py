"""The scripted OpenAI-compatible server, spoken to over plain HTTP (no client library), so that
what it answers is checked against the documented shapes and not against our own client."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from apto_release.testing.openai_server import ScriptedServer


def post(url: str, body: dict, key: str | None = None) -> tuple[int, dict, dict]:
    request = urllib.request.Request(url + "/chat/completions", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def test_models_and_a_completion_in_openai_shape():
    with ScriptedServer({"こんにちは": "はい、こんにちは。"}, model="judge") as server:
        with urllib.request.urlopen(server.url + "/models", timeout=5) as response:
            models = json.loads(response.read())
        assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["judge"]
        status, _, body = post(server.url, {"model": "judge", "messages": [{"role": "user", "content": "こんにちは"}],
                                            "temperature": 0, "max_tokens": 50})
    assert status == 200 and body["object"] == "chat.completion" and body["model"] == "judge"
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "はい、こんにちは。"}
    assert choice["finish_reason"] == "stop" and choice["index"] == 0
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}
    assert server.completions[0].body == {"model": "judge", "temperature": 0, "max_tokens": 50}


def test_max_tokens_cuts_with_finish_reason_length_and_reasoning_field():
    script = lambda messages: {"content": "abcdefgh", "reasoning_content": "think"}  # noqa: E731
    with ScriptedServer(script) as server:
        _, _, body = post(server.url, {"model": "scripted-judge", "messages": [], "max_tokens": 3})
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "abc", "reasoning_content": "think"}
    assert body["choices"][0]["finish_reason"] == "length"


def test_wrong_model_is_vllms_404_and_a_wrong_key_401():
    with ScriptedServer({"q": "a"}, model="m", api_key="sk-test-secret-123") as server:
        status, _, body = post(server.url, {"model": "other", "messages": []}, key="sk-test-secret-123")
        assert status == 404 and body["error"]["type"] == "NotFoundError" and "`other` does not exist" in body["error"]["message"]
        assert post(server.url, {"model": "m", "messages": []}, key="wrong")[:1] == (401,)
        assert post(server.url, {"model": "m", "messages": []})[:1] == (401,)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(server.url + "/models", timeout=5)
        assert info.value.code == 401
    assert [r.key_ok for r in server.completions] == [True, False, False]
    assert "sk-test-secret-123" not in repr(server.log)


def test_injected_statuses_then_answers_and_unknown_prompt_is_500():
    with ScriptedServer({"q": "a"}) as server:
        server.fail(429, 2, retry_after=1.5)
        server.fail(503)
        answers = [post(server.url, {"model": "scripted-judge", "messages": [{"role": "user", "content": "q"}]})
                   for _ in range(4)]
        unknown = post(server.url, {"model": "scripted-judge", "messages": [{"role": "user", "content": "?"}]})
    assert [a[0] for a in answers] == [429, 429, 503, 200]
    assert answers[0][1]["Retry-After"] == "1.5" and "Retry-After" not in answers[2][1]
    assert answers[0][2]["error"]["code"] == 429
    assert unknown[0] == 500 and "no answer" in unknown[2]["error"]["message"]


def test_die_after_drops_the_connection_and_stops_listening():
    with ScriptedServer({"q": "a"}) as server:
        url = server.url
        server.die_after(1)
        assert post(url, {"model": "scripted-judge", "messages": [{"role": "user", "content": "q"}]})[0] == 200
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            post(url, {"model": "scripted-judge", "messages": [{"role": "user", "content": "q"}]})
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(url + "/models", timeout=5)
    assert [r.status for r in server.completions] == [200, 0]

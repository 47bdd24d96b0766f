"""A scripted OpenAI-compatible server (stdlib, threaded): the deterministic judge of the tests
and the demo, and the stand-in engine for the client's failure paths.

It answers ``GET /v1/models`` and ``POST /v1/chat/completions`` with OpenAI's chat completion
object, from a script; refuses a wrong model name with vLLM's 404 body and a wrong key with vLLM's
401; and can be told to answer 429/5xx (with ``Retry-After``), to be slow, or to die mid-run.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from apto_release.testing.threaded import serve_in_thread

#: A script: from the request's messages (or the last user message) to the answer.
Script = Callable[[list[dict[str, Any]]], Any] | Mapping[str, Any]


@dataclass
class LoggedRequest:
    """One request as the server saw it (never the key: only whether it matched)."""

    method: str
    path: str
    status: int
    model: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    body: dict[str, Any] = field(default_factory=dict)
    key_ok: bool = True


class ScriptedServer:
    """An OpenAI-compatible server on ``127.0.0.1`` answering from ``script``.

    Args:
        script: a callable from the request's ``messages`` to the answer, or a mapping from the
            last user message's text to the answer. An answer is a string, or a dict with
            ``content`` and optionally ``reasoning_content`` (vLLM's reasoning field) and
            ``finish_reason``. A prompt the script has no answer for gets a 500 naming it.
        model: the one model served; a request for another gets vLLM's 404.
        api_key: when set, requests without ``Authorization: Bearer <api_key>`` get a 401.
        delay: seconds each chat completion takes (to make concurrency visible).
        port: the loopback port to listen on (0: a free one; the demo keeps its judge's port).

    Usage counts characters as tokens; ``max_tokens`` cuts the answer there with
    ``finish_reason`` ``length``, as an engine does.
    """

    def __init__(self, script: Script, *, model: str = "scripted-judge", api_key: str | None = None,
                 delay: float = 0.0, port: int = 0) -> None:
        self.script = script
        self.port = port
        self.model = model
        self.api_key = api_key
        self.delay = delay
        self.log: list[LoggedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.answered = 0
        self._faults: list[tuple[int, float | None, str]] = []
        self._die_after: int | None = None
        self._lock = threading.Lock()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL a client is given (``http://127.0.0.1:PORT/v1``)."""
        assert self._httpd is not None, "start the server first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def fail(self, status: int, times: int = 1, *, retry_after: float | None = None, message: str | None = None) -> None:
        """Answer the next ``times`` chat completions with ``status`` (and ``Retry-After``; the
        error's ``message``, default ``injected HTTP <status>``)."""
        with self._lock:
            self._faults.extend([(status, retry_after, message or f"injected HTTP {status}")] * times)

    def die_after(self, answered: int) -> None:
        """Once ``answered`` completions have been answered, drop the next request's connection
        unanswered and stop listening, as an engine that crashed."""
        self._die_after = answered

    def start(self) -> ScriptedServer:
        handler = type("Handler", (_Handler,), {"owner": self})
        self._httpd, self._thread = serve_in_thread(handler, "scripted-openai", self.port)
        self.port = self._httpd.server_address[1]
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            httpd, self._httpd = self._httpd, None
            httpd.shutdown()  # handlers run in their own threads, so a dying handler may call this
            httpd.server_close()

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def completions(self) -> list[LoggedRequest]:
        """The chat-completion requests logged, in arrival order."""
        return [r for r in self.log if r.path.endswith("/chat/completions")]

    # -- answers ---------------------------------------------------------------------------------

    def answer(self, messages: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The script's answer as a dict (None: the script has none)."""
        if callable(self.script):
            found = self.script(messages)
        else:
            last = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), None)
            found = self.script.get(last) if isinstance(last, str) else None
        if found is None:
            return None
        return {"content": found} if isinstance(found, str) else dict(found)


def _error(message: str, kind: str, status: int, param: str | None = None) -> dict[str, Any]:
    """vLLM's (and OpenAI's) error body."""
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


class _Handler(http.server.BaseHTTPRequestHandler):
    owner: ScriptedServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the real servers
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: the log is owner.log
        pass

    def _send(self, status: int, body: dict[str, Any], headers: Mapping[str, str] = {}) -> None:  # noqa: B006
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _key_ok(self) -> bool:
        key = self.owner.api_key
        return key is None or self.headers.get("Authorization") == f"Bearer {key}"

    def do_GET(self) -> None:  # noqa: N802
        owner = self.owner
        key_ok = self._key_ok()
        status = 200 if key_ok else 401
        owner.log.append(LoggedRequest("GET", self.path, status, key_ok=key_ok))
        if not key_ok:
            return self._send(401, {"error": "Unauthorized"})  # vLLM's --api-key middleware
        if self.path.rstrip("/") != "/v1/models":
            return self._send(404, {"detail": "Not Found"})
        self._send(200, {"object": "list", "data": [
            {"id": owner.model, "object": "model", "created": 0, "owned_by": "apto-release", "root": owner.model}
        ]})

    def do_POST(self) -> None:  # noqa: N802
        owner = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return self._send(400, _error("the body is not JSON", "BadRequestError", 400))
        entry = LoggedRequest("POST", self.path, 200, model=body.get("model"), messages=body.get("messages") or [],
                              body={k: v for k, v in body.items() if k != "messages"}, key_ok=self._key_ok())
        with owner._lock:
            owner.log.append(entry)
            dying = owner._die_after is not None and owner.answered >= owner._die_after
            fault = owner._faults.pop(0) if owner._faults and entry.key_ok and not dying else None
            owner.in_flight += 1
            owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
        try:
            if dying:  # crash: no answer, connection dropped, nothing listens any more
                entry.status = 0
                self.close_connection = True
                owner.stop()
                return None
            entry.status = self._complete(body, entry, fault)
        finally:
            with owner._lock:
                owner.in_flight -= 1

    def _complete(self, body: dict[str, Any], entry: LoggedRequest, fault: tuple[int, float | None, str] | None) -> int:
        owner = self.owner
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, {"detail": "Not Found"})
            return 404
        if not entry.key_ok:
            self._send(401, {"error": "Unauthorized"})
            return 401
        if body.get("model") != owner.model:
            self._send(404, _error(f"The model `{body.get('model')}` does not exist.", "NotFoundError", 404, "model"))
            return 404
        if owner.delay:
            time.sleep(owner.delay)
        if fault is not None:
            status, retry_after, text = fault
            headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
            kind = "RateLimitError" if status == 429 else "InternalServerError"
            self._send(status, _error(text, kind, status), headers)
            return status
        answer = owner.answer(entry.messages)
        if answer is None:
            self._send(500, _error("the script has no answer for this prompt", "InternalServerError", 500))
            return 500
        text = str(answer.get("content") or "")
        finish = answer.get("finish_reason", "stop")
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        if isinstance(limit, int) and len(text) > limit:
            text, finish = text[:limit], "length"
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if answer.get("reasoning_content") is not None:
            message["reasoning_content"] = answer["reasoning_content"]
        prompt_tokens = sum(len(str(m.get("content") or "")) for m in entry.messages)
        with owner._lock:
            owner.answered += 1
            number = owner.answered
        self._send(200, {
            "id": f"chatcmpl-{number}", "object": "chat.completion", "created": int(time.time()), "model": owner.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text),
                      "total_tokens": prompt_tokens + len(text)},
        })
        return 200

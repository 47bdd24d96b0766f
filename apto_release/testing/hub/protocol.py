"""LocalHub's HTTP plumbing: request bodies, responses and errors as the Hub sends them, injected
failures and hooks, the request log's records, and the request handler that ties them together."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import tempfile
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

if TYPE_CHECKING:
    from apto_release.testing.hub.server import LocalHub


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it (never its token)."""

    method: str
    path: str  # decoded, without the query
    query: str
    status: int
    bytes_received: int
    bytes_sent: int
    authenticated: bool
    injected: bool

    @property
    def received(self) -> int:
        return self.bytes_received


@dataclass
class _Injection:
    method: str
    pattern: re.Pattern
    status: int
    times: int
    headers: dict


@dataclass
class _Hook:
    method: str
    pattern: re.Pattern
    action: Any  # a callable taking no argument
    times: int


def _take(rules: list, method: str, path: str):
    """The first injection or hook that matches the request, used once (removed when used up)."""
    rule = next((r for r in rules if r.method in ("*", method) and r.pattern.search(path)), None)
    if rule is not None:
        rule.times -= 1
        if rule.times <= 0:
            rules.remove(rule)
    return rule


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.code, self.headers, self.extra = status, message, code, headers or {}, extra


@dataclass
class _Response:
    status: int = 200
    body: bytes = b""
    headers: dict | None = None
    file: tuple[Path, int, int] | None = None  # (path, start, length): streamed instead of ``body``


def _json(data: Any, status: int = 200, headers: dict | None = None, content_type: str = "application/json") -> _Response:
    return _Response(status, json.dumps(data, default=str).encode(), {"Content-Type": content_type, **(headers or {})})


class _Body:
    """A request body spooled to memory or disk, with its size and sha256."""

    def __init__(self) -> None:
        self.file = tempfile.SpooledTemporaryFile(max_size=8 << 20)
        self.size = 0
        self._sha = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self._sha.update(chunk)
        self.size += len(chunk)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def data(self) -> bytes:
        self.file.seek(0)
        return self.file.read()

    def json(self) -> Any:
        try:
            return json.loads(self.data() or b"null")
        except ValueError as e:
            raise _HubError(400, f"Invalid JSON body: {e}") from e


class _Handler(BaseHTTPRequestHandler):
    hub: LocalHub
    protocol_version = "HTTP/1.1"
    server_version = "LocalHub/1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the hub keeps its own log
        pass

    def _read_body(self) -> _Body:
        body = _Body()
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                self._read_into(body, size)
                self.rfile.readline()
        else:
            self._read_into(body, int(self.headers.get("Content-Length") or 0))
        return body

    def _read_into(self, body: _Body, remaining: int) -> None:
        """Copy the next ``remaining`` bytes of the request into ``body``."""
        while remaining:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                raise ConnectionError("client closed the connection")
            body.write(chunk)
            remaining -= len(chunk)

    def _handle(self) -> None:
        hub, method = self.hub, self.command
        raw_path, _, query = self.path.partition("?")
        path = unquote(raw_path)
        body = self._read_body()
        auth = self.headers.get("Authorization") or ""
        # True: the hub's token; a Scope: a token of the exchange (one repo); False: none or unknown.
        authed = hmac.compare_digest(auth.encode(), f"Bearer {hub.token}".encode()) or hub._scope_of(auth) or False
        injected = False
        with hub._lock:
            hook = _take(hub._hooks, method, path)
        try:
            if hook is not None:
                hook.action()  # its failure is a 500 below, as a bug in the hub would be
            with hub._lock:
                injection = _take(hub._injections, method, path)
            if injection is not None:
                injected = True
                raise _HubError(injection.status, f"Injected failure ({injection.status})", headers=injection.headers)
            if auth and not authed and not raw_path.startswith(("/_lfs/", "/_actions/")):
                raise _HubError(401, "Invalid credentials in Authorization header")
            response = hub._dispatch(method, raw_path, parse_qs(query, keep_blank_values=True), self.headers, body, authed)
        except _HubError as e:
            headers = {"X-Error-Message": e.message.splitlines()[0], **e.headers}
            if e.code:
                headers["X-Error-Code"] = e.code
            response = _json({"error": e.message, **e.extra}, e.status, headers)
        except Exception as e:  # a bug here must show up as a 500 in the test, not as a hung client
            response = _json({"error": f"LocalHub internal error: {type(e).__name__}: {e}"}, 500)
        body.file.close()
        length = response.file[2] if response.file else len(response.body)
        # Logged before the answer goes out: once the client has its response, the log shows the request.
        with hub._lock:
            sent = 0 if method == "HEAD" else length
            hub.requests.append(RequestRecord(method, path, query, response.status, body.size, sent, bool(authed), injected))
        self._send(response, length)

    def _send(self, response: _Response, length: int) -> None:
        self.send_response(response.status)
        for key, value in (response.headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        self.send_header("X-Request-Id", f"local-{time.monotonic_ns()}")
        self.end_headers()
        if self.command == "HEAD":
            return
        if response.file is None:
            self.wfile.write(response.body)
            return
        path, start, remaining = response.file
        with open(path, "rb") as f:
            f.seek(start)
            while remaining:
                chunk = f.read(min(remaining, 1 << 20))
                self.wfile.write(chunk)
                remaining -= len(chunk)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle

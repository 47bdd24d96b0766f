"""Talking to an inference engine (vLLM, SGLang, llama.cpp's server, a hosted API) through the
``openai`` client: an ``Endpoint``, one chat completion as a typed ``Completion``, many of them
with bounded concurrency, retries on 429/5xx/timeouts/connection errors, and one-line errors that
never hold the API key. Design notes: docs/eval-engines.md.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from apto_release.errors import AptoError, UsageError, redact
from apto_release.retry import retry_delay

RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504})
RETRY_AFTER_CAP = 30.0  # seconds: a longer Retry-After (or backoff) is cut to this
DEFAULT_ATTEMPTS = 5
DEFAULT_BACKOFF = 0.5  # seconds, doubled each attempt: 0.5, 1, 2, 4
#: Placeholder key for engines started without one (the client insists on some key).
NO_KEY = "EMPTY"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


class EngineError(AptoError, RuntimeError):
    """An engine could not be reached or refused a request; the message never holds the key.

    ``received``: how many results of a batch had arrived before it (they were yielded already)."""

    def __init__(self, message: str, *, received: int = 0, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.received = received


@dataclass(frozen=True)
class Endpoint:
    """Where an engine answers: ``base_url`` (``http://host:port/v1``; a URL without a path gets
    ``/v1``), the ``model`` name it serves, and the NAME of the environment variable holding the
    API key (None: no key). The key is read when a client is made, never kept here."""

    base_url: str
    model: str
    api_key_env: str | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(f"the endpoint {self.base_url!r} is not an http(s) URL",
                             hint="give it as http://HOST:PORT/v1")
        if parts.path in ("", "/"):
            object.__setattr__(self, "base_url", self.base_url.rstrip("/") + "/v1")
        if not self.model:
            raise UsageError(f"no model name for the endpoint {self.base_url}", hint="name the model the engine serves")

    def api_key(self) -> str:
        """The key from the environment variable (``NO_KEY`` when none is named).

        Raises:
            UsageError: the variable is named but not set.
        """
        if self.api_key_env is None:
            return NO_KEY
        key = os.environ.get(self.api_key_env)
        if not key:
            raise UsageError(f"the environment variable {self.api_key_env} holding the API key for {self.base_url} is not set",
                             hint=f"export {self.api_key_env}=... (the key is read from there and never written anywhere)")
        return key


@dataclass(frozen=True)
class Sampling:
    """The sampling settings sent with a request, recorded with every response.

    ``enable_thinking`` goes to the chat template (``chat_template_kwargs``, as vLLM and SGLang
    take it); None leaves the template's default."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int | None = None
    enable_thinking: bool | None = None

    def request_body(self) -> dict[str, Any]:
        """The request body's sampling fields."""
        body: dict[str, Any] = {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}
        if self.seed is not None:
            body["seed"] = self.seed
        if self.enable_thinking is not None:
            body["chat_template_kwargs"] = {"enable_thinking": self.enable_thinking}
        return body


@dataclass(frozen=True)
class Completion:
    """One answer: ``text`` (after any reasoning), ``reasoning`` (the server's separate field or
    the ``<think>…</think>`` block; None: none), ``finish_reason``, ``usage`` and the ``sampling``
    settings sent."""

    text: str
    reasoning: str | None
    finish_reason: str | None
    usage: dict[str, int] = field(default_factory=dict)
    sampling: dict[str, Any] = field(default_factory=dict)
    model: str | None = None


def split_reasoning(content: str) -> tuple[str, str | None]:
    """``(answer, reasoning)`` of a thinking model's output (None: no reasoning).

    The answer is the text after the LAST ``</think>``: Qwen3.5's template may open ``<think>``
    in the prompt (so only ``</think>`` appears), and its reasoning may itself quote or mention
    ``</think>``; the template closes the block exactly once before the answer, so whatever
    follows the last closing tag is the answer. An opened block that never closes (cut by
    ``max_tokens`` while thinking) gives an empty answer; text without a block is the answer,
    stripped.
    """
    if THINK_CLOSE in content:
        reasoning, answer = content.rsplit(THINK_CLOSE, 1)
        reasoning = reasoning.strip()
        if reasoning.startswith(THINK_OPEN):
            reasoning = reasoning[len(THINK_OPEN):]
        return answer.strip(), reasoning.strip()
    stripped = content.strip()
    if stripped.startswith(THINK_OPEN):
        return "", stripped[len(THINK_OPEN):].strip()
    return stripped, None


Messages = Sequence[dict[str, Any]]


class ChatClient:
    """Chat completions from one ``Endpoint``, with bounded retries.

    Args:
        endpoint: where to ask.
        attempts: tries per request on 429/5xx/timeouts/connection errors (at least 1).
        backoff: first wait in seconds, doubled each retry; a ``Retry-After`` replaces it; both
            capped at ``RETRY_AFTER_CAP``.
        timeout: seconds one request may take (generation included).
        sleep: the waiting function (tests pass a recorder).

    Raises:
        UsageError: the key's environment variable is named but not set.
    """

    def __init__(self, endpoint: Endpoint, *, attempts: int = DEFAULT_ATTEMPTS, backoff: float = DEFAULT_BACKOFF,
                 timeout: float = 600.0, sleep: Callable[[float], None] = time.sleep) -> None:
        import openai

        self.endpoint = endpoint
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.sleep = sleep
        key = endpoint.api_key()
        self._secrets = [key] if key != NO_KEY else []
        self._openai = openai.OpenAI(base_url=endpoint.base_url, api_key=key, max_retries=0, timeout=timeout)

    def __repr__(self) -> str:
        return f"ChatClient({self.endpoint!r})"

    def close(self) -> None:
        self._openai.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one request ------------------------------------------------------------------------------

    def models(self) -> list[str]:
        """The model names the engine serves (``GET /v1/models``)."""
        page = self._call("listing the models", lambda: self._openai.models.list())
        return [m.id for m in page.data]

    def check(self) -> None:
        """Pre-flight: the engine answers and serves the endpoint's model (llama.cpp's server
        would silently answer any name with its one model).

        Raises:
            EngineError: down, key refused, or the model not among those served.
        """
        served = self.models()
        if self.endpoint.model not in served:
            raise self._wrong_model(served)

    def complete(self, messages: Messages, sampling: Sampling = Sampling()) -> Completion:
        """One chat completion.

        Raises:
            EngineError: the engine was down (after the retries), refused the key or the model,
                or rejected the request.
        """
        body = {"model": self.endpoint.model, "messages": list(messages), **sampling.request_body()}
        response = self._call("a chat completion", lambda: self._post_chat(body))
        try:
            choice = response["choices"][0]
            message = choice["message"]
            content = message.get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise EngineError(f"the engine at {self.endpoint.base_url} answered a chat completion without "
                              f"choices[0].message: {self._describe(Exception(str(response)[:200]))}") from None
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if reasoning:  # the engine's reasoning parser split it off (vLLM, SGLang)
            text = content.strip()
        else:
            text, reasoning = split_reasoning(content)
        usage = {k: v for k, v in (response.get("usage") or {}).items()
                 if k in ("prompt_tokens", "completion_tokens", "total_tokens") and isinstance(v, int)}
        return Completion(text=text, reasoning=reasoning, finish_reason=choice.get("finish_reason"),
                          usage=usage, sampling=asdict(sampling), model=response.get("model"))

    def _post_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /chat/completions through the client (its auth, pool and error types) as the
        README's "undocumented endpoints" shows: the JSON as it came, without typing the request
        and building response models, which cost the client about half of its own time per
        request (benchmarks/bench_eval_client.py), and keeping vLLM's extra fields as they are."""
        import httpx2

        response = self._openai.post("/chat/completions", body=body, cast_to=httpx2.Response)
        try:
            return response.json()
        except ValueError:
            raise EngineError(f"the engine at {self.endpoint.base_url} answered a chat completion with "
                              f"something that is not JSON: {self._describe(Exception(response.text[:200]))}") from None

    # -- many requests ----------------------------------------------------------------------------

    def complete_many(self, requests: Iterable[tuple[Messages, Sampling]], *, parallel: int = 4
                      ) -> Iterator[tuple[int, Completion]]:
        """``(index, Completion)`` for each request, *as they complete*, at most ``parallel`` in
        flight (the engine's batch stays full; the caller writes each as it arrives, so an
        interrupted run loses nothing received, and the index puts them back in order).

        On the first failure no new request is sent; those in flight finish (and are yielded if
        they succeed), then the error is raised with ``received`` set.

        Raises:
            EngineError: as ``complete``, or ``UsageError`` for ``parallel`` < 1.
        """
        if parallel < 1:
            raise UsageError(f"parallel must be at least 1, not {parallel}")
        pending = iter(enumerate(requests))
        received = 0
        failure: BaseException | None = None
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="apto-eval")
        running: dict[concurrent.futures.Future, int] = {}
        stop = threading.Event()
        try:
            def submit() -> None:
                for index, (messages, sampling) in pending:
                    running[pool.submit(self.complete, messages, sampling)] = index
                    if len(running) >= parallel:
                        return

            submit()
            while running:
                done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    index = running.pop(future)
                    exc = future.exception()
                    if exc is not None:
                        failure = failure or exc
                        stop.set()
                        continue
                    received += 1
                    yield index, future.result()
                if not stop.is_set():
                    submit()
        finally:
            for future in running:
                future.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
        if failure is not None:
            if isinstance(failure, EngineError):
                failure.received = received
                if received:
                    failure.message += f" ({received} answers had been received and were kept)"
                    failure.args = (failure.message,)
                raise failure
            raise failure

    # -- errors and retries -------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        import openai

        url = self.endpoint.base_url
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except openai.APIConnectionError as exc:  # refused, reset, timed out: down or dying
                if attempt < self.attempts:
                    self.sleep(self._wait(None, attempt))
                    continue
                kind = "timed out" if isinstance(exc, openai.APITimeoutError) else "is not answering"
                raise EngineError(f"the engine at {url} {kind} ({what}, {self.attempts} attempts: "
                                  f"{self._describe(exc)})",
                                  hint="check that the engine is running and the URL is right; "
                                       "if it stopped mid-run, see its log") from None
            except openai.APIStatusError as exc:
                status = exc.status_code
                if status in RETRYABLE and attempt < self.attempts:
                    self.sleep(self._wait(exc.response, attempt))
                    continue
                raise self._status_error(what, exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, response: Any, attempt: int) -> float:
        return retry_delay(None if response is None else response.headers, attempt, backoff=self.backoff, cap=RETRY_AFTER_CAP)

    def _describe(self, exc: BaseException) -> str:
        """One line of an error, without the key."""
        body = getattr(exc, "body", None)
        text = str(body.get("message") or body) if isinstance(body, dict) else str(exc)
        return redact(" ".join(text.split()) or type(exc).__name__, self._secrets)

    def _status_error(self, what: str, exc: Any) -> EngineError:
        status, url = exc.status_code, self.endpoint.base_url
        if status in (401, 403):
            env = self.endpoint.api_key_env
            return EngineError(
                f"the engine at {url} refused the API key (HTTP {status}) "
                + (f"from ${env}" if env else "(no key was sent: no key variable was named)"),
                hint=f"set {env} to a valid key" if env else "name the environment variable that holds the key")
        if status == 404:
            with contextlib.suppress(EngineError):
                served = self.models()
                if self.endpoint.model not in served:
                    return self._wrong_model(served)
            return EngineError(f"the engine at {url} answered HTTP 404 to {what}: {self._describe(exc)}",
                               hint="check the URL (it usually ends in /v1)")
        if status in RETRYABLE:
            return EngineError(f"the engine at {url} answered HTTP {status} to {what} {self.attempts} times: "
                               f"{self._describe(exc)}", hint="the engine is overloaded or failing; see its log")
        return EngineError(f"the engine at {url} rejected {what} (HTTP {status}): {self._describe(exc)}")

    def _wrong_model(self, served: list[str]) -> EngineError:
        return EngineError(f"the engine at {self.endpoint.base_url} does not serve the model {self.endpoint.model!r}; "
                           f"it serves: {', '.join(served) or 'nothing'}", hint="pass one of the names it serves")

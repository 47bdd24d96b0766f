"""Starting an engine for a local model: llama.cpp's server (llama-cpp-python) for a ``.gguf``
file, ``vllm serve`` for a checkpoint folder. ``serve()`` waits until it answers, yields its
``Endpoint`` and stops it (its whole process group) on exit, on errors and on Ctrl-C.
``EngineClient`` is the one way from "a URL, or a path to serve" to a checked ``ChatClient``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from apto_release.errors import InputError, UsageError
from apto_release.evals.client import DEFAULT_ATTEMPTS, Completion, Endpoint, EngineError, Messages, Sampling

STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
TAIL_LINES = 15
LLAMA_CPP, VLLM = "llama.cpp's server", "vLLM"  # the engines, in words


@dataclass(frozen=True)
class EngineCommand:
    """What would be run: ``argv``, the ``model`` name it serves, the ``engine`` in words."""

    argv: list[str]
    model: str
    engine: str


def free_port() -> int:
    """A port nothing listens on now (the OS's pick; the engine binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served_name(path: str | Path) -> str:
    """The model name an engine started for ``path`` serves: a ``.gguf`` file's stem, a folder's name."""
    path = Path(path)
    return path.stem if path.suffix == ".gguf" else path.name


def engine_record(path: str | Path) -> dict[str, str]:
    """What a responses file records of an engine started for ``path``: its kind and the file's
    or folder's name (not the port, which changes from run to run)."""
    path = Path(path)
    return {"engine": LLAMA_CPP if path.suffix == ".gguf" else VLLM, "path": path.name}


def engine_command(path: str | Path, port: int, *, n_ctx: int = 4096, threads: int | None = None,
                   tensor_parallel_size: int = 1, extra_args: Sequence[str] = ()) -> EngineCommand:
    """The command line that serves ``path`` on ``127.0.0.1:port``.

    A ``.gguf`` file: ``python -m llama_cpp.server`` with ``--n_ctx`` and no ``--chat_format``,
    so that the chat template embedded in the file is the one used (Qwen3.5's GGUFs carry it).
    A checkpoint folder (``config.json``): ``vllm serve PATH --tensor-parallel-size N``. The model
    is served under the file's or folder's name.

    Raises:
        InputError: ``path`` is neither a ``.gguf`` file nor a checkpoint folder.
        UsageError: a folder, but vLLM is not installed here.
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--model_alias", path.stem,
                "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx)]
        if threads:
            argv += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
        return EngineCommand(argv + list(extra_args), served_name(path), LLAMA_CPP)
    if path.is_dir() and (path / "config.json").is_file():
        if tensor_parallel_size < 1:
            raise UsageError(f"the tensor-parallel size must be at least 1, not {tensor_parallel_size}")
        vllm = shutil.which("vllm")
        if importlib.util.find_spec("vllm") is None or vllm is None:
            raise UsageError(f"{path} is a checkpoint folder, which vLLM serves, and vLLM is not installed here",
                             hint="install vllm on a GPU machine (pip install vllm), or start any "
                                  "OpenAI-compatible engine yourself and pass its URL")
        argv = [vllm, "serve", str(path), "--served-model-name", path.name, "--host", "127.0.0.1",
                "--port", str(port), "--tensor-parallel-size", str(tensor_parallel_size)]
        return EngineCommand(argv + list(extra_args), served_name(path), VLLM)
    if not path.exists():
        raise InputError("no such model file or folder", path=path)
    raise InputError("not a model this can serve: give a .gguf file or a checkpoint folder with config.json",
                     path=path, hint="or pass the URL of an engine that serves it")


def _health(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(base_url + "/models", timeout=2) as response:
            return response.status == 200 and "data" in json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return False


def _tail(log: Path) -> str:
    try:
        lines = log.read_text("utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in lines[-TAIL_LINES:] if line.strip())


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, between fork and exec
    """Linux: the engine gets SIGTERM if the process that started it dies (even by SIGKILL)."""
    os.setsid()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop(process: subprocess.Popen, grace: float = STOP_GRACE) -> None:
    """Stop the engine and everything it started: SIGTERM to its process group, SIGKILL after
    ``grace`` seconds, then reap it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the group's stragglers (vLLM's workers), if any
    process.wait()


@contextlib.contextmanager
def serve(path: str | Path, *, n_ctx: int = 4096, threads: int | None = None, tensor_parallel_size: int = 1,
          startup_timeout: float = 600.0, log: str | Path | None = None, extra_args: Sequence[str] = ()
          ) -> Iterator[Endpoint]:
    """Serve a local model for the ``with`` block and yield its ``Endpoint``.

    Args:
        path: a ``.gguf`` file or a checkpoint folder (see ``engine_command``).
        n_ctx: llama.cpp's context size.
        threads: llama.cpp's CPU threads (None: its default).
        tensor_parallel_size: vLLM's GPUs per model.
        startup_timeout: seconds to wait for ``GET /v1/models`` to answer.
        log: where the engine's output goes (None: a temporary file, removed afterwards).
        extra_args: more arguments for the engine.

    Raises:
        InputError / UsageError: see ``engine_command``.
        EngineError: the engine exited or did not answer in time (with the tail of its log).
    """
    port = free_port()
    command = engine_command(path, port, n_ctx=n_ctx, threads=threads, tensor_parallel_size=tensor_parallel_size,
                             extra_args=extra_args)
    temporary = log is None
    log_path = Path(tempfile.mkstemp(prefix="apto-engine-", suffix=".log")[1]) if temporary else Path(log)
    endpoint = Endpoint(f"http://127.0.0.1:{port}/v1", command.model)
    process = None
    try:
        with open(log_path, "wb") as out:
            process = subprocess.Popen(command.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       preexec_fn=_die_with_parent if sys.platform == "linux" else os.setsid)
        deadline = time.monotonic() + startup_timeout
        while not _health(endpoint.base_url):
            if process.poll() is not None:
                raise EngineError(f"{command.engine} exited with code {process.returncode} before answering "
                                  f"(serving {path}): {_tail(log_path)}", hint="see the engine's log above")
            if time.monotonic() > deadline:
                raise EngineError(f"{command.engine} did not answer within {startup_timeout:g} s "
                                  f"(serving {path}): {_tail(log_path)}", hint="raise the start-up timeout")
            time.sleep(0.2)
        yield endpoint
    finally:
        if process is not None:
            stop(process)
        if temporary:
            log_path.unlink(missing_ok=True)


class EngineClient:
    """A ``ChatClient`` for an engine given by ``url`` (used as it is) or by a local ``path``
    (started with ``serve``), connected and checked on the first non-empty batch of requests, so
    that a step whose answers were all kept from an earlier run starts nothing. Use it in a
    ``with`` block: a served engine stops when the block ends.

    Args:
        url: an OpenAI-compatible endpoint (with ``model``, and ``api_key_env`` if it needs a key).
        path: a ``.gguf`` file or checkpoint folder to serve (exactly one of ``url`` and ``path``).
        model: the model name the engine serves (default for a path: ``served_name(path)``).
        attempts: tries per request on 429/5xx/timeouts.
        threads: llama.cpp's CPU threads, for a served ``.gguf``.
        on_start: called with the path's name just before an engine is started for it.

    Attributes:
        model: the model name requests go to.
        engine: what a responses file records of the engine (``{"url": ...}`` or ``engine_record``).
    """

    def __init__(self, *, url: str | None = None, path: str | Path | None = None, model: str | None = None,
                 api_key_env: str | None = None, attempts: int = DEFAULT_ATTEMPTS, threads: int | None = None,
                 on_start: Callable[[str], None] | None = None) -> None:
        if (url is None) == (path is None):
            raise ValueError("give an engine's url or a path to serve, not both or neither")
        self._path = Path(path) if path is not None else None
        self._endpoint = Endpoint(url, model or "", api_key_env) if url is not None else None
        self.model = self._endpoint.model if self._endpoint else (model or served_name(self._path))
        self.engine = {"url": self._endpoint.base_url} if self._endpoint else engine_record(self._path)
        self._attempts, self._threads, self._on_start = attempts, threads, on_start
        self._stack = contextlib.ExitStack()
        self._client = None

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client = None
        self._stack.close()

    def connect(self):
        """The checked ``ChatClient`` (the engine started first for a path).

        Raises:
            EngineError: the engine did not start, is down, refused the key or does not serve ``model``.
            UsageError: the key's environment variable is named but not set; vLLM is missing.
        """
        if self._client is None:
            from apto_release.evals.client import ChatClient

            endpoint = self._endpoint
            if endpoint is None:
                if self._on_start:
                    self._on_start(self._path.name)
                endpoint = self._stack.enter_context(serve(self._path, threads=self._threads))
            client = self._stack.enter_context(ChatClient(endpoint, attempts=self._attempts))
            client.check()
            self._client = client
        return self._client

    def complete_many(self, requests: Iterable[tuple[Messages, Sampling]], *, parallel: int = 4
                      ) -> Iterator[tuple[int, Completion]]:
        """``ChatClient.complete_many``, connecting first unless there is nothing to ask."""
        requests = list(requests)
        if not requests:
            return iter(())
        return self.connect().complete_many(requests, parallel=parallel)

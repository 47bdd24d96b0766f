"""LocalHub: a local stand-in for the Hugging Face Hub that the real ``huggingface_hub`` client talks
HTTP to. This module starts and stops it, gives a client its environment, and holds the test hooks and
the request log; docs/local-hub.md says how to point a client at it and how it behaves."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import tempfile
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

from apto_release.testing.threaded import serve_in_thread
from apto_release.testing.hub.oidc import _TrustedPublishing
from apto_release.testing.hub.protocol import RequestRecord, _Handler, _Hook, _Injection
from apto_release.testing.hub.routes import _Routes

LFS_THRESHOLD = 1 << 20  # files this large go through LFS (the Hub's own threshold is 10 MB)


class LocalHub(_Routes, _TrustedPublishing):
    """A Hub on 127.0.0.1 for the real client (see docs/local-hub.md).

    ``LocalHub(root=None, *, user="apto-tester", token=None, namespaces=None, lfs_threshold=LFS_THRESHOLD,
    page_size=1000, page_size_expand=50)``: ``root`` holds blobs and state (a temporary folder, removed
    on ``stop()``, when not given). Use it as a context manager, or ``start()`` / ``stop()``.

    ``url`` and ``token``; ``api()`` (an ``HfApi`` on this hub), ``client_env(hf_home)`` (alias ``env``:
    the environment for a subprocess), ``patch_client(monkeypatch)`` / ``xet_off()`` (Xet off in this
    process); ``before``, ``inject``, ``requests``, ``log``, ``clear_requests``; ``repo_state`` and ``blob_path``
    to look at what was stored; Trusted Publishing: ``add_trusted_publisher``, ``issue_id_token``,
    ``actions_env`` (the exchange at ``/oauth/token`` gives tokens scoped to one repo).
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        *,
        user: str = "apto-tester",
        token: str | None = None,
        namespaces: list[str] | None = None,
        token_role: str = "write",
        org_roles: dict[str, str] | None = None,
        fine_grained: list[dict] | None = None,
        lfs_threshold: int = LFS_THRESHOLD,
        page_size: int = 1000,
        page_size_expand: int = 50,
    ) -> None:
        self._tmp = None if root is not None else tempfile.TemporaryDirectory(prefix="localhub-")
        self.root = Path(root if root is not None else self._tmp.name)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "blobs").mkdir(exist_ok=True)
        self.user = user
        self.token = token or "hf_local_" + secrets.token_hex(16)
        self.namespaces = None if namespaces is None else set(namespaces)
        # What the token may write (see "Permissions" in docs/local-hub.md); plain attributes, so a
        # test may change them while the hub runs.
        self.token_role = token_role
        self.org_roles = dict(org_roles or {})
        self.fine_grained = list(fine_grained or [])
        self.lfs_threshold = lfs_threshold
        self.page_size = page_size
        self.page_size_expand = page_size_expand
        self.requests: list[RequestRecord] = []
        self._injections: list[_Injection] = []
        self._hooks: list[_Hook] = []
        self._lock = threading.RLock()
        self._secret = secrets.token_bytes(16)
        self._publishers: dict[tuple[str, str], list] = {}  # (repo type, repo id) -> [(claims, read_only)]
        self._scoped: dict = {}  # exchanged token -> its Scope (never written to the state file)
        self.actions_request_token = "actions_" + secrets.token_hex(16)
        state_path = self.root / "state.json"
        self._repos: dict[str, dict] = json.loads(state_path.read_text()) if state_path.exists() else {}
        for repo in self._repos.values():
            repo["lfs"] = set(repo["lfs"])
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> LocalHub:
        if self._server is None:
            handler = type("LocalHubHandler", (_Handler,), {"hub": self})
            self._server, self._thread = serve_in_thread(handler, "LocalHub")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("LocalHub is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- client helpers ------------------------------------------------------------------------------

    def client_env(self, hf_home: str | os.PathLike | None = None) -> dict[str, str]:
        """Environment for a subprocess whose ``huggingface_hub`` / ``datasets`` must talk to this Hub."""
        home = Path(hf_home) if hf_home is not None else self.root / "hf_home"
        home.mkdir(parents=True, exist_ok=True)
        return {
            "HF_ENDPOINT": self.url,
            "HF_TOKEN": self.token,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_OFFLINE": "0",
            "HF_DATASETS_OFFLINE": "0",
            "TRANSFORMERS_OFFLINE": "0",
            "HF_HOME": str(home),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_ETAG_TIMEOUT": "10",
        }

    def env(self, hf_home: str | os.PathLike | None = None) -> dict[str, str]:
        """Alias of ``client_env``."""
        return self.client_env(hf_home)

    def api(self, token: str | None | bool = ...):
        """``HfApi(endpoint=self.url, token=...)``; the hub's token unless another (or ``False``) is given."""
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.url, token=self.token if token is ... else token)

    @staticmethod
    @contextlib.contextmanager
    def xet_off():
        """Set ``huggingface_hub.constants.HF_HUB_DISABLE_XET`` for the block (uploads then use LFS)."""
        from huggingface_hub import constants

        saved = constants.HF_HUB_DISABLE_XET
        constants.HF_HUB_DISABLE_XET = True
        try:
            yield
        finally:
            constants.HF_HUB_DISABLE_XET = saved

    @contextlib.contextmanager
    def patch_client(self, monkeypatch):
        """In a pytest test: Xet off for the in-process client (``monkeypatch`` undoes it)."""
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        yield self

    # -- test hooks ----------------------------------------------------------------------------------

    def inject(self, method: str, path_regex: str, status: int, times: int = 1, headers: dict | None = None) -> None:
        """Fail the next ``times`` requests whose method (``"*"``: any) and decoded path match."""
        headers = dict(headers or {})
        if status == 429:
            headers.setdefault("Retry-After", "0")
        with self._lock:
            self._injections.append(_Injection(method.upper(), re.compile(path_regex), status, times, headers))

    def before(self, method: str, path_regex: str, action, times: int = 1) -> None:
        """Call ``action()`` before handling the next ``times`` requests whose method (``"*"``: any)
        and decoded path match: what another writer does while a client is between two requests
        (e.g. a commit by someone else between a push's plan and its commit). The action runs in
        the server's thread for that request, outside the hub's lock, so it may use the real client
        on this hub (each request gets its own thread); it is unhooked before it runs."""
        with self._lock:
            self._hooks.append(_Hook(method.upper(), re.compile(path_regex), action, times))

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()

    clear_requests = clear_log

    def log(self, method: str | None = None, path_regex: str | None = None) -> list[RequestRecord]:
        """The logged requests, filtered by method and a regex searched in the path."""
        with self._lock:
            return [
                r for r in self.requests
                if (method is None or r.method == method.upper()) and (path_regex is None or re.search(path_regex, r.path))
            ]

    def repo_state(self, repo_id: str, repo_type: str = "model") -> dict:
        """A copy of a repo's stored state (branches, tags, commits with their trees, settings)."""
        with self._lock:
            return json.loads(json.dumps(self._repos[f"{repo_type}:{repo_id}"], default=sorted))

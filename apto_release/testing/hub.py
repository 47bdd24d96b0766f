"""A local stand-in for the Hugging Face Hub: the real ``huggingface_hub`` client, talking HTTP to 127.0.0.1.

The Hub cannot be reached from the tests (nor from the offline demo), and publishing is exactly the
part that must not be faked: a release is only as good as the calls the real client makes. So
``LocalHub`` is a small HTTP server (standard library ``ThreadingHTTPServer``, no new dependency)
that answers the part of the Hub's HTTP API that ``huggingface_hub`` 2.x and ``datasets`` use, as
the Hub answers it: status codes, ``X-Error-Code`` headers (the client turns them into
``RepositoryNotFoundError``, ``RevisionNotFoundError``, ``RemoteEntryNotFoundError``,
``GatedRepoError``), JSON field names, the NDJSON commit protocol, the Git LFS batch protocol and
``/resolve`` downloads with the ``X-Repo-Commit`` / ``ETag`` / ``X-Linked-*`` headers and ranges.
Nothing in ``huggingface_hub`` is patched: what passes here is what the client really sends.

Pointing the client at it
-------------------------
``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HUB_DISABLE_XET``, ``HF_TOKEN`` and ``HF_HOME`` once,
when it is imported (``huggingface_hub.constants``), and ``datasets`` copies ``HF_ENDPOINT`` again
into ``datasets.config.HF_ENDPOINT`` / ``HUB_DATASETS_URL``; ``constants.HF_URL_HOSTS`` and the
trusted-origin set of ``huggingface_hub.utils._http`` are derived from it at import time too.
Hence two ways, and only two:

* **In the test process**: pass the endpoint and the token explicitly, which every entry point
  takes: ``HfApi(endpoint=hub.url, token=hub.token)`` (or ``hub.api()``),
  ``snapshot_download(..., endpoint=hub.url, token=hub.token)``, ``hf_hub_download(..., endpoint=...)``,
  ``HfFileSystem(endpoint=hub.url, token=hub.token)``. Uploads also need Xet off: with ``hf_xet``
  installed the client uploads through Xet (a protocol ``LocalHub`` does not speak) unless
  ``huggingface_hub.constants.HF_HUB_DISABLE_XET`` is true; that flag is read at call time, so
  ``monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)`` is safe
  (``with hub.patch_client(monkeypatch):`` does that; ``with hub.xet_off():`` outside pytest). ``LocalHub``
  answers the Xet token routes with 501 and a message saying so, rather than a puzzling 404.
* **In a subprocess**, for everything that uses the module-level endpoint (``datasets.load_dataset``,
  ``DatasetCard.validate``, ``HfFileSystem()`` without arguments, the ``apto-release`` CLI): start
  it with ``env={**os.environ, **hub.client_env(tmp_path / "hf_home")}``, i.e. ``HF_ENDPOINT``,
  ``HF_TOKEN``, ``HF_HUB_DISABLE_XET=1``, ``HF_HUB_OFFLINE=0``, ``HF_DATASETS_OFFLINE=0`` and a
  fresh ``HF_HOME`` (so no cache or stored token of the machine is read). Patching the module
  constants in-process instead would mean rewriting six derived values in two packages (and any
  ``from ... import ENDPOINT`` copies), and fsspec caches ``HfFileSystem`` instances across tests:
  it is not robust, so ``load_dataset`` is run in a subprocess.

Behaviour worth knowing
-----------------------
* One user, ``hub.user`` (``whoami``), with the token ``hub.token``. A request with a different
  bearer token gets 401 ``Invalid credentials in Authorization header`` everywhere (as on the Hub).
  Writes need the token; reads of a private repo without it get 401 with ``X-Error-Code:
  RepoNotFound`` (the Hub does not tell "private" from "missing"); downloads (``/resolve``) from a
  gated repo without a token get 401 ``GatedRepo``. Repos may be created in any namespace, unless
  ``namespaces=`` restricts them (403 elsewhere).
* Permissions: ``token_role`` (``write``, ``read`` or ``fineGrained``), ``org_roles`` (org name ->
  ``roleInOrg``: ``admin``, ``write``, ``contributor``, ``read``) and, for a fine-grained token,
  ``fine_grained`` (its ``scoped`` entries, ``{"entity": {"type": "user"|"org"|"model"|"dataset",
  "name": ...}, "permissions": ["repo.write", ...]}``) appear in ``whoami`` as the Hub shows them
  (``auth.accessToken.role``, ``auth.accessToken.fineGrained.scoped``, ``orgs[].roleInOrg``) and
  are enforced: creating a repo, a commit, an upload, settings and refs in a repo the token cannot
  write get 403. Reads are not restricted by them.
* ``create_repo`` makes an ``initial commit`` by ``system`` holding a ``.gitattributes`` with LFS
  rules, as the Hub does; an existing repo answers 409 ``You already created this model repo``.
* Storage: blobs are content-addressed by sha256 under ``<root>/blobs``; each repo keeps its commits
  as full tree snapshots ``{path: {sha256, oid (git blob sha1, of the pointer for LFS), size,
  lfs}}``, branches and tags, in ``<root>/state.json`` (rewritten after each change; the token is
  never written). A ``LocalHub`` started on the same ``root`` finds its repos again.
* Upload mode (``/preupload``): ``lfs`` when the file is at least ``lfs_threshold`` bytes (1 MiB by
  default; the Hub uses 10 MB), or matches a ``filter=lfs`` pattern of the revision's
  ``.gitattributes`` (``*.parquet``, ``*.gguf``, ``*.safetensors``, ``*.png``, ... by default), or
  its 512-byte sample is not UTF-8 text; ``regular`` otherwise. ``oid`` is the current file's sha256
  (LFS) or git sha1 (regular), which the client compares to skip unchanged files; ``shouldIgnore``
  follows the ``gitIgnore`` sent (or the revision's ``.gitignore``), by ``fnmatch``.
* LFS: the batch answer has upload (and verify) actions only for objects this repo does not
  already have; the upload ``href`` is a signed URL on this server (no ``Authorization``, like S3),
  which checks size and sha256 before storing the blob.
* Commits: ``parentCommit`` other than the branch head gives 412; ``lfsFile`` naming an object the
  repo lacks gives 400; ``deletedFile`` / ``deletedFolder`` on a missing path gives 404
  ``EntryNotFound``; a ``README.md`` whose YAML the card validator rejects gives 400 (the Hub
  rejects such commits too). A commit that changes nothing still makes a commit, as on the Hub;
  the client itself skips commits whose operations are all no-ops. ``create_pr`` is refused (400).
* ``POST /api/validate-yaml`` checks the card's YAML: a mapping; ``license`` a string; ``language``
  a string or list of strings; ``tags`` a list of strings; ``configs`` (config_name, data_files);
  ``model-index`` (name, results with task.type, dataset.type/name, metrics with type/value).
  Errors come back as the Hub sends them: 400 ``{"errors": [{"message": ...}]}``.
* Listing pages (tree, commits) hold ``page_size`` entries (``page_size_expand`` with
  ``expand``), followed through ``Link: <...>; rel="next"`` as on the Hub.

Tests
-----
``hub.before(method, path_regex, action, times=1)`` calls ``action()`` before the next ``times``
matching requests are handled (another writer's commit between a client's plan and its commit).
``hub.inject(method, path_regex, status, times=1, headers=None)`` makes the next ``times`` requests
whose method (``"*"``: any) and decoded path match fail with that status (a 429 gets
``Retry-After: 0`` unless headers say otherwise). ``hub.requests`` logs every request as a
``RequestRecord`` (method, decoded path, query, status, ``bytes_received`` (alias ``received``),
``bytes_sent``, ``authenticated``, ``injected``; never the token); ``hub.log(method, path_regex)``
filters it and ``hub.clear_requests()`` empties it. What the client does with failures (2.4): it
retries 408/429/500/502/503/504 itself, sleeping ``Retry-After + 1`` seconds (or 1, 2, 4 ... s),
on the calls it sends through ``http_backoff``: ``/preupload``, the LFS batch, upload and verify
calls, tree and commit-list pages; a failed file HEAD is tried once more with retries; a file GET
is retried on 408/429. It does *not* retry the ``/commit`` POST of ``create_commit`` /
``upload_file`` / ``upload_folder`` (a lost answer could mean a duplicate commit), nor
``repo_info``, ``create_repo``, tags or settings: those raise ``HfHubHTTPError`` at once.

Not implemented: pull requests and discussions, Xet, multipart LFS uploads, ``super_squash``,
``move_repo``, copies from other repos (``CommitOperationCopy`` within a repo works), listing all
repos (``list_models``), Spaces, user access requests, redirects of LFS downloads to a CDN (files
are served directly, with the headers the client reads after a redirect).
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import fnmatch
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

__all__ = ["LFS_THRESHOLD", "LocalHub", "RequestRecord", "validate_card_metadata", "validate_card_yaml"]

LFS_THRESHOLD = 1 << 20  # files this large go through LFS (the Hub's own threshold is 10 MB)
REPO_TYPES = ("model", "dataset")
URL_PREFIXES = {"model": "", "dataset": "datasets/"}

# What the Hub writes in a new repo's .gitattributes (abridged: the patterns a release can contain).
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gguf", "*.gz", "*.h5", "*.joblib",
        "*.lz4", "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet",
        "*.pb", "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*",
        "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
        "*.png", "*.jpg", "*.jpeg", "*.webp", "*.gif", "*.mp3", "*.wav", "*.ogg",
    )
)

_YAML_BLOCK = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")
_HEX40 = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _is_text(sample: bytes) -> bool:
    """Whether a sample (possibly cut in the middle of a character) is UTF-8 text without NUL bytes."""
    if b"\0" in sample:
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _glob_match(path: str, pattern: str) -> bool:
    """A .gitattributes / .gitignore pattern against a repo path (patterns without '/' match basenames)."""
    pattern = pattern.strip().lstrip("/")
    if not pattern:
        return False
    if pattern.endswith("/"):
        return path.startswith(pattern) or ("/" + pattern) in ("/" + path)
    if "/" not in pattern.replace("**/", ""):
        return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern.replace("**/", ""))
    return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern.replace("/**/", "/"))


def _front_matter(text: str) -> tuple[bool, str]:
    """(has a YAML block, the block's text) of a card."""
    match = _YAML_BLOCK.search(text.lstrip("\ufeff"))
    return (True, match.group(2)) if match else (False, "")


def validate_card_yaml(content: str, repo_type: str = "model") -> tuple[list[str], list[str], dict | None]:
    """(errors, warnings, metadata) for a card, as ``POST /api/validate-yaml`` judges it."""
    import yaml  # a dependency of huggingface_hub and datasets

    has_block, block = _front_matter(content)
    if not has_block or not block.strip():
        return [], ["empty or missing yaml metadata in repo card"], {}
    try:
        data = yaml.safe_load(block)
    except yaml.YAMLError as e:
        return [f"Invalid YAML in README.md metadata: {e}"], [], None
    if data is None:
        return [], ["empty or missing yaml metadata in repo card"], {}
    errors = validate_card_metadata(data, repo_type)
    return errors, [], data if isinstance(data, dict) else None


def validate_card_metadata(data: Any, repo_type: str = "model") -> list[str]:
    """The errors the Hub's card validator finds in parsed card metadata (empty: valid)."""
    if not isinstance(data, dict):
        return ["YAML metadata must be a mapping (key: value pairs)"]
    errors: list[str] = []

    def is_str_list(value: Any) -> bool:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)

    if "license" in data and not isinstance(data["license"], str):
        errors.append('"license" must be a string')
    for key in ("language", "license_name", "pipeline_tag", "library_name"):
        if key in data and key != "language" and not isinstance(data[key], str):
            errors.append(f'"{key}" must be a string')
    if "language" in data and not (isinstance(data["language"], str) or is_str_list(data["language"])):
        errors.append('"language" must be a string or an array of strings')
    if "tags" in data and not is_str_list(data["tags"]):
        errors.append('"tags" must be an array of strings')
    if "configs" in data:
        configs = data["configs"]
        if not isinstance(configs, list):
            errors.append('"configs" must be an array')
        else:
            for i, cfg in enumerate(configs):
                if not isinstance(cfg, dict) or not isinstance(cfg.get("config_name"), str):
                    errors.append(f'"configs[{i}].config_name" is required and must be a string')
                    continue
                files = cfg.get("data_files")
                ok = files is None or isinstance(files, str) or is_str_list(files) or (
                    isinstance(files, list)
                    and all(
                        isinstance(f, dict) and isinstance(f.get("split"), str)
                        and (isinstance(f.get("path"), str) or is_str_list(f.get("path")))
                        for f in files
                    )
                )
                if not ok:
                    errors.append(f'"configs[{i}].data_files" must be a path, a list of paths or a list of {{split, path}}')
    if "model-index" in data:
        index = data["model-index"]
        if repo_type != "model":
            errors.append('"model-index" is only allowed in model cards')
        elif not isinstance(index, list):
            errors.append('"model-index" must be an array')
        else:
            for i, model in enumerate(index):
                if not isinstance(model, dict) or not isinstance(model.get("name"), str):
                    errors.append(f'"model-index[{i}].name" is required and must be a string')
                    continue
                results = model.get("results")
                if not isinstance(results, list):
                    errors.append(f'"model-index[{i}].results" must be an array')
                    continue
                for j, result in enumerate(results):
                    where = f"model-index[{i}].results[{j}]"
                    if not isinstance(result, dict):
                        errors.append(f'"{where}" must be an object')
                        continue
                    if not isinstance((result.get("task") or {}).get("type"), str):
                        errors.append(f'"{where}.task.type" is required')
                    dataset = result.get("dataset")
                    if not (isinstance(dataset, dict) and isinstance(dataset.get("type"), str)
                            and isinstance(dataset.get("name"), str)):
                        errors.append(f'"{where}.dataset" needs "type" and "name"')
                    metrics = result.get("metrics")
                    if not isinstance(metrics, list) or not all(
                        isinstance(m, dict) and isinstance(m.get("type"), str) and "value" in m for m in metrics
                    ):
                        errors.append(f'"{where}.metrics" must be an array of {{type, value}}')
    return errors


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


class LocalHub:
    """A Hub on 127.0.0.1 for the real client (see the module docstring).

    ``LocalHub(root=None, *, user="apto-tester", token=None, namespaces=None, lfs_threshold=LFS_THRESHOLD,
    page_size=1000, page_size_expand=50)``: ``root`` holds blobs and state (a temporary folder, removed
    on ``stop()``, when not given). Use it as a context manager, or ``start()`` / ``stop()``.

    ``url`` and ``token``; ``api()`` (an ``HfApi`` on this hub), ``client_env(hf_home)`` (alias ``env``:
    the environment for a subprocess), ``patch_client(monkeypatch)`` / ``xet_off()`` (Xet off in this
    process); ``before``, ``inject``, ``requests``, ``log``, ``clear_requests``; ``repo_state`` and ``blob_path``
    to look at what was stored.
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
        # What the token may write (see "Permissions" in the module docstring); plain attributes, so a
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
            self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            self._server.daemon_threads = True
            self._thread = threading.Thread(target=self._server.serve_forever, name="LocalHub", daemon=True)
            self._thread.start()
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

    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256[:2] / sha256

    # -- storage ------------------------------------------------------------------------------------

    def _save(self) -> None:
        path = self.root / "state.json"
        tmp = path.with_name(f"state.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(self._repos, default=sorted, indent=1))
        os.replace(tmp, path)

    def _store_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.blob_path(sha)
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_name(path.name + f".{secrets.token_hex(4)}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return sha

    def _read_blob(self, sha: str) -> bytes:
        return self.blob_path(sha).read_bytes()

    def _entry(self, data: bytes, lfs: bool) -> dict:
        sha = self._store_bytes(data)
        return self._entry_for(sha, len(data), lfs, data)

    def _entry_for(self, sha: str, size: int, lfs: bool, data: bytes | None = None) -> dict:
        if lfs:
            oid = _git_blob_sha1(_lfs_pointer(sha, size))
        else:
            oid = _git_blob_sha1(data if data is not None else self._read_blob(sha))
        return {"sha256": sha, "oid": oid, "size": size, "lfs": lfs}

    def _new_commit(self, repo: dict, parent: str | None, tree: dict, title: str, message: str, author: str) -> str:
        date = _now()
        oid = hashlib.sha1(json.dumps([parent, tree, title, message, date, secrets.token_hex(4)]).encode()).hexdigest()
        repo["commits"][oid] = {"parent": parent, "tree": tree, "title": title, "message": message,
                                "author": author, "date": date}
        repo["lastModified"] = date
        return oid

    # -- repos and revisions ---------------------------------------------------------------------

    def _access_token(self) -> dict:
        token = {"displayName": "local", "role": self.token_role}
        if self.token_role == "fineGrained":
            token["fineGrained"] = {"canReadGatedRepos": True, "global": [], "scoped": self.fine_grained}
        return token

    def _can_write(self, repo_type: str, repo_id: str) -> bool:
        namespace = repo_id.split("/")[0]
        if self.token_role == "read" or self.org_roles.get(namespace) == "read":
            return False
        if self.token_role != "fineGrained":
            return True
        return any(
            "repo.write" in entry.get("permissions", [])
            and (entry["entity"]["type"] in ("user", "org") and entry["entity"]["name"] == namespace
                 or entry["entity"]["type"] == repo_type and entry["entity"]["name"] == repo_id)
            for entry in self.fine_grained
        )

    def _repo(self, repo_type: str, repo_id: str, authed: bool, *, write: bool = False) -> dict:
        repo = self._repos.get(f"{repo_type}:{repo_id}")
        if repo is None or (repo["private"] and not authed):
            raise _HubError(401 if not authed else 404, "Repository not found", "RepoNotFound")
        if write and not authed:
            raise _HubError(401, "You must be authenticated to write to this repository.")
        if write and not self._can_write(repo_type, repo_id):
            raise _HubError(403, f"You don't have the rights to write to {repo_id}: the token lacks write access")
        return repo

    @staticmethod
    def _resolve(repo: dict, revision: str) -> str:
        rev = revision
        for prefix, table in (("refs/heads/", "branches"), ("refs/tags/", "tags")):
            if rev.startswith(prefix) and rev[len(prefix):] in repo[table]:
                return repo[table][rev[len(prefix):]]
        if rev in repo["branches"]:
            return repo["branches"][rev]
        if rev in repo["tags"]:
            return repo["tags"][rev]
        if _HEX40.fullmatch(rev) and rev in repo["commits"]:
            return rev
        raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.url}/{URL_PREFIXES[repo_type]}{repo_id}"

    def _gitattributes_lfs(self, tree: dict, path: str) -> bool:
        entry = tree.get(".gitattributes")
        if entry is None:
            return False
        for line in self._read_blob(entry["sha256"]).decode("utf-8", "replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and "filter=lfs" in parts[1:] and _glob_match(path, parts[0]):
                return True
        return False

    # -- JSON shapes ----------------------------------------------------------------------------------

    def _last_commits(self, repo: dict, head: str, paths: list[str]) -> dict[str, dict]:
        """For each path (file or folder): the newest commit up to ``head`` that changed it."""
        out: dict[str, dict] = {}
        commit_oid = head
        while commit_oid is not None and len(out) < len(paths):
            commit = repo["commits"][commit_oid]
            parent = repo["commits"][commit["parent"]]["tree"] if commit["parent"] else {}
            changed = {p for p in set(commit["tree"]) | set(parent) if commit["tree"].get(p) != parent.get(p)}
            for path in paths:
                if path not in out and (path in changed or any(c.startswith(path + "/") for c in changed)):
                    out[path] = {"id": commit_oid, "title": commit["title"], "date": commit["date"]}
            commit_oid = commit["parent"]
        return out

    @staticmethod
    def _folder_oid(tree: dict, folder: str) -> str:
        inside = sorted((p, e["oid"]) for p, e in tree.items() if p.startswith(folder + "/"))
        return hashlib.sha1(json.dumps(inside).encode()).hexdigest()

    def _path_info(self, tree: dict, path: str) -> dict | None:
        entry = tree.get(path)
        if entry is not None:
            info = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
            if entry["lfs"]:
                info["lfs"] = {"oid": entry["sha256"], "size": entry["size"],
                               "pointerSize": len(_lfs_pointer(entry["sha256"], entry["size"]))}
            return info
        if any(p.startswith(path + "/") for p in tree):
            return {"type": "directory", "oid": self._folder_oid(tree, path), "size": 0, "path": path}
        return None

    def _expand(self, repo: dict, head: str, infos: list[dict]) -> list[dict]:
        last = self._last_commits(repo, head, [i["path"] for i in infos])
        for info in infos:
            info["lastCommit"] = last.get(info["path"])
        return infos

    def _card_data(self, tree: dict) -> dict | None:
        entry = tree.get("README.md")
        if entry is None:
            return None
        import yaml

        has_block, block = _front_matter(self._read_blob(entry["sha256"]).decode("utf-8", "replace"))
        try:
            data = yaml.safe_load(block) if has_block else None
        except yaml.YAMLError:
            return None
        return data if isinstance(data, dict) else None

    def _repo_info(self, repo: dict, head: str, params: dict) -> dict:
        tree = repo["commits"][head]["tree"]
        card = self._card_data(tree)
        tags = []
        if card:
            tags += [t for t in card.get("tags") or [] if isinstance(t, str)]
            if isinstance(card.get("license"), str):
                tags.append(f"license:{card['license']}")
            languages = card.get("language") or []
            for lang in [languages] if isinstance(languages, str) else languages:
                tags.append(f"language:{lang}")
        tags.append("region:us")
        blobs = params.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for path in sorted(tree):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                entry = tree[path]
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if entry["lfs"]:
                    sibling["lfs"] = {"size": entry["size"], "sha256": entry["sha256"],
                                      "pointerSize": len(_lfs_pointer(entry["sha256"], entry["size"]))}
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": repo["_id"], "id": repo["id"], "author": repo["id"].split("/")[0], "sha": head,
            "createdAt": repo["createdAt"], "lastModified": repo["commits"][head]["date"],
            "private": repo["private"], "gated": repo["gated"], "disabled": False,
            "downloads": 0, "likes": 0, "tags": tags, "siblings": siblings,
            "usedStorage": sum(e["size"] for e in tree.values()),
        }
        if card is not None:
            info["cardData"] = card
        if repo["type"] == "model":
            info["modelId"] = repo["id"]
            if card:
                for key in ("library_name", "pipeline_tag"):
                    if isinstance(card.get(key), str):
                        info[key] = card[key]
                if "model-index" in card:
                    info["model-index"] = card["model-index"]
        else:
            info["mainSize"] = info["usedStorage"]
        expand = params.get("expand", []) + params.get("expand[]", [])
        if expand:
            info = {k: v for k, v in info.items() if k in ("_id", "id") or k in expand}
        return info

    def _page(self, items: list, params: dict, base: str, size: int) -> _Response:
        start = int(params.get("cursor", ["0"])[0])
        page = items[start:start + size]
        headers = {}
        if start + size < len(items):
            query = {k: v for k, v in params.items() if k != "cursor"}
            query["cursor"] = [str(start + size)]
            headers["Link"] = f'<{self.url}{base}?{urlencode(query, doseq=True)}>; rel="next"'
        return _json(page, headers=headers)

    # -- endpoints --------------------------------------------------------------------------------

    def _dispatch(self, method: str, raw_path: str, params: dict, headers: Any, body: _Body, authed: bool) -> _Response:
        parts = [unquote(p) for p in raw_path.strip("/").split("/")]
        if parts[:1] == ["api"]:
            return self._api(method, parts[1:], params, headers, body, authed)
        if parts[:2] == ["_lfs", "upload"] and method == "PUT":
            return self._lfs_put(parts[2:], params, body)
        if raw_path.endswith((".git/info/lfs/objects/batch", ".git/info/lfs/objects/verify")):
            repo_type = "dataset" if parts[0] == "datasets" else "model"
            repo_parts = parts[1:3] if repo_type == "dataset" else parts[0:2]
            repo_id = "/".join(repo_parts)[: -len(".git")]
            if method != "POST":
                raise _HubError(405, "Method not allowed")
            if parts[-1] == "batch":
                return self._lfs_batch(repo_type, repo_id, body, authed)
            return self._lfs_verify(repo_type, repo_id, body, authed)
        repo_type = "dataset" if parts[0] == "datasets" else "model"
        rest = parts[1:] if repo_type == "dataset" else parts
        if len(rest) >= 5 and rest[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve_file(repo_type, "/".join(rest[:2]), rest[3], "/".join(rest[4:]), headers, authed)
        raise _HubError(404, f"Not found: {unquote(raw_path)}")

    def _api(self, method: str, parts: list[str], params: dict, headers: Any, body: _Body, authed: bool) -> _Response:
        route = (method, "/".join(parts[:2]))
        if route == ("GET", "whoami-v2"):
            if not authed:
                raise _HubError(401, "Invalid credentials in Authorization header")
            return _json({
                "type": "user", "id": hashlib.sha1(self.user.encode()).hexdigest()[:24], "name": self.user,
                "fullname": self.user, "email": None, "emailVerified": False, "isPro": False, "canPay": False,
                "orgs": [{"type": "org", "name": ns, "roleInOrg": self.org_roles.get(ns, "admin")}
                         for ns in sorted((self.namespaces or set()) | set(self.org_roles)) if ns != self.user],
                "auth": {"type": "access_token", "accessToken": self._access_token()},
            })
        if route == ("GET", "agent-harnesses"):  # asked once per process by the client's user-agent code
            return _json({"standardEnvVars": [], "harnesses": {}})
        if route == ("POST", "validate-yaml"):
            return self._validate_yaml(body, headers)
        if route == ("POST", "repos/create"):
            return self._create_repo(body, authed)
        if route == ("DELETE", "repos/delete"):
            payload = body.json() or {}
            repo_id = f"{payload.get('organization') or self.user}/{payload.get('name')}"
            repo_type = payload.get("type") or "model"
            with self._lock:
                self._repo(repo_type, repo_id, authed, write=True)
                del self._repos[f"{repo_type}:{repo_id}"]
                self._save()
            return _json({})
        if len(parts) < 3 or parts[0] not in ("models", "datasets"):
            raise _HubError(404, f"Not found: /api/{'/'.join(parts)}")
        repo_type, repo_id, rest = parts[0][:-1], "/".join(parts[1:3]), parts[3:]
        action = rest[0] if rest else ""
        with self._lock:
            if action.startswith("xet-"):
                raise _HubError(501, "LocalHub does not speak Xet: set HF_HUB_DISABLE_XET=1 (see apto_release.testing.hub)")
            if method == "GET" and (not rest or (action == "revision" and len(rest) == 2)):
                repo = self._repo(repo_type, repo_id, authed)
                head = self._resolve(repo, rest[1] if rest else "main")
                return _json(self._repo_info(repo, head, params))
            if method == "PUT" and rest == ["settings"]:
                return self._settings(repo_type, repo_id, body, authed)
            if method == "POST" and action == "preupload" and len(rest) == 2:
                return self._preupload(repo_type, repo_id, rest[1], body, authed)
            if method == "POST" and action == "commit" and len(rest) == 2:
                return self._commit(repo_type, repo_id, rest[1], params, body, authed)
            if method == "GET" and action == "tree" and len(rest) >= 2:
                return self._tree(repo_type, repo_id, rest[1], "/".join(rest[2:]).strip("/"), params, authed)
            if method == "POST" and action == "paths-info" and len(rest) == 2:
                return self._paths_info(repo_type, repo_id, rest[1], headers, body, authed)
            if method == "GET" and rest == ["refs"]:
                repo = self._repo(repo_type, repo_id, authed)
                refs = {
                    kind: [{"name": n, "ref": f"refs/{prefix}/{n}", "targetCommit": t}
                           for n, t in sorted(repo[table].items())]
                    for kind, table, prefix in (("branches", "branches", "heads"), ("tags", "tags", "tags"))
                }
                return _json({**refs, "converts": [], "pullRequests": []})
            if method == "GET" and action == "commits" and len(rest) == 2:
                repo = self._repo(repo_type, repo_id, authed)
                oid, items = self._resolve(repo, rest[1]), []
                while oid is not None:
                    c = repo["commits"][oid]
                    items.append({"id": oid, "title": c["title"], "message": c["message"],
                                  "authors": [{"user": c["author"]}], "date": c["date"]})
                    oid = c["parent"]
                base = f"/api/{repo_type}s/{repo_id}/commits/{quote(rest[1], safe='')}"
                return self._page(items, params, base, self.page_size)
            if action in ("tag", "branch") and len(rest) == 2 and method in ("POST", "DELETE"):
                return self._ref(method, action, repo_type, repo_id, rest[1], body, authed)
        raise _HubError(404, f"Not found: /api/{'/'.join(parts)}")

    def _validate_yaml(self, body: _Body, headers: Any) -> _Response:
        payload = body.json() or {}
        errors, warnings, _ = validate_card_yaml(payload.get("content") or "", payload.get("repoType") or "model")
        status = 400 if errors else 200
        if "text/plain" in (headers.get("Accept") or ""):
            text = "\n".join(f"- {m}" for m in errors) if errors else "OK"
            return _Response(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8"})
        return _json({"errors": [{"message": m} for m in errors], "warnings": [{"message": m} for m in warnings]},
                     status=status)

    def _create_repo(self, body: _Body, authed: bool) -> _Response:
        if not authed:
            raise _HubError(401, "You must be authenticated to create a repository.")
        payload = body.json() or {}
        name, namespace = payload.get("name"), payload.get("organization") or self.user
        repo_type = payload.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise _HubError(400, f"LocalHub supports repo types {REPO_TYPES}, not {repo_type!r}")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}", name):
            raise _HubError(400, f"Invalid repo name: {name!r}")
        if self.namespaces is not None and namespace not in self.namespaces | {self.user}:
            raise _HubError(403, f"You don't have the rights to create a {repo_type} under the namespace \"{namespace}\"")
        repo_id = f"{namespace}/{name}"
        if not self._can_write(repo_type, repo_id):
            raise _HubError(403, f"You don't have the rights to create a {repo_type} under the namespace \"{namespace}\"")
        key = f"{repo_type}:{repo_id}"
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        with self._lock:
            if key in self._repos:
                # the Hub's 409 carries the url, which create_repo(exist_ok=True) returns
                raise _HubError(409, f"You already created this {repo_type} repo", url=self._repo_url(repo_type, repo_id))
            repo = {"_id": secrets.token_hex(12), "id": repo_id, "type": repo_type, "private": private,
                    "gated": False, "createdAt": _now(), "commits": {}, "branches": {}, "tags": {}, "lfs": set()}
            tree = {".gitattributes": self._entry(DEFAULT_GITATTRIBUTES.encode(), lfs=False)}
            repo["branches"]["main"] = self._new_commit(repo, None, tree, "initial commit", "", "system")
            self._repos[key] = repo
            self._save()
        return _json({"url": self._repo_url(repo_type, repo_id), "name": repo_id, "id": repo["_id"]})

    def _settings(self, repo_type: str, repo_id: str, body: _Body, authed: bool) -> _Response:
        repo = self._repo(repo_type, repo_id, authed, write=True)
        payload = body.json() or {}
        if "gated" in payload:
            if payload["gated"] not in ("auto", "manual", False):
                raise _HubError(400, f"Invalid gated value: {payload['gated']!r}")
            repo["gated"] = payload["gated"]
        if "visibility" in payload:
            if payload["visibility"] not in ("public", "private"):
                raise _HubError(400, f"Invalid visibility: {payload['visibility']!r}")
            repo["private"] = payload["visibility"] == "private"
        if "private" in payload:
            repo["private"] = bool(payload["private"])
        self._save()
        return _json({"gated": repo["gated"], "private": repo["private"]})

    def _preupload(self, repo_type: str, repo_id: str, revision: str, body: _Body, authed: bool) -> _Response:
        repo = self._repo(repo_type, repo_id, authed, write=True)
        head = self._resolve(repo, revision)
        tree = repo["commits"][head]["tree"]
        payload = body.json() or {}
        gitignore = payload.get("gitIgnore")
        if gitignore is None and ".gitignore" in tree:
            gitignore = self._read_blob(tree[".gitignore"]["sha256"]).decode("utf-8", "replace")
        ignore_patterns = [
            line.strip() for line in (gitignore or "").splitlines() if line.strip() and not line.startswith("#")
        ]
        files = []
        for f in payload.get("files") or []:
            path, size = f["path"], int(f.get("size", 0))
            sample = base64.b64decode(f.get("sample") or "")
            lfs = size >= self.lfs_threshold or self._gitattributes_lfs(tree, path) or not _is_text(sample)
            current = tree.get(path)
            oid = None if current is None else current["sha256"] if current["lfs"] else current["oid"]
            files.append({"path": path, "uploadMode": "lfs" if lfs else "regular",
                          "shouldIgnore": any(_glob_match(path, p) for p in ignore_patterns), "oid": oid})
        return _json({"files": files, "commitOid": head})

    def _upload_href(self, repo_type: str, repo_id: str, oid: str, size: int) -> str:
        sig = hmac.new(self._secret, f"{repo_type}|{repo_id}|{oid}|{size}".encode(), "sha256").hexdigest()
        return f"{self.url}/_lfs/upload/{repo_type}/{repo_id}/{oid}?size={size}&sig={sig}"

    def _lfs_batch(self, repo_type: str, repo_id: str, body: _Body, authed: bool) -> _Response:
        lfs_type = "application/vnd.git-lfs+json"
        with self._lock:
            repo = self._repo(repo_type, repo_id, authed, write=True)
            payload = body.json() or {}
            if payload.get("operation") != "upload":
                raise _HubError(400, "LocalHub's LFS batch endpoint only handles uploads")
            objects = []
            for obj in payload.get("objects") or []:
                oid, size = obj.get("oid"), obj.get("size")
                out: dict[str, Any] = {"oid": oid, "size": size}
                if not (isinstance(oid, str) and _SHA256.fullmatch(oid) and isinstance(size, int) and size >= 0):
                    out["error"] = {"code": 422, "message": "Invalid object (oid must be a sha256, size an integer)"}
                elif oid not in repo["lfs"]:
                    verify = f"{self._repo_url(repo_type, repo_id)}.git/info/lfs/objects/verify"
                    out["authenticated"] = True
                    out["actions"] = {"upload": {"href": self._upload_href(repo_type, repo_id, oid, size)},
                                      "verify": {"href": verify}}
                objects.append(out)
        return _json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}, content_type=lfs_type)

    def _lfs_put(self, parts: list[str], params: dict, body: _Body) -> _Response:
        if len(parts) != 4:
            raise _HubError(404, "Not found")
        repo_type, repo_id, oid = parts[0], "/".join(parts[1:3]), parts[3]
        size = int(params.get("size", ["-1"])[0])
        expected = hmac.new(self._secret, f"{repo_type}|{repo_id}|{oid}|{size}".encode(), "sha256").hexdigest()
        if not hmac.compare_digest(expected, params.get("sig", [""])[0]):
            raise _HubError(403, "Invalid upload signature")
        if body.size != size or body.sha256 != oid:
            raise _HubError(400, f"Uploaded content does not match: expected sha256 {oid} and size {size}, "
                                 f"got {body.sha256} and {body.size}")
        path = self.blob_path(oid)
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_name(path.name + f".{secrets.token_hex(4)}.tmp")
            with open(tmp, "wb") as out:
                body.file.seek(0)
                shutil.copyfileobj(body.file, out, 1 << 20)
            os.replace(tmp, path)
        with self._lock:
            repo = self._repos.get(f"{repo_type}:{repo_id}")
            if repo is None:
                raise _HubError(404, "Repository not found", "RepoNotFound")
            repo["lfs"].add(oid)
            self._save()
        return _Response(200, b"", {"ETag": f'"{oid}"'})

    def _lfs_verify(self, repo_type: str, repo_id: str, body: _Body, authed: bool) -> _Response:
        with self._lock:
            repo = self._repo(repo_type, repo_id, authed, write=True)
            payload = body.json() or {}
            if payload.get("oid") not in repo["lfs"]:
                raise _HubError(404, f"LFS object {payload.get('oid')} was not uploaded")
            if self.blob_path(payload["oid"]).stat().st_size != payload.get("size"):
                raise _HubError(422, "LFS object size mismatch")
        return _json({"message": "Object verified"})

    def _commit(self, repo_type: str, repo_id: str, revision: str, params: dict, body: _Body, authed: bool) -> _Response:
        repo = self._repo(repo_type, repo_id, authed, write=True)
        if params.get("create_pr", ["0"])[0] not in ("0", "", "false"):
            raise _HubError(400, "LocalHub does not implement pull requests (create_pr)")
        branch = revision[len("refs/heads/"):] if revision.startswith("refs/heads/") else revision
        if branch not in repo["branches"]:
            if revision in repo["tags"] or revision in repo["commits"]:
                raise _HubError(400, f"Can only commit to a branch, not to {revision}")
            raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        head = repo["branches"][branch]
        lines = [json.loads(line) for line in body.data().decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HubError(400, "The commit payload must start with a header line")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent is not None and not (len(parent) >= 5 and head.startswith(parent.lower())):
            raise _HubError(412, "A commit has happened since. Please refresh and try again.")
        tree = dict(repo["commits"][head]["tree"])
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            path = str(value.get("path", "")).strip("/")
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise _HubError(400, f"Unsupported encoding {value.get('encoding')!r}")
                tree[path] = self._entry(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                oid = value.get("oid")
                if oid not in repo["lfs"] or not self.blob_path(oid).exists():
                    raise _HubError(400, f"Your push was rejected because an LFS pointer pointed to a file that does "
                                         f"not exist: {path} ({oid})")
                tree[path] = self._entry_for(oid, self.blob_path(oid).stat().st_size, lfs=True)
            elif key == "deletedFile":
                if tree.pop(path, None) is None:
                    raise _HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            elif key == "deletedFolder":
                inside = [p for p in tree if p.startswith(path + "/") or not path]
                if not inside:
                    raise _HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in inside:
                    del tree[p]
            else:
                raise _HubError(400, f"Unknown commit operation {key!r}")
        for path in tree:
            if any(p.startswith(path + "/") for p in tree):
                raise _HubError(400, f"'{path}' cannot be both a file and a folder")
        if "README.md" in tree and tree["README.md"] != repo["commits"][head]["tree"].get("README.md"):
            content = self._read_blob(tree["README.md"]["sha256"]).decode("utf-8", "replace")
            errors, _, _ = validate_card_yaml(content, repo_type)
            if errors:
                raise _HubError(400, "Invalid metadata in README.md.\n" + "\n".join(f"- {e}" for e in errors))
        oid = self._new_commit(repo, head, tree, header.get("summary") or "", header.get("description") or "", self.user)
        repo["branches"][branch] = oid
        self._save()
        return _json({"success": True, "commitOid": oid, "commitUrl": f"{self._repo_url(repo_type, repo_id)}/commit/{oid}",
                      "hookOutput": "", "pullRequestUrl": None})

    def _tree(self, repo_type: str, repo_id: str, revision: str, path: str, params: dict, authed: bool) -> _Response:
        repo = self._repo(repo_type, repo_id, authed)
        head = self._resolve(repo, revision)
        tree = repo["commits"][head]["tree"]
        recursive = params.get("recursive", ["false"])[0].lower() in ("1", "true")
        expand = params.get("expand", ["false"])[0].lower() in ("1", "true")
        prefix = path + "/" if path else ""
        if path and not any(p.startswith(prefix) for p in tree):
            raise _HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": head})
        names: set[str] = set()
        for p in tree:
            if not p.startswith(prefix):
                continue
            rel = p[len(prefix):].split("/")
            stop = len(rel) if recursive else 1
            for depth in range(1, stop + 1):
                names.add(prefix + "/".join(rel[:depth]))
        infos = [self._path_info(tree, n) for n in names]
        # The Hub lists folders first, then files, each by name.
        infos.sort(key=lambda i: (i["type"] != "directory", i["path"]))
        size = self.page_size_expand if expand else self.page_size
        start = int(params.get("cursor", ["0"])[0])
        if expand:
            self._expand(repo, head, infos[start:start + size])
        base = f"/api/{repo_type}s/{repo_id}/tree/{quote(revision, safe='')}" + (f"/{quote(path, safe='')}" if path else "")
        return self._page(infos, params, base, size)

    def _paths_info(self, repo_type: str, repo_id: str, revision: str, headers: Any, body: _Body, authed: bool) -> _Response:
        repo = self._repo(repo_type, repo_id, authed)
        head = self._resolve(repo, revision)
        tree = repo["commits"][head]["tree"]
        if "json" in (headers.get("Content-Type") or ""):
            payload = body.json() or {}
            paths, expand = payload.get("paths") or [], bool(payload.get("expand"))
        else:
            form = parse_qs(body.data().decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), form.get("expand", ["false"])[0].lower() in ("1", "true")
        infos = [i for i in (self._path_info(tree, p.strip("/")) for p in paths) if i is not None]
        return _json(self._expand(repo, head, infos) if expand else infos)

    def _ref(self, method: str, kind: str, repo_type: str, repo_id: str, name: str, body: _Body, authed: bool) -> _Response:
        repo = self._repo(repo_type, repo_id, authed, write=True)
        table = repo["tags" if kind == "tag" else "branches"]
        if method == "DELETE":
            if name not in table:
                raise _HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
            if kind == "branch" and name == "main":
                raise _HubError(403, "Cannot delete the main branch")
            del table[name]
        else:
            payload = body.json() or {}
            # POST .../tag/{revision} {"tag": name}; POST .../branch/{name} {"startingPoint": revision}
            new_name, target = (payload.get("tag"), name) if kind == "tag" else (name, payload.get("startingPoint") or "main")
            if not isinstance(new_name, str) or not new_name or new_name in repo["branches"] or new_name in repo["tags"]:
                if new_name in table:
                    raise _HubError(409, f"{kind.capitalize()} {new_name} already exists")
                raise _HubError(400, f"Invalid or conflicting {kind} name: {new_name!r}")
            table[new_name] = self._resolve(repo, target)
        self._save()
        return _json({})

    def _resolve_file(self, repo_type: str, repo_id: str, revision: str, path: str, headers: Any, authed: bool) -> _Response:
        with self._lock:
            repo = self._repo(repo_type, repo_id, authed)
            if repo["gated"] and not authed:
                raise _HubError(401, "Access to this repository is restricted: you must be authenticated.", "GatedRepo")
            head = self._resolve(repo, revision)
            entry = repo["commits"][head]["tree"].get(path)
        if entry is None:
            raise _HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": head})
        size = entry["size"]
        out = {"X-Repo-Commit": head, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream",
               "ETag": f'"{entry["sha256"] if entry["lfs"] else entry["oid"]}"',
               "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}"}
        if entry["lfs"]:
            out.update({"X-Linked-Etag": f'"{entry["sha256"]}"', "X-Linked-Size": str(size)})
        start, length, status = 0, size, 200
        range_header = headers.get("Range")
        if range_header:
            match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", range_header)
            if not match or match.groups() == ("", ""):
                raise _HubError(416, "Invalid range", headers={"Content-Range": f"bytes */{size}"})
            first, last = match.groups()
            if first == "":
                start = max(size - int(last), 0)
                end = size - 1
            else:
                start, end = int(first), min(int(last), size - 1) if last else size - 1
            if start >= size or end < start:
                raise _HubError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
            length, status = end - start + 1, 206
            out["Content-Range"] = f"bytes {start}-{end}/{size}"
        return _Response(status, headers=out, file=(self.blob_path(entry["sha256"]), start, length))


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
                remaining = size
                while remaining:
                    chunk = self.rfile.read(min(remaining, 1 << 20))
                    if not chunk:
                        raise ConnectionError("client closed the connection")
                    body.write(chunk)
                    remaining -= len(chunk)
                self.rfile.readline()
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    raise ConnectionError("client closed the connection")
                body.write(chunk)
                remaining -= len(chunk)
        return body

    def _handle(self) -> None:
        hub, method = self.hub, self.command
        raw_path, _, query = self.path.partition("?")
        path = unquote(raw_path)
        body = self._read_body()
        auth = self.headers.get("Authorization") or ""
        authed = hmac.compare_digest(auth.encode(), f"Bearer {hub.token}".encode())
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
            if auth and not authed and not raw_path.startswith("/_lfs/"):
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
            hub.requests.append(RequestRecord(method, path, query, response.status, body.size, sent, authed, injected))
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

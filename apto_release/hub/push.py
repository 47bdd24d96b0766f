"""``apto-release push``: publish a release's folders to their Hub repos, one atomic commit each.

The repos come from the release manifest (``release.toml``): the dataset sample (public, gated)
and the full dataset (private); per model, the merged model repo, the GGUF repo (the manifest's
GGUF types and the card) and, with ``push_adapter``, the adapter repo. ``only`` narrows them to
``dataset.sample``, ``dataset.full`` or a model's name (its model, GGUF and adapter repos).

How a push goes:

1. **Local checks, before any request**: every folder exists and holds its files (hidden files and
   folders, names starting with ``.``, and caches are never uploaded); each GGUF type listed has
   its file; each card's YAML is checked (``cards.model.check_card`` for model repos; a dataset
   card must parse and have ``configs``); every dataset folder, private ones included, must carry
   ``dataset build``'s marker ``.apto-build.json`` naming the SHA-256 of a records file that passed
   validation, and hold the rows it counted; the **public-repo guard**: a folder pushed to a
   public dataset repo must be the sample, and its Parquet files (counted from their metadata)
   must hold no more rows than the manifest's ``max_rows``; a model or adapter folder must hold a
   model (``check_model_folder``); no file may exceed the Hub's ``MAX_FILE_SIZE``. Only regular
   files inside the folder, or links to them, are published (``hub.filerules``: a link out of
   the folder, a folder link, a FIFO, socket or device is refused by name, never opened); every
   file to publish passes the credential scan (``hub.secrets``; the manifest's
   ``allow_secrets_in`` lists fixtures holding fake keys). Every local file gets its SHA-256 (and,
   under 10 MB, its git blob SHA-1).
2. **Plan** (read only: repo info, the recursive tree at the head, the refs): each local file is
   *add*, *change* or *keep* by comparing checksums with the remote's (``lfs.sha256`` of LFS
   files, ``blob_id`` of regular ones). A remote file the folder lacks is *delete* only when a
   release of ours published it, unchanged since: our commits list the release's files (path,
   SHA-256, git blob SHA-1) in their description, and the plan reads them back from the branch's
   history (``list_repo_commits``). Anything else (a maintainer's ``NOTICE.md``, a file committed
   while the push ran) is *kept* and reported (``kept: NOTICE.md, not ours``), unless ``prune``
   is set. Hidden remote files such as ``.gitattributes`` are left alone. The history, not the
   state file, decides: a fresh CI machine has no state file, and the history is what the repo
   really holds (including commits another machine made). A tag ``v<version>`` that already exists must
   point at the head and the head must match the folder; otherwise the release is refused before
   anything is written (bump the version).
   **Pre-flight** (a real push, before the plan): ``whoami``, then the token's write access to every
   repo (``check_write_access``); after the plan, the tag conflicts above and every card to be
   committed, sent to the Hub's validator (``check_cards_on_hub``). Whatever can refuse a repo is
   thus checked on every repo before the first is written: a push publishes the whole release or
   writes nothing, save for network and server failures, which the next run completes.
3. **Publish**, repo after repo: create the repo with the manifest's visibility, set its gating,
   then one ``create_commit`` with every addition and deletion, on top of the head it planned
   against (``parent_commit``). On 429, 5xx and 412 (someone pushed meanwhile) it re-reads the
   head, re-plans (so a file another writer committed meanwhile is kept, not deleted) and tries
   again (bounded, short backoff, ``Retry-After`` honoured but capped);
   a re-plan that finds nothing left to do means the earlier commit went through, so there is
   never a duplicate commit. The new tree is then compared with the local files, and the tag is
   created (or kept, when it already points at that commit).

A second push of an unchanged release makes no commit and uploads nothing. The token (``HF_TOKEN``
or the local login) is redacted from every message this module raises.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apto_release.cards.check import check_card_text
from apto_release.errors import AptoError, InputError, UsageError
from apto_release.io import human_size

if TYPE_CHECKING:  # the release hands the push its manifest; the hub never imports the release
    from apto_release.release.manifest import Manifest

#: Files under this size also get their git blob SHA-1 (regular, non-LFS files on the Hub are smaller).
GIT_SHA1_LIMIT = 10_000_000
#: Folder names never uploaded, besides hidden ones.
CACHE_DIRS = frozenset({"__pycache__"})
BUILD_MARKER = ".apto-build.json"  # written by ``dataset build`` (``dataset.build.BUILD_MARKER``)
README = "README.md"
#: Our commits list the release's files in their description, after this line (one
#: ``<sha256> <git blob sha1 or -> <path>`` a line): the Hub's history then says which files a
#: release of ours published, on any machine, with or without the state file.
FILES_HEADER = "apto-release files (sha256, git blob sha1, path):"
#: The Hub's limit on one file (https://huggingface.co/docs/hub/storage-limits: 50 GB a file, 20 GB recommended).
MAX_FILE_SIZE = 50 * 1000**3
RETRYABLE = frozenset({408, 412, 429, 500, 502, 503, 504})
RETRY_AFTER_CAP = 10.0  # seconds: a longer Retry-After is cut to this
DEFAULT_ATTEMPTS = 4


class PushError(AptoError, RuntimeError):
    """A push failed. ``results`` says which repos were published and which were not."""

    def __init__(self, message: str, *, results: Sequence[RepoResult] = (), **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.results = list(results)


# ---------------------------------------------------------------------------------------------
# Targets and local files


@dataclass(frozen=True)
class Target:
    """One repo of the release and the local folder (or files) that go into it."""

    name: str  # the --only name it belongs to: dataset.sample, dataset.full or a model name
    role: str  # "dataset sample", "dataset full", "model", "GGUF", "adapter"
    repo_id: str
    repo_type: str  # "dataset" or "model"
    folder: Path
    private: bool
    gated: str | bool = False
    max_rows: int | None = None
    card_kind: str = "model"  # "dataset", "model", "gguf", "adapter"
    gguf_types: tuple[str, ...] = ()
    model_name: str | None = None


@dataclass(frozen=True)
class LocalFile:
    path: str  # in the repo, with '/'
    local: Path
    size: int
    sha256: str
    git_sha1: str | None  # None at GIT_SHA1_LIMIT bytes and above


def targets(manifest: Manifest, only: Iterable[str] | None = None) -> list[Target]:
    """The repos of the release, narrowed to the ``only`` names (see ``Manifest.target_names``)."""
    names = manifest.target_names()
    wanted = list(dict.fromkeys(only or []))
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise UsageError(
            f"--only {', '.join(unknown)}: not in the manifest; choose from {', '.join(names) or 'nothing'}",
            path=manifest.path,
        )
    out: list[Target] = []
    for key in ("sample", "full"):
        ds = manifest.datasets.get(key)
        if ds is None or wanted and f"dataset.{key}" not in wanted:
            continue
        out.append(Target(f"dataset.{key}", f"dataset {key}", ds.repo, "dataset", ds.folder, ds.private,
                          ds.gated, ds.max_rows, "dataset"))
    for model in manifest.models:
        if wanted and model.name not in wanted:
            continue
        out.append(Target(model.name, "model", model.repo, "model", model.merged, model.private, card_kind="model",
                          model_name=model.name))
        if model.gguf:
            out.append(Target(model.name, "GGUF", model.gguf_repo, "model", model.gguf_folder, model.private,
                              card_kind="gguf", gguf_types=model.gguf, model_name=model.name))
        if model.adapter_repo:
            out.append(Target(model.name, "adapter", model.adapter_repo, "model", model.adapter, model.private,
                              card_kind="adapter", model_name=model.name))
    return out


def _hidden_or_cache(name: str) -> bool:
    return name.startswith(".") or name in CACHE_DIRS


def hash_file(path: Path) -> LocalFile:
    """SHA-256 and (under ``GIT_SHA1_LIMIT``) git blob SHA-1 of a file, in one read."""
    size = path.stat().st_size
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(b"blob %d\0" % size) if size < GIT_SHA1_LIMIT else None
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha256.update(chunk)
            if sha1 is not None:
                sha1.update(chunk)
    return LocalFile("", path, size, sha256.hexdigest(), sha1.hexdigest() if sha1 else None)


def folder_files(folder: Path) -> list[Path]:
    """Files of ``folder`` to upload, sorted: everything but hidden files and folders and caches.

    Only regular files, and symlinks to regular files inside the folder (``hub.filerules``):
    anything else raises ``InputError`` naming it; nothing is opened.
    """
    from apto_release.hub.filerules import publishable_files

    return publishable_files(folder, lambda name: _hidden_or_cache(name) or name.endswith((".pyc", ".pyo")))


def _gguf_files(target: Target) -> list[Path]:
    from apto_release.gguf.output import existing_outputs, split_names

    files = []
    for type_ in target.gguf_types:
        stem = f"{target.model_name}-{type_}"
        found = existing_outputs(target.folder, stem)
        if not found:
            raise InputError(
                f"no GGUF file for {type_}: expected {stem}.gguf or a split set {stem}-00001-of-0000N.gguf",
                path=target.folder, hint=f"convert it with 'apto-release gguf convert', or remove {type_} from the manifest's gguf list",
            )
        counts = {int(m.group(1)) for p in found if (m := re.search(r"-\d{5}-of-(\d{5})\.gguf$", p.name))}
        if counts:
            if len(counts) > 1 or target.folder / f"{stem}.gguf" in found:
                raise InputError(f"more than one output for {type_} ({', '.join(p.name for p in found)}); remove the stale ones", path=target.folder)
            expected = split_names(stem, counts.pop())
            missing = [n for n in expected if not (target.folder / n).is_file()]
            if missing:
                raise InputError(f"the split set of {type_} is incomplete: {', '.join(missing)} missing", path=target.folder)
            found = [target.folder / n for n in expected]
        files += found
    return [target.folder / README, *files]


def count_parquet_rows(files: Iterable[Path]) -> int:
    """Rows of the Parquet files, from their footers (no data is read)."""
    import pyarrow.parquet as pq

    total = 0
    for path in files:
        try:
            total += pq.read_metadata(path).num_rows
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad footer
            raise InputError(f"not a readable Parquet file: {exc}", path=path) from None
    return total


def read_build_marker(target: Target, files: Sequence[Path]) -> tuple[dict[str, Any], int]:
    """The provenance guard of every dataset repo, private full set included: the folder must carry
    ``dataset build``'s marker naming the SHA-256 of a records file that passed validation, and its
    Parquet files must hold the rows the marker counted. Returns (the marker, the row count).

    The marker's ``records`` entry is written only by a build that took its records from
    ``load_valid_records`` (``dataset build``, the release's dataset jobs), after they passed; a
    folder built otherwise, or by a version of apto-release before the entry existed, is refused.
    Raises ``UsageError`` (before any request) otherwise.
    """
    where = f"refusing to push {target.folder} to the dataset repo {target.repo_id}"
    hint = "build it with 'apto-release dataset build' (or the release's dataset stage), which validates the records first"
    marker_path = target.folder / BUILD_MARKER
    if os.path.lexists(marker_path):
        from apto_release.hub.filerules import check_file

        # Never opened unless it is a regular file of the folder: a FIFO would hang the read.
        check_file(target.folder, marker_path)
    try:
        marker = json.loads(marker_path.read_text("utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{where}: it has no {BUILD_MARKER}, so nothing says its records were validated", hint=hint) from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{where}: {BUILD_MARKER} cannot be read ({exc})", hint=hint) from None
    if not isinstance(marker, dict):
        raise UsageError(f"{where}: {BUILD_MARKER} is not a JSON object", hint=hint)
    records = marker.get("records")
    sha = records.get("sha256") if isinstance(records, dict) else None
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise UsageError(f"{where}: {BUILD_MARKER} names no records file SHA-256, so it was not built from validated records",
                         hint=hint)
    verdict = records.get("validation")
    if verdict not in ("PASSED", "PASSED with warnings"):
        raise UsageError(f"{where}: {BUILD_MARKER} says its records file {str(records.get('file') or '')!r} "
                         f"(SHA-256 {sha[:12]}…) did not pass validation ({verdict!r})", hint=hint)
    rows = count_parquet_rows(p for p in files if p.suffix == ".parquet")
    if marker.get("rows") != rows:
        raise UsageError(f"{where}: its Parquet files hold {rows:,} rows but {BUILD_MARKER} says {marker.get('rows')}: "
                         "the folder changed after it was built", hint="build it again")
    return marker, rows


def check_public_dataset(target: Target, files: Sequence[Path]) -> int:
    """The public-repo guard: only the validated sample, with at most ``max_rows`` rows, goes public.

    Returns the row count. Raises ``UsageError`` (before any request) otherwise.
    """
    where = f"refusing to push {target.folder} to the public dataset repo {target.repo_id}"
    build_hint = ("publish only the sample built with 'apto-release dataset build SAMPLE.jsonl --report distribution.json'; "
                  "the full set belongs in a private repo")
    if not (target.folder / BUILD_MARKER).is_file():
        raise UsageError(f"{where}: it has no {BUILD_MARKER}, so it is not a validated sample", hint=build_hint)
    marker, rows = read_build_marker(target, files)
    if marker.get("kind") != "sample":
        raise UsageError(f"{where}: it was built as the {marker.get('kind') or 'unknown'} set, not as the sample (no distribution report)",
                         hint=build_hint)
    limit = target.max_rows
    if limit is not None and rows > limit:
        raise UsageError(f"{where}: its Parquet files hold {rows:,} rows, more than max_rows = {limit:,}", hint=build_hint)
    return rows


def check_model_folder(target: Target, files: Sequence[Path]) -> None:
    """A model repo's folder must hold a model, not only a card: a merged model needs ``config.json``
    and its weights (``model.safetensors``, or ``model.safetensors.index.json`` and every shard its
    ``weight_map`` names); an adapter ``adapter_config.json`` and ``adapter_model.safetensors``. (A
    GGUF repo's files are the manifest's types, which ``_gguf_files`` already requires.)

    Raises ``InputError`` naming the folder and what is missing; dataset and GGUF targets pass.
    """
    if target.card_kind not in ("model", "adapter"):
        return
    names = {p.relative_to(target.folder).as_posix() for p in files}
    if target.card_kind == "adapter":
        missing = [n for n in ("adapter_config.json", "adapter_model.safetensors") if n not in names]
        hint = "train it with 'apto-release train', or fix the adapter folder in the manifest"
    else:
        missing = [] if "config.json" in names else ["config.json"]
        index_name = "model.safetensors.index.json"
        if index_name in names:
            index_path = target.folder / index_name
            try:
                weight_map = json.loads(index_path.read_text("utf-8")).get("weight_map")
            except (OSError, ValueError, AttributeError) as exc:
                raise InputError(f"refusing to push the model folder to {target.repo_id}: {index_name} cannot be read "
                                 f"({' '.join(str(exc).split())})", path=index_path) from None
            if not isinstance(weight_map, dict) or not weight_map:
                missing.append(f"the weight_map of {index_name}")
            else:
                missing += sorted({str(s) for s in weight_map.values()} - names)
        elif "model.safetensors" not in names:
            missing.append(f"model.safetensors (or {index_name} and its shards)")
        hint = "merge it with 'apto-release merge', or fix the merged folder in the manifest"
    if missing:
        raise InputError(f"refusing to push the {target.role} folder to {target.repo_id}: it holds no {target.role}, "
                         f"{', '.join(missing)} missing", path=target.folder, hint=hint)


@dataclass
class Prepared:
    """A target with its local files checked and hashed."""

    target: Target
    files: dict[str, LocalFile]
    rows: int | None = None


Hasher = Callable[[Path], Any]  # a file -> an object with size, sha256 and git_sha1 (``hash_file``)


def prepare(target: Target, hasher: Hasher = hash_file, allow_secrets: Mapping[Path, str] | None = None) -> Prepared:
    """Check and hash a target's local files (no request). Raises InputError / UsageError.

    ``hasher`` may answer from a cache (the release command's state file does). ``allow_secrets``:
    the manifest's ``allow_secrets_in`` (path -> reason), files the credential scan skips.
    """
    folder = target.folder
    if not folder.is_dir():
        raise InputError(f"the folder of {target.role} repo {target.repo_id} does not exist", path=folder,
                         hint="build it first, or fix the manifest")
    paths = _gguf_files(target) if target.card_kind == "gguf" else folder_files(folder)
    check_file_rules(target, paths)
    card = folder / README
    if not card.is_file():
        raise InputError(f"the {target.role} folder has no README.md card", path=folder,
                         hint="write the cards with 'apto-release cards'" if target.repo_type == "model" else "build it with 'apto-release dataset build'")
    problems = check_card_text(card.read_text("utf-8"), target.card_kind)
    if problems:
        raise InputError(f"the {target.role} card is not valid: " + "; ".join(problems), path=card)
    check_model_folder(target, paths)
    rows = None
    if target.repo_type == "dataset":
        rows = read_build_marker(target, paths)[1] if target.private else check_public_dataset(target, paths)
    check_secrets(target, paths, allow_secrets)
    files = {}
    for path in paths:
        info = hasher(path)
        rel = path.relative_to(folder).as_posix()
        files[rel] = LocalFile(rel, path, info.size, info.sha256, info.git_sha1)
    return Prepared(target, files, rows)


def check_file_rules(target: Target, paths: Sequence[Path]) -> None:
    """Only regular files inside the folder (or links to them) are published (``hub.filerules``);
    ``InputError`` naming the link and its target, or the FIFO, socket or device, otherwise."""
    from apto_release.hub.filerules import check_file

    root = target.folder.resolve()
    for path in paths:
        if os.path.lexists(path):  # a missing card is named by prepare's own check
            check_file(target.folder, path, root=root)


def check_secrets(target: Target, paths: Sequence[Path], allow_secrets: Mapping[Path, str] | None = None) -> None:
    """The credential scan (``hub.secrets``) of every file to publish; ``InputError`` naming
    the file and line, the secret masked, unless the file is in ``allow_secrets``."""
    from apto_release.hub.secrets import check_no_secrets

    check_no_secrets(paths, allow_secrets, what=f" to the {target.role} repo {target.repo_id}")


# ---------------------------------------------------------------------------------------------
# Plans


@dataclass(frozen=True)
class FileChange:
    path: str
    size: int  # the local size; the remote size for a deletion
    reason: str = ""  # a kept remote file: why it is not deleted ("not ours", "changed since our release")


@dataclass
class RepoPlan:
    """What a push would do to one repo, against the remote head ``head``."""

    target: Target
    tag: str
    exists: bool
    head: str | None
    add: list[FileChange] = field(default_factory=list)
    change: list[FileChange] = field(default_factory=list)
    delete: list[FileChange] = field(default_factory=list)
    keep: list[FileChange] = field(default_factory=list)
    #: Remote files the folder lacks that no release of ours published (or that changed since):
    #: left in place and reported, unless the push prunes.
    kept: list[FileChange] = field(default_factory=list)
    tag_commit: str | None = None  # where the tag points now (None: no tag yet)
    remote_private: bool | None = None
    remote_gated: str | bool | None = None
    local: dict[str, LocalFile] = field(default_factory=dict, repr=False)

    @property
    def repo_id(self) -> str:
        return self.target.repo_id

    @property
    def repo_type(self) -> str:
        return self.target.repo_type

    @property
    def changed(self) -> bool:
        return bool(self.add or self.change or self.delete)

    @property
    def upload_bytes(self) -> int:
        return sum(f.size for f in self.add + self.change)

    @property
    def tag_conflict(self) -> str | None:
        """Why the tag cannot be put on this release's commit (None: it can)."""
        if self.tag_commit is None or not self.changed and self.tag_commit == self.head:
            return None
        why = "the local files differ from it" if self.tag_commit == self.head else "not at the head"
        return f"tag {self.tag} already points at commit {self.tag_commit[:12]} ({why})"


@dataclass
class RepoResult:
    """What a push did to one repo. ``status``: committed, unchanged, planned (dry run), failed, not started."""

    plan: RepoPlan
    status: str
    commit: str | None = None
    tag_action: str | None = None  # "created", "kept", or None (not tagged)
    added: int = 0
    changed: int = 0
    deleted: int = 0
    bytes_uploaded: int = 0
    attempts: int = 0
    error: str | None = None

    @property
    def repo_id(self) -> str:
        return self.plan.repo_id

    @property
    def tag(self) -> str | None:
        return self.plan.tag if self.tag_action else None


# ---------------------------------------------------------------------------------------------
# Talking to the Hub


class _Session:
    """The api, the secrets to redact, and the retry policy."""

    def __init__(self, api, *, attempts: int, backoff: float, sleep: Callable[[float], None] = time.sleep) -> None:
        from huggingface_hub import get_token

        self.api = api
        self.token = api.token if isinstance(api.token, str) else (None if api.token is False else get_token())
        self.secrets = [s for s in {self.token, api.token if isinstance(api.token, str) else None, get_token()} if s]
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.sleep = sleep

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "hf_***")
        return text

    def describe(self, exc: BaseException) -> str:
        """One line for an error from the client, without the token."""
        status = _status(exc)
        text = " ".join(str(exc).split()) or type(exc).__name__
        if status is not None and str(status) not in text[:20]:
            text = f"HTTP {status}: {text}"
        return self.redact(text)

    def wait(self, exc: BaseException, attempt: int) -> float:
        retry_after = None
        response = getattr(exc, "response", None)
        if response is not None:
            with contextlib.suppress(TypeError, ValueError):
                retry_after = float(response.headers.get("Retry-After"))
        delay = retry_after if retry_after is not None else self.backoff * 2 ** (attempt - 1)
        return max(0.0, min(delay, RETRY_AFTER_CAP))

    def call(self, what: str, repo_id: str, fn: Callable[[], Any], *, passthrough: tuple[type, ...] = (),
             pass_status: Iterable[int] = ()) -> Any:
        """``fn()``, tried again on 429/5xx (idempotent calls only); other failures: PushError.

        Errors of the ``passthrough`` types or with a status in ``pass_status`` are raised as they are.
        """
        from huggingface_hub.errors import HfHubHTTPError

        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except passthrough:
                raise
            except HfHubHTTPError as exc:
                status = _status(exc)
                if status in pass_status:
                    raise
                if status in RETRYABLE and status != 412 and attempt < self.attempts:
                    self.sleep(self.wait(exc, attempt))
                    continue
                raise PushError(f"{what} failed: {self.describe(exc)}", repo=repo_id) from None
            except _transport_errors() as exc:  # connection errors
                if attempt < self.attempts:
                    self.sleep(self.wait(exc, attempt))
                    continue
                raise PushError(f"{what} failed: {self.describe(exc)}", repo=repo_id) from None
        raise AssertionError("unreachable")  # pragma: no cover


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection errors: OSError and the client's HTTP library's transport errors."""
    errors: list[type[BaseException]] = [OSError]
    for name in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            errors.append(__import__(name).TransportError)
    return tuple(errors)


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _remote_files(session: _Session, target: Target, head: str) -> dict[str, Any]:
    api = session.api
    entries = session.call("listing the files", target.repo_id, lambda: list(
        api.list_repo_tree(target.repo_id, repo_type=target.repo_type, revision=head, recursive=True)))
    return {e.path: e for e in entries if hasattr(e, "blob_id") and not any(_hidden_or_cache(p) for p in e.path.split("/"))}


def _same(local: LocalFile, remote: Any) -> bool:
    lfs = getattr(remote, "lfs", None)
    if lfs is not None:
        return lfs.sha256 == local.sha256 and int(lfs.size) == local.size
    return remote.size == local.size and local.git_sha1 is not None and remote.blob_id == local.git_sha1


def _content_id(entry: Any) -> str:
    """What identifies a remote file's content: its LFS SHA-256, or its git blob SHA-1."""
    lfs = getattr(entry, "lfs", None)
    return lfs.sha256 if lfs is not None else entry.blob_id


def files_description(plan: RepoPlan) -> str:
    """The ``FILES_HEADER`` block of our commit's description: every file of the release."""
    lines = [FILES_HEADER]
    for path, f in sorted(plan.local.items()):
        if "\n" in path or "\r" in path:  # pragma: no cover - the Hub refuses such names anyway
            continue
        lines.append(f"{f.sha256} {f.git_sha1 or '-'} {path}")
    return "\n".join(lines)


def parse_files_description(message: str) -> set[tuple[str, str]]:
    """(path, content id) of every file a commit description of ours lists (empty: not ours)."""
    _, sep, body = (message or "").partition(FILES_HEADER)
    found: set[tuple[str, str]] = set()
    if not sep:
        return found
    for line in body.splitlines():
        parts = line.split(" ", 2)
        if len(parts) != 3 or not re.fullmatch(r"[0-9a-f]{64}", parts[0]):
            continue
        found.add((parts[2], parts[0]))
        if re.fullmatch(r"[0-9a-f]{40}", parts[1]):
            found.add((parts[2], parts[1]))
    return found


def _published_by_us(session: _Session, target: Target, head: str) -> set[tuple[str, str]]:
    """(path, content id) of every file a release of ours published on the branch up to ``head``,
    read from our commits' descriptions (``list_repo_commits``)."""
    api = session.api
    commits = session.call("reading the history", target.repo_id, lambda: api.list_repo_commits(
        target.repo_id, repo_type=target.repo_type, revision=head))
    ours: set[tuple[str, str]] = set()
    for commit in commits:
        ours |= parse_files_description(commit.message)
    return ours


def _plan(session: _Session, prepared: Prepared, tag: str, prune: bool = False) -> RepoPlan:
    from huggingface_hub.errors import RepositoryNotFoundError

    target, api = prepared.target, session.api
    try:
        info = session.call("reading the repo", target.repo_id, lambda: api.repo_info(target.repo_id, repo_type=target.repo_type),
                            passthrough=(RepositoryNotFoundError,))
    except RepositoryNotFoundError:
        plan = RepoPlan(target, tag, exists=False, head=None, local=prepared.files)
        plan.add = [FileChange(f.path, f.size) for f in prepared.files.values()]
        return plan
    head = info.sha
    plan = RepoPlan(target, tag, exists=True, head=head, local=prepared.files, remote_private=bool(info.private),
                    remote_gated=getattr(info, "gated", None))
    remote = _remote_files(session, target, head)
    for path, local in prepared.files.items():
        entry = remote.get(path)
        if entry is None:
            plan.add.append(FileChange(path, local.size))
        elif _same(local, entry):
            plan.keep.append(FileChange(path, local.size))
        else:
            plan.change.append(FileChange(path, local.size))
    absent = {p: e for p, e in sorted(remote.items()) if p not in prepared.files}
    # Only files that a release of ours published, unchanged since, are deleted: anything else
    # (a maintainer's NOTICE.md, a file committed while this push ran) is kept and reported.
    ours = _published_by_us(session, target, head) if absent and not prune else set()
    our_paths = {p for p, _ in ours}
    for path, entry in absent.items():
        size = int(entry.size or 0)
        if prune or (path, _content_id(entry)) in ours:
            plan.delete.append(FileChange(path, size))
        else:
            plan.kept.append(FileChange(path, size, "changed since our release" if path in our_paths else "not ours"))
    refs = session.call("reading the tags", target.repo_id, lambda: api.list_repo_refs(target.repo_id, repo_type=target.repo_type))
    plan.tag_commit = next((t.target_commit for t in refs.tags if t.name == tag), None)
    return plan


#: Roles in an organisation that cannot write its repos (whoami's ``orgs[].roleInOrg``).
READ_ONLY_ORG_ROLES = frozenset({"read"})


def write_access_problems(whoami: dict[str, Any], selected: Sequence[Target]) -> list[str]:
    """Why the token of ``whoami`` (the Hub's ``/api/whoami-v2`` answer) cannot write each target
    (empty: it can, as far as the answer tells).

    A ``read`` token writes nothing; a fine-grained token writes a repo when one of its scoped
    entries grants ``repo.write`` on the repo itself or on its namespace (the user or the org); in
    an organisation the user must not be a mere ``read`` member. When the release spans several
    namespaces, each must be the user or one of their orgs; in a release within one namespace that
    is left to the Hub, whose 403 then comes on the first repo's first write, before anything is
    published.
    """
    user = whoami.get("name")
    token = ((whoami.get("auth") or {}).get("accessToken")) or {}
    role = token.get("role")
    orgs = {o.get("name"): o.get("roleInOrg") for o in whoami.get("orgs") or [] if isinstance(o, dict)}
    scoped = ((token.get("fineGrained") or {}).get("scoped")) or []
    several_namespaces = len({t.repo_id.split("/")[0] for t in selected}) > 1
    problems = []
    for target in selected:
        namespace = target.repo_id.split("/")[0]
        if role == "read":
            problems.append(f"{target.repo_id}: the token is read-only")
            continue
        if several_namespaces and namespace != user and namespace not in orgs:
            problems.append(f"{target.repo_id}: {user} is not a member of {namespace}")
            continue
        if orgs.get(namespace) in READ_ONLY_ORG_ROLES:
            problems.append(f"{target.repo_id}: {user} has the role {orgs[namespace]!r} in {namespace}, which cannot write")
            continue
        if role == "fineGrained" and not any(
            "repo.write" in (entry.get("permissions") or [])
            and ((e := entry.get("entity") or {}).get("type") in ("user", "org") and e.get("name") == namespace
                 or e.get("type") == target.repo_type and e.get("name") == target.repo_id)
            for entry in scoped if isinstance(entry, dict)
        ):
            problems.append(f"{target.repo_id}: the fine-grained token has no repo.write on it or on {namespace}")
    return problems


def check_write_access(session: _Session, selected: Sequence[Target]) -> None:
    """Pre-flight: ``whoami`` first, then every target's write access; raises ``UsageError`` naming
    every repo the token cannot write, before anything is written."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        whoami = session.call("checking the token", "", lambda: session.api.whoami(token=session.token),
                              pass_status=(401,))
    except HfHubHTTPError:
        raise UsageError("the Hugging Face token is not valid (whoami answered 401)",
                         hint="set HF_TOKEN to a token with write access, or log in with 'hf auth login'") from None
    problems = write_access_problems(whoami, selected)
    if problems:
        raise UsageError(f"the token of {whoami.get('name')} cannot write every repo of the release: " + "; ".join(problems),
                         hint="use a token with write access to each repo (https://huggingface.co/settings/tokens), "
                              "or fix the organisation in the manifest")


def check_cards_on_hub(session: _Session, plans: Sequence[RepoPlan]) -> None:
    """Pre-flight: every card this push will commit is sent to the Hub's own validator
    (``POST /api/validate-yaml``, what ``RepoCard.validate`` calls), which also judges the commit:
    a card it rejects would fail that repo's commit after the earlier repos were published."""
    from huggingface_hub.utils import build_hf_headers, get_session

    problems = []
    for plan in plans:
        if not any(f.path == README for f in plan.add + plan.change):
            continue
        body = {"repoType": plan.repo_type, "content": plan.local[README].local.read_text("utf-8")}
        url = f"{session.api.endpoint}/api/validate-yaml"

        def post(url=url, body=body):
            response = get_session().post(url, json=body, headers={**build_hf_headers(token=session.token),
                                                                    "Accept": "text/plain"})
            if response.status_code >= 500 or response.status_code == 429:
                from huggingface_hub.utils import hf_raise_for_status

                hf_raise_for_status(response)
            return response

        response = session.call("validating the card", plan.repo_id, post)
        if response.status_code == 400:
            problems.append(f"{plan.repo_id}: {' '.join(response.text.split())}")
    if problems:
        raise UsageError("the Hub rejects a card of the release: " + "; ".join(problems),
                         hint="fix the card's YAML metadata (see https://huggingface.co/docs/hub/model-cards)")


def _prepare_all(manifest: Manifest, only: Iterable[str] | None, hasher: Hasher = hash_file) -> list[Prepared]:
    selected = targets(manifest, only)
    if not selected:
        raise UsageError("the manifest names no repo to push", path=manifest.path)
    prepared = [prepare(t, hasher, manifest.allow_secrets_in) for t in selected]
    check_file_sizes(prepared)
    return prepared


def check_file_sizes(prepared: Sequence[Prepared]) -> None:
    """Pre-flight: the Hub refuses a file over ``MAX_FILE_SIZE`` when it is uploaded, which would be
    after the earlier repos' commits; refuse it here, naming every such file."""
    big = [f"{p.target.repo_id}: {f.path} ({human_size(f.size)})"
           for p in prepared for f in p.files.values() if f.size > MAX_FILE_SIZE]
    if big:
        raise InputError(f"files larger than the Hub takes ({human_size(MAX_FILE_SIZE)} a file): " + "; ".join(big),
                         hint="split them (GGUF: 'apto-release gguf convert --split-max-size'; safetensors: shards)")


def plan_push(manifest: Manifest, *, only: Iterable[str] | None = None, api=None, hasher: Hasher = hash_file,
              prune: bool = False) -> list[RepoPlan]:
    """Check the local folders and compare them with the remote repos; read-only (dry run)."""
    session = _Session(_api(api), attempts=DEFAULT_ATTEMPTS, backoff=1.0)
    prepared = _prepare_all(manifest, only, hasher)
    return [_plan(session, p, manifest.tag, prune) for p in prepared]


def _api(api):
    if api is not None:
        return api
    from huggingface_hub import HfApi

    return HfApi()  # HF_ENDPOINT and HF_TOKEN / the local login, as the client reads them


@contextlib.contextmanager
def progress_bars(enabled: bool | None) -> Iterator[None]:
    """The client's tqdm bars on (``None``: only when stderr is a terminal) or off, for the block."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    if enabled is None:
        enabled = sys.stderr.isatty()
    turn_off = not enabled and not are_progress_bars_disabled()
    if turn_off:
        disable_progress_bars()
    try:
        yield
    finally:
        if turn_off:
            enable_progress_bars()


# ---------------------------------------------------------------------------------------------
# Pushing


def _operations(plan: RepoPlan) -> list:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    ops: list = [CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=str(plan.local[f.path].local))
                 for f in plan.add + plan.change]
    ops += [CommitOperationDelete(path_in_repo=f.path) for f in plan.delete]
    return ops


def _ensure_repo(session: _Session, plan: RepoPlan) -> None:
    target, api = plan.target, session.api
    if not plan.exists:
        session.call("creating the repo", target.repo_id, lambda: api.create_repo(
            target.repo_id, repo_type=target.repo_type, private=target.private, exist_ok=True))
        info = session.call("reading the repo", target.repo_id, lambda: api.repo_info(target.repo_id, repo_type=target.repo_type))
        plan.remote_private, plan.remote_gated = bool(info.private), getattr(info, "gated", None)
    if plan.remote_private is not None and plan.remote_private != target.private:
        session.call("setting the visibility", target.repo_id, lambda: api.update_repo_settings(
            target.repo_id, repo_type=target.repo_type, private=target.private))
    if target.gated and plan.remote_gated != target.gated:
        session.call("setting the gating", target.repo_id, lambda: api.update_repo_settings(
            target.repo_id, repo_type=target.repo_type, gated=target.gated))


def _verify(session: _Session, plan: RepoPlan, commit: str) -> None:
    remote = _remote_files(session, plan.target, commit)
    problems = [p for p, f in plan.local.items() if p not in remote or not _same(f, remote[p])]
    kept = {f.path for f in plan.kept}
    problems += [f"{p} (not in the folder)" for p in remote if p not in plan.local and p not in kept]
    if problems:
        raise PushError(f"after commit {commit[:12]} the remote files differ from the local ones: {', '.join(sorted(problems)[:5])}",
                        repo=plan.repo_id)


def _tag(session: _Session, plan: RepoPlan, commit: str) -> str:
    from huggingface_hub.errors import HfHubHTTPError

    target, api, tag = plan.target, session.api, plan.tag
    hint = "bump the version in the manifest: a published tag is never moved"
    if plan.tag_commit == commit:
        return "kept"
    if plan.tag_commit is not None:
        raise PushError(f"tag {tag} already points at commit {plan.tag_commit[:12]}, not at the release's {commit[:12]}",
                        repo=target.repo_id, hint=hint)
    try:
        session.call("creating the tag", target.repo_id, lambda: api.create_tag(
            target.repo_id, tag=tag, tag_message=f"Release {tag}", revision=commit, repo_type=target.repo_type),
            pass_status=(409,))
        return "created"
    except HfHubHTTPError as exc:
        if _status(exc) != 409:
            raise PushError(f"creating the tag failed: {session.describe(exc)}", repo=target.repo_id) from None
    # 409: it exists (an earlier try went through, or someone else made it): where does it point?
    refs = session.call("reading the tags", target.repo_id, lambda: api.list_repo_refs(target.repo_id, repo_type=target.repo_type))
    now = next((t.target_commit for t in refs.tags if t.name == tag), None)
    if now == commit:
        return "kept"
    raise PushError(f"tag {tag} already points at commit {(now or '?')[:12]}, not at the release's {commit[:12]}",
                    repo=target.repo_id, hint=hint)


def _publish(session: _Session, prepared: Prepared, plan: RepoPlan, version_tag: str, prune: bool = False) -> RepoResult:
    """Create/configure the repo, commit (retrying safely), verify, tag."""
    from huggingface_hub.errors import HfHubHTTPError

    api, target = session.api, prepared.target
    _ensure_repo(session, plan)
    if not plan.exists:
        plan = _plan(session, prepared, version_tag, prune)
    attempted: RepoPlan | None = None  # the plan of the last commit sent (it may have gone through unseen)
    commit = None
    attempt = 0
    while True:
        if conflict := plan.tag_conflict:
            raise PushError(conflict, repo=target.repo_id, hint="bump the version in the manifest: a published tag is never moved")
        if not plan.changed:
            result = RepoResult(plan, "unchanged", commit=plan.head, attempts=attempt)
            if attempted is not None:  # an earlier attempt's commit went through: count it
                result = RepoResult(attempted, "committed", commit=plan.head, attempts=attempt)
            break
        attempt += 1
        attempted = plan
        try:
            info = api.create_commit(
                target.repo_id, _operations(plan), commit_message=f"Release {version_tag}",
                commit_description=f"{target.role} files of release {version_tag}, pushed by apto-release.\n\n"
                                   + files_description(plan),
                repo_type=target.repo_type, revision="main", parent_commit=plan.head,
            )
            commit = info.oid
            result = RepoResult(plan, "committed", commit=commit, attempts=attempt)
            break
        except HfHubHTTPError as exc:
            status = _status(exc)
            if status not in RETRYABLE or attempt >= session.attempts:
                tries = f" (after {attempt} attempts)" if attempt > 1 else ""
                raise PushError(f"the commit failed{tries}: {session.describe(exc)}", repo=target.repo_id) from None
            session.sleep(0 if status == 412 else session.wait(exc, attempt))
        except (*_transport_errors(), ValueError) as exc:  # connection errors; the client's own checks (e.g. the card)
            if not isinstance(exc, ValueError) and attempt < session.attempts:
                session.sleep(session.wait(exc, attempt))
            else:
                raise PushError(f"the commit failed: {session.describe(exc)}", repo=target.repo_id) from None
        plan = _plan(session, prepared, version_tag, prune)  # re-read the head (and our history) and plan again
    if result.status == "committed":
        done = result.plan
        result.added, result.changed, result.deleted = len(done.add), len(done.change), len(done.delete)
        result.bytes_uploaded = done.upload_bytes
        _verify(session, plan, result.commit)
    result.tag_action = _tag(session, plan, result.commit)
    return result


def push(
    manifest: Manifest,
    *,
    only: Iterable[str] | None = None,
    dry_run: bool = False,
    api=None,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff: float = 1.0,
    progress: bool | None = None,
    on_result: Callable[[RepoResult], None] | None = None,
    hasher: Hasher = hash_file,
    prune: bool = False,
) -> list[RepoResult]:
    """Publish the release's repos (see the module docstring); ``dry_run``: plan only, write nothing.

    ``prune``: also delete remote files that no release of ours published (by default they are
    kept, and listed in each plan's ``kept``).

    ``api``: an ``HfApi`` (default: one from the environment). ``attempts``/``backoff``: the commit
    retry policy. ``progress``: the client's upload bars (None: when stderr is a terminal).
    ``on_result`` is called with each repo's result as it is done. ``hasher``: see ``prepare``.

    Raises:
        UsageError: no token for a real push; an unknown ``only`` name; the public-repo guard; a
            tag that exists elsewhere (checked on every repo before anything is written).
        InputError: a missing folder, file or GGUF type; an invalid card.
        PushError: a repo failed; ``results`` says which repos were done and which were not.
    """
    session = _Session(_api(api), attempts=attempts, backoff=backoff)
    if not dry_run and not session.token:
        raise UsageError("no Hugging Face token: a push needs one with write access",
                         hint="set HF_TOKEN, or log in with 'hf auth login'")
    try:
        prepared = _prepare_all(manifest, only, hasher)
        if not dry_run:
            check_write_access(session, [p.target for p in prepared])  # pre-flight: before the first request that reads a repo
        with progress_bars(progress):
            plans = [_plan(session, p, manifest.tag, prune) for p in prepared]
            if dry_run:
                results = [RepoResult(p, "planned", commit=p.head, added=len(p.add), changed=len(p.change),
                                      deleted=len(p.delete), bytes_uploaded=p.upload_bytes,
                                      error=p.tag_conflict) for p in plans]
                for r in results:
                    if on_result:
                        on_result(r)
                return results
            conflicts = [p for p in plans if p.tag_conflict]
            if conflicts:
                lines = "; ".join(f"{p.repo_id}: {p.tag_conflict}" for p in conflicts)
                raise UsageError(f"the release {manifest.tag} is already published differently: {lines}",
                                 path=manifest.path, hint="bump the version in the manifest: a published tag is never moved")
            check_cards_on_hub(session, plans)
            results: list[RepoResult] = []
            for i, (prep, plan) in enumerate(zip(prepared, plans)):
                try:
                    result = _publish(session, prep, plan, manifest.tag, prune)
                except PushError as exc:
                    failed = RepoResult(plan, "failed", error=exc.message)
                    rest = [RepoResult(p, "not started") for p in plans[i + 1:]]
                    done = ", ".join(r.repo_id for r in results) or "none"
                    exc.message = session.redact(f"{exc.message} (published: {done}; not published: "
                                                 f"{', '.join(r.repo_id for r in [failed, *rest])})")
                    exc.args = (exc.message,)
                    exc.results = [*results, failed, *rest]
                    raise
                results.append(result)
                if on_result:
                    on_result(result)
            return results
    except AptoError as exc:
        _redact_error(exc, session)
        raise


def _redact_error(exc: AptoError, session: _Session) -> None:
    exc.message = session.redact(exc.message)
    exc.args = (exc.message,)
    if exc.hint:
        exc.hint = session.redact(exc.hint)


# ---------------------------------------------------------------------------------------------
# Reporting


def summary_line(result: RepoResult) -> str:
    """One plain line for a repo's result."""
    plan = result.plan
    head = f"{plan.target.role} {plan.repo_id}"
    counts = f"{result.added} added, {result.changed} changed, {result.deleted} deleted"
    if result.status == "committed":
        text = f"{head}: committed {result.commit[:12]} ({counts}, {human_size(result.bytes_uploaded)} uploaded)"
    elif result.status == "unchanged":
        text = f"{head}: unchanged at {(result.commit or '?')[:12]}"
    elif result.status == "planned":
        where = f"against {plan.head[:12]}" if plan.exists else "new repo"
        text = (f"{head} ({where}): would commit {counts} ({human_size(result.bytes_uploaded)} to upload)"
                if plan.changed else f"{head}: unchanged at {(plan.head or '?')[:12]}")
        tag = "new" if plan.tag_commit is None else "CONFLICT" if plan.tag_conflict else "kept"
        return f"{text}; tag {plan.tag}: {tag}" + (f" ({plan.tag_conflict})" if plan.tag_conflict else "") + kept_text(plan)
    else:
        return f"{head}: {result.status}" + (f": {result.error}" if result.error else "")
    return text + (f", tag {plan.tag} {result.tag_action}" if result.tag_action else "") + kept_text(plan)


def kept_text(plan: RepoPlan) -> str:
    """``; kept: NOTICE.md, not ours`` for the remote files the push leaves in place (or nothing)."""
    return "".join(f"; kept: {f.path}, {f.reason}" for f in plan.kept)


def plan_lines(plan: RepoPlan) -> list[str]:
    """The dry run's file list of one repo: action, path, size."""
    rows = [(action, f) for action, files in (("add", plan.add), ("change", plan.change), ("delete", plan.delete),
                                                ("keep", plan.keep)) for f in files]
    rows += [("kept", f) for f in plan.kept]
    width = max((len(f.path) for _, f in rows), default=0)
    return [f"  {action:<7} {f.path:<{width}}  {human_size(f.size)}" + (f"  ({f.reason}; --prune deletes it)" if f.reason else "")
            for action, f in rows]


def step_summary(results: Sequence[RepoResult], *, tag: str, error: str | None = None, dry_run: bool = False) -> str:
    """The Markdown summary for ``$GITHUB_STEP_SUMMARY``."""
    title = f"### apto-release push {tag}" + (" (dry run)" if dry_run else "")
    lines = [title, "", "| Repo | Status | Commit | Added | Changed | Deleted | Uploaded | Tag |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for r in results:
        commit = f"`{r.commit[:12]}`" if r.commit else ""
        tag_cell = f"{r.plan.tag} ({r.tag_action})" if r.tag_action else ""
        lines.append(f"| `{r.repo_id}` ({r.plan.target.role}) | {r.status} | {commit} | {r.added} | {r.changed} | "
                     f"{r.deleted} | {human_size(r.bytes_uploaded)} | {tag_cell} |")
    kept = [f"- `{r.repo_id}`: kept `{f.path}` ({f.reason})" for r in results for f in r.plan.kept]
    if kept:
        lines += ["", "Remote files left in place (not published by a release of ours; `--prune` deletes them):", *kept]
    if error:
        lines += ["", f"**Push failed:** {error.replace(chr(10), ' ')}"]
    return "\n".join(lines) + "\n\n"


def append_step_summary(text: str, path: str | os.PathLike | None = None) -> bool:
    """Append to ``$GITHUB_STEP_SUMMARY`` (or ``path``); False when there is none."""
    path = path or os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return False
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
    return True

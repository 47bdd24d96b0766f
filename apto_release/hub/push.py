"""``apto-release push``: publish a release's folders to their Hub repos, one atomic commit each.

Local checks first, then a read-only plan per repo (add, change, keep, delete: a remote file is
deleted only when a release of ours published it), then the pre-flight on every repo (write
access, tags, cards), and only then one commit per repo, verified and tagged. How and why:
docs/push.md. The repos and their guards are in ``hub.targets``; the client, its retries and the
token's redaction in ``hub.client``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apto_release.cards.check import check_card_text
from apto_release.errors import AptoError, InputError, UsageError
from apto_release.hub.client import (
    DEFAULT_ATTEMPTS,
    RETRYABLE,
    PushError,
    Session,
    check_write_access,
    http_status,
    make_api,
    progress_bars,
    transport_errors,
)
from apto_release.hub.targets import (
    Target,
    check_details_folder,
    check_model_folder,
    check_public_dataset,
    read_build_marker,
    targets,
)
from apto_release.io import hash_file, human_size

if TYPE_CHECKING:  # the release hands the push its manifest; the hub never imports the release
    from apto_release.release.manifest import Manifest

#: Folder names never uploaded, besides hidden ones.
CACHE_DIRS = frozenset({"__pycache__"})
README = "README.md"
#: Our commits list the release's files in their description, after this line (one
#: ``<sha256> <git blob sha1 or -> <path>`` a line): the Hub's history then says which files a
#: release of ours published, on any machine, with or without the state file.
FILES_HEADER = "apto-release files (sha256, git blob sha1, path):"
#: The Hub's limit on one file (https://huggingface.co/docs/hub/storage-limits: 50 GB a file, 20 GB recommended).
MAX_FILE_SIZE = 50 * 1000**3


# ---------------------------------------------------------------------------------------------
# Local files


@dataclass(frozen=True)
class LocalFile:
    path: str  # in the repo, with '/'
    local: Path
    size: int
    sha256: str
    git_sha1: str | None  # None at io.GIT_SHA1_LIMIT bytes and above


def _hidden_or_cache(name: str) -> bool:
    return name.startswith(".") or name in CACHE_DIRS


def folder_files(folder: Path) -> list[Path]:
    """Files of ``folder`` to upload, sorted: everything but hidden files and folders and caches.

    Only regular files, and symlinks to regular files inside the folder (``hub.filerules``):
    anything else raises ``InputError`` naming it; nothing is opened.
    """
    from apto_release.hub.filerules import publishable_files

    return publishable_files(folder, lambda name: _hidden_or_cache(name) or name.endswith((".pyc", ".pyo")))


def _gguf_files(target: Target) -> list[Path]:
    from apto_release.gguf.output import companion_files, find_output

    files = []
    for type_ in target.gguf_types:
        files += find_output(target.folder, f"{target.model_name}-{type_}", type_)
    return [target.folder / README, *files, *companion_files(target.folder, target.model_name)]




@dataclass
class Prepared:
    """A target with its local files checked and hashed."""

    target: Target
    files: dict[str, LocalFile]
    rows: int | None = None


Hasher = Callable[[Path], Any]  # a file -> an object with size, sha256 and git_sha1 (``io.hash_file``)


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
    check_model_folder(target, paths)
    rows = None
    if target.card_kind == "details":  # its own guard: the build marker is for record-built folders
        rows = check_details_folder(target, paths)
    elif target.repo_type == "dataset":
        rows = read_build_marker(target, paths)[1] if target.private else check_public_dataset(target, paths)
    # a dataset card's size_categories is checked against the rows of its Parquet files
    problems = check_card_text(card.read_text("utf-8"), target.card_kind, rows=rows if target.card_kind == "dataset" else None)
    if problems:
        raise InputError(f"the {target.role} card is not valid: " + "; ".join(problems), path=card)
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
    def visibility_conflict(self) -> str | None:
        """Why the push refuses this repo as it is on the Hub: a details repo that exists and is public."""
        if self.target.card_kind == "details" and self.exists and self.remote_private is False:
            return (f"the details repo {self.repo_id} is public on the Hub; its per-item answers are never published "
                    "into a public repo")
        return None

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


def _remote_files(session: Session, target: Target, head: str) -> dict[str, Any]:
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


def _published_by_us(session: Session, target: Target, head: str) -> set[tuple[str, str]]:
    """(path, content id) of every file a release of ours published on the branch up to ``head``,
    read from our commits' descriptions (``list_repo_commits``)."""
    api = session.api
    commits = session.call("reading the history", target.repo_id, lambda: api.list_repo_commits(
        target.repo_id, repo_type=target.repo_type, revision=head))
    ours: set[tuple[str, str]] = set()
    for commit in commits:
        ours |= parse_files_description(commit.message)
    return ours


def _plan(session: Session, prepared: Prepared, tag: str, prune: bool = False) -> RepoPlan:
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


def check_cards_on_hub(session: Session, plans: Sequence[RepoPlan], sessions: Mapping[Target, Session] | None = None) -> None:
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
        token = (sessions or {}).get(plan.target, session).token

        def post(url=url, body=body, token=token):
            response = get_session().post(url, json=body, headers={**build_hf_headers(token=token),
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
    session = Session(make_api(api), attempts=DEFAULT_ATTEMPTS, backoff=1.0)
    prepared = _prepare_all(manifest, only, hasher)
    return [_plan(session, p, manifest.tag, prune) for p in prepared]


# ---------------------------------------------------------------------------------------------
# Pushing


def _operations(plan: RepoPlan) -> list:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    ops: list = [CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=str(plan.local[f.path].local))
                 for f in plan.add + plan.change]
    ops += [CommitOperationDelete(path_in_repo=f.path) for f in plan.delete]
    return ops


def _ensure_repo(session: Session, plan: RepoPlan) -> None:
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


def _verify(session: Session, plan: RepoPlan, commit: str) -> None:
    remote = _remote_files(session, plan.target, commit)
    problems = [p for p, f in plan.local.items() if p not in remote or not _same(f, remote[p])]
    kept = {f.path for f in plan.kept}
    problems += [f"{p} (not in the folder)" for p in remote if p not in plan.local and p not in kept]
    if problems:
        raise PushError(f"after commit {commit[:12]} the remote files differ from the local ones: {', '.join(sorted(problems)[:5])}",
                        repo=plan.repo_id)


def _tag(session: Session, plan: RepoPlan, commit: str) -> str:
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
        if http_status(exc) != 409:
            raise PushError(f"creating the tag failed: {session.describe(exc)}", repo=target.repo_id) from None
    # 409: it exists (an earlier try went through, or someone else made it): where does it point?
    refs = session.call("reading the tags", target.repo_id, lambda: api.list_repo_refs(target.repo_id, repo_type=target.repo_type))
    now = next((t.target_commit for t in refs.tags if t.name == tag), None)
    if now == commit:
        return "kept"
    raise PushError(f"tag {tag} already points at commit {(now or '?')[:12]}, not at the release's {commit[:12]}",
                    repo=target.repo_id, hint=hint)


def _publish(session: Session, prepared: Prepared, plan: RepoPlan, version_tag: str, prune: bool = False) -> RepoResult:
    """Create/configure the repo, commit (retrying safely), verify, tag."""
    from huggingface_hub.errors import HfHubHTTPError

    api, target = session.api, prepared.target
    _ensure_repo(session, plan)
    if not plan.exists:
        plan = _plan(session, prepared, version_tag, prune)
    attempted: RepoPlan | None = None  # the plan of the last commit sent (it may have gone through unseen)
    commit = None
    attempt = 0
    renewed = False
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
            status = http_status(exc)
            # An exchanged token lasts an hour: one that ran out during a long upload is renewed, once.
            if status == 401 and not renewed and session.refresh(force=True):
                renewed = True
            elif status not in RETRYABLE or attempt >= session.attempts:
                tries = f" (after {attempt} attempts)" if attempt > 1 else ""
                raise PushError(f"the commit failed{tries}: {session.describe(exc)}", repo=target.repo_id) from None
            else:
                session.sleep(0 if status == 412 else session.wait(exc, attempt))
        except (*transport_errors(), ValueError) as exc:  # connection errors; the client's own checks (e.g. the card)
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
    trusted_publishing: bool | None = None,
) -> list[RepoResult]:
    """Publish the release's repos (see the module docstring); ``dry_run``: plan only, write nothing.

    ``trusted_publishing``: each repo gets its own token from an exchange of the CI's OIDC id token
    (``hub.tokens``); False: the one token of ``api`` / HF_TOKEN / the login; None: Trusted
    Publishing when an id token is at hand and no token is given.

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
    from apto_release.hub.tokens import TrustedPublishing, target_sessions, use_trusted_publishing

    session = Session(make_api(api), attempts=attempts, backoff=backoff)
    trusted = TrustedPublishing(session) if use_trusted_publishing(trusted_publishing, session.api) else None
    if not dry_run and not session.token and trusted is None:
        raise UsageError("no Hugging Face token: a push needs one with write access",
                         hint="set HF_TOKEN, log in with 'hf auth login', or use Trusted Publishing (--trusted-publishing)")
    try:
        prepared = _prepare_all(manifest, only, hasher)
        # Pre-flight, before the first request that reads a repo: every repo's token (Trusted
        # Publishing: its exchange; one scoped token: its repo), then a user token's write access.
        sessions = target_sessions(session, trusted, [p.target for p in prepared], check=not dry_run)
        if not dry_run and trusted is None and not session.scope:
            check_write_access(session, [p.target for p in prepared])
        with progress_bars(progress):
            plans = [_plan(sessions[p.target], p, manifest.tag, prune) for p in prepared]
            if dry_run:
                results = [RepoResult(p, "planned", commit=p.head, added=len(p.add), changed=len(p.change),
                                      deleted=len(p.delete), bytes_uploaded=p.upload_bytes,
                                      error=p.visibility_conflict or p.tag_conflict) for p in plans]
                for r in results:
                    if on_result:
                        on_result(r)
                return results
            public = [p.visibility_conflict for p in plans if p.visibility_conflict]
            if public:
                raise UsageError("; ".join(public), hint="make the repo private on the Hub (or name another details_repo), then push again")
            conflicts = [p for p in plans if p.tag_conflict]
            if conflicts:
                lines = "; ".join(f"{p.repo_id}: {p.tag_conflict}" for p in conflicts)
                raise UsageError(f"the release {manifest.tag} is already published differently: {lines}",
                                 path=manifest.path, hint="bump the version in the manifest: a published tag is never moved")
            check_cards_on_hub(session, plans, sessions)
            results: list[RepoResult] = []
            for i, (prep, plan) in enumerate(zip(prepared, plans)):
                try:
                    sessions[prep.target].refresh()  # Trusted Publishing: a fresh token when the repo's is old
                    result = _publish(sessions[prep.target], prep, plan, manifest.tag, prune)
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
        session.redact_error(exc)
        raise


# ---------------------------------------------------------------------------------------------
# A result in one line (the release's stage summary, the CLI's line per repo)


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
        refused = f"; REFUSED: {plan.visibility_conflict}" if plan.visibility_conflict else ""
        return f"{text}; tag {plan.tag}: {tag}" + (f" ({plan.tag_conflict})" if plan.tag_conflict else "") + refused + kept_text(plan)
    else:
        return f"{head}: {result.status}" + (f": {result.error}" if result.error else "")
    return text + (f", tag {plan.tag} {result.tag_action}" if result.tag_action else "") + kept_text(plan)


def kept_text(plan: RepoPlan) -> str:
    """``; kept: NOTICE.md, not ours`` for the remote files the push leaves in place (or nothing)."""
    return "".join(f"; kept: {f.path}, {f.reason}" for f in plan.kept)

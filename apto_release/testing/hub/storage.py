"""LocalHub's storage: content-addressed blobs, repos with their commits (full tree snapshots),
branches and tags in ``<root>/state.json``, and what the token may write."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import secrets
import threading
from datetime import datetime, timezone
from pathlib import Path

from apto_release.testing.hub.protocol import _HubError

_HEX40 = re.compile(r"[0-9a-f]{40}")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


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


class _Storage:
    """Blobs, trees, commits and refs; the permission checks. A base of ``LocalHub``, whose
    ``__init__`` sets the state used here (``root``, ``_repos``, ``_lock``, the token's roles)."""

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

    def _scoped_whoami(self, scope) -> dict:
        # Not documented for exchanged tokens: shown as a fine-grained token on its one repo.
        permissions = ["repo.content.read"] + ([] if scope.read_only else ["repo.write"])
        entry = {"entity": {"type": scope.repo_type, "name": scope.repo_id}, "permissions": permissions}
        return {"type": "user", "name": "[OIDC]", "orgs": [], "auth": {"type": "access_token", "accessToken": {
            "displayName": "trusted publisher", "role": "fineGrained",
            "fineGrained": {"canReadGatedRepos": False, "global": [], "scoped": [entry]}}}}

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

    def _repo(self, repo_type: str, repo_id: str, authed, *, write: bool = False) -> dict:
        """The repo, for a request whose token is ``authed`` (the hub's: True; an exchanged one: its
        ``Scope``; none: False); 401/403/404 as the Hub answers when the token may not read or write it."""
        repo = self._repos.get(f"{repo_type}:{repo_id}")
        scope = authed if hasattr(authed, "covers") else None
        if repo is None or (repo["private"] and (not authed or scope and not scope.covers(repo_type, repo_id))):
            raise _HubError(401 if not authed else 404, "Repository not found", "RepoNotFound")
        if write and not authed:
            raise _HubError(401, "You must be authenticated to write to this repository.")
        if write and scope is not None:
            if scope.read_only or not scope.covers(repo_type, repo_id):
                why = "read-only" if scope.covers(repo_type, repo_id) else f"scoped to {scope.resource}"
                raise _HubError(403, f"You don't have the rights to write to {repo_id}: the token is {why}")
        elif write and not self._can_write(repo_type, repo_id):
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

    def _gitattributes_lfs(self, tree: dict, path: str) -> bool:
        entry = tree.get(".gitattributes")
        if entry is None:
            return False
        for line in self._read_blob(entry["sha256"]).decode("utf-8", "replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and "filter=lfs" in parts[1:] and _glob_match(path, parts[0]):
                return True
        return False

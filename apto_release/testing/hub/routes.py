"""The part of the Hub's HTTP API that LocalHub answers: routing, repos and settings, ``/preupload``,
the Git LFS batch protocol, NDJSON commits, trees, refs and ``/resolve`` downloads, with the JSON
shapes the Hub answers with (docs/local-hub.md says what is and is not implemented)."""

from __future__ import annotations

import base64
import codecs
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

from apto_release.testing.hub.cards import _front_matter, validate_card_yaml
from apto_release.testing.hub.oidc import ACTIONS_PATH, Scope
from apto_release.testing.hub.protocol import _Body, _HubError, _json, _Response
from apto_release.testing.hub.storage import _glob_match, _lfs_pointer, _now, _Storage

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

_SHA256 = re.compile(r"[0-9a-f]{64}")


def _is_text(sample: bytes) -> bool:
    """Whether a sample (possibly cut in the middle of a character) is UTF-8 text without NUL bytes."""
    if b"\0" in sample:
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
    except UnicodeDecodeError:
        return False
    return True


class _Routes(_Storage):
    """The Hub's endpoints, on top of the storage. A base of ``LocalHub`` (which gives ``url``)."""

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.url}/{URL_PREFIXES[repo_type]}{repo_id}"

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
        if parts == ["oauth", "token"] and method == "POST":
            return self._token_exchange(body, headers)
        if raw_path == ACTIONS_PATH and method == "GET":
            return self._actions_id_token(params, headers)
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
            if isinstance(authed, Scope):
                return _json(self._scoped_whoami(authed))
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
        if isinstance(authed, Scope):  # its repo exists already (the exchange needs it): nothing to create
            raise _HubError(403, f"You don't have the rights to create a repository: the token is scoped to {authed.resource}")
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
        # The Hub attributes a Trusted Publisher's commits to a synthetic "[OIDC]" user.
        author = "[OIDC]" if isinstance(authed, Scope) else self.user
        oid = self._new_commit(repo, head, tree, header.get("summary") or "", header.get("description") or "", author)
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

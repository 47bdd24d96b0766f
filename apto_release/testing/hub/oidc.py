"""LocalHub's Trusted Publishing: OIDC id tokens issued for tests (GitHub Actions' claims), each
repo's trusted publishers, the RFC 8693 token exchange at ``POST /oauth/token`` and the one-hour
tokens it gives, each scoped to one repo; also the Actions runtime's id-token request, so that the
client mints its id token as on a runner (docs/local-hub.md, "Trusted Publishing")."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from apto_release.testing.hub.protocol import _Body, _HubError, _json

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
SCOPED_LIFETIME = 3600  # seconds: the Hub's exchanged tokens live one hour
ID_TOKEN_LIFETIME = 300  # seconds: GitHub's id tokens are short-lived too
#: Where the Actions runtime answers id-token requests (ACTIONS_ID_TOKEN_REQUEST_URL points here).
ACTIONS_PATH = "/_actions/id-token"
#: The repo types a resource may name (the Hub also takes spaces/ and kernels/, which LocalHub lacks).
RESOURCE_PREFIXES = {"datasets": "dataset"}


@dataclass(frozen=True)
class Scope:
    """What an exchanged token may do: read and (unless ``read_only``) write one repo, until ``expires_at``."""

    repo_type: str
    repo_id: str
    read_only: bool
    expires_at: float

    @property
    def resource(self) -> str:
        return ("datasets/" if self.repo_type == "dataset" else "") + self.repo_id

    def covers(self, repo_type: str, repo_id: str) -> bool:
        return (repo_type, repo_id) == (self.repo_type, self.repo_id)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_resource(resource: Any) -> tuple[str, str]:
    """(repo type, repo id) of an exchange's ``resource``; 400 ``invalid_request`` otherwise."""
    parts = resource.split("/") if isinstance(resource, str) else []
    repo_type = RESOURCE_PREFIXES.get(parts[0], "") if len(parts) == 3 else "model" if len(parts) == 2 else ""
    if not repo_type or not all(parts):
        raise _oauth_error("invalid_request", f"Invalid resource: {resource!r} (namespace/name or datasets/namespace/name; "
                                              "LocalHub has no user-scoped tokens)")
    return repo_type, "/".join(parts[-2:])


def _oauth_error(error: str, description: str) -> _HubError:
    # The Hub's token endpoint answers 400 with an OAuth body ({"error", "error_description"}).
    return _HubError(400, description, error=error, error_description=description)


class _TrustedPublishing:
    """The exchange's state and endpoints. A base of ``LocalHub``, whose ``__init__`` sets
    ``_secret``, ``_publishers``, ``_scoped`` and ``actions_request_token``."""

    def issue_id_token(self, audience: str | None = None, *, lifetime: int = ID_TOKEN_LIFETIME, **claims: Any) -> str:
        """An OIDC id token as GitHub Actions mints it (its claims; ``claims`` override them), with
        ``aud`` this hub's URL (the client's default audience is its endpoint). Signed with the
        hub's key (HS256; GitHub signs RS256 with keys it publishes)."""
        now = int(time.time())
        repository = claims.get("repository", "apto-org/apto-release")
        payload = {
            "iss": GITHUB_ISSUER, "aud": audience or self.url, "iat": now, "nbf": now, "exp": now + lifetime,
            "jti": secrets.token_hex(8), "sub": f"repo:{repository}:environment:huggingface",
            "repository": repository, "repository_owner": repository.split("/")[0], "ref": "refs/tags/v1.0.0",
            "ref_type": "tag", "environment": "huggingface", "workflow": "publish", "event_name": "push",
            "workflow_ref": f"{repository}/.github/workflows/publish.yml@refs/tags/v1.0.0", **claims,
        }
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + _b64(json.dumps(payload).encode())
        return head + "." + _b64(hmac.new(self._secret, head.encode(), hashlib.sha256).digest())

    def add_trusted_publisher(self, repo_id: str, repo_type: str = "model", *, read_only: bool = False, **claims: str) -> None:
        """Trust id tokens whose claims equal ``claims`` (all of them, exactly, as the Hub matches
        them) for ``repo_id``: the repo's Settings -> Trusted Publishers on the Hub. ``read_only``:
        the token exchanged for it only reads."""
        if not claims:
            raise ValueError("a trusted publisher names at least one claim (e.g. repository='org/repo')")
        with self._lock:
            self._publishers.setdefault((repo_type, repo_id), []).append((dict(claims), read_only))

    def _verified_claims(self, token: Any) -> dict | None:
        """The claims of an id token this hub issued, still valid and meant for it; None otherwise."""
        parts = token.split(".") if isinstance(token, str) else []
        if len(parts) != 3:
            return None
        expected = hmac.new(self._secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(_unb64(parts[2]), expected):
                return None
            claims = json.loads(_unb64(parts[1]))
        except ValueError:
            return None
        now = time.time()
        if claims.get("aud") != self.url or not claims.get("nbf", 0) - 60 <= now < claims.get("exp", 0):
            return None
        return claims

    def _token_exchange(self, body: _Body, headers: Any) -> Any:
        """``POST /oauth/token``: an id token for a token scoped to the ``resource`` repo."""
        if "json" in (headers.get("Content-Type") or ""):
            form = body.json() or {}
        else:  # RFC 8693's own encoding
            form = {k: v[0] for k, v in parse_qs(body.data().decode(), keep_blank_values=True).items()}
        if form.get("grant_type") != TOKEN_EXCHANGE or form.get("subject_token_type") != ID_TOKEN_TYPE:
            raise _oauth_error("invalid_request", "Unsupported grant_type or subject_token_type")
        if not form.get("subject_token"):
            raise _oauth_error("invalid_request", "Missing subject_token")
        repo_type, repo_id = parse_resource(form.get("resource"))
        claims = self._verified_claims(form["subject_token"])
        with self._lock:
            publishers = self._publishers.get((repo_type, repo_id), []) if f"{repo_type}:{repo_id}" in self._repos else []
            match = next((ro for want, ro in publishers if claims and all(claims.get(k) == v for k, v in want.items())), None)
            if claims is None or match is None:
                # As on the Hub, the description does not say which check failed.
                raise _oauth_error("invalid_grant", "The token exchange was refused")
            token = "hf_jwt_" + _b64(secrets.token_bytes(24))
            self._scoped[token] = Scope(repo_type, repo_id, match, time.time() + SCOPED_LIFETIME)
        return _json({"access_token": token, "token_type": "bearer", "expires_in": SCOPED_LIFETIME,
                      "issued_token_type": ACCESS_TOKEN_TYPE})

    def expire_exchanged_tokens(self) -> None:
        """Every token the exchange gave runs out now (an upload that outlived its token's hour)."""
        with self._lock:
            self._scoped = {t: Scope(s.repo_type, s.repo_id, s.read_only, 0.0) for t, s in self._scoped.items()}

    def _scope_of(self, authorization: str) -> Scope | None:
        """The scope of an unexpired exchanged token in an ``Authorization`` header (None: not one)."""
        token = authorization[len("Bearer "):] if authorization.startswith("Bearer ") else ""
        with self._lock:
            scope = self._scoped.get(token)
        return scope if scope is not None and time.time() < scope.expires_at else None

    def actions_env(self) -> dict[str, str]:
        """The variables GitHub sets in a job with ``permissions: id-token: write``, pointing at this
        hub's stand-in for the Actions runtime (its tokens carry the default claims)."""
        return {"GITHUB_ACTIONS": "true", "ACTIONS_ID_TOKEN_REQUEST_URL": f"{self.url}{ACTIONS_PATH}?api-version=2.0",
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN": self.actions_request_token}

    def _actions_id_token(self, params: dict, headers: Any) -> Any:
        """``GET ACTIONS_ID_TOKEN_REQUEST_URL&audience=...`` with the request token: ``{"value": <id token>}``."""
        if not hmac.compare_digest((headers.get("Authorization") or "").encode(),
                                   f"Bearer {self.actions_request_token}".encode()):
            raise _HubError(401, "Bad credentials")
        return _json({"value": self.issue_id_token(params.get("audience", [None])[0])})

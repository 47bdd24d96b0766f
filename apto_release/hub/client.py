"""Talking to the Hub: the client (``HfApi``) with retries on 429/5xx and connection errors
(``Retry-After`` honoured but capped), its upload bars, the token's write access, and the token
redacted from every message.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from apto_release.errors import AptoError, UsageError
from apto_release.retry import retry_delay
from apto_release.errors import redact as _redact

if TYPE_CHECKING:
    from apto_release.hub.push import RepoResult
    from apto_release.hub.targets import Target

RETRYABLE = frozenset({408, 412, 429, 500, 502, 503, 504})
RETRY_AFTER_CAP = 10.0  # seconds: a longer Retry-After is cut to this
DEFAULT_ATTEMPTS = 4
REDACTED = "hf_***"
#: What a Hugging Face token looks like (a user token; an exchanged ``hf_jwt_``/``hf_oauth_`` one;
#: a CI's OIDC id token, a JWT): the CLI's last line of defence redacts any such text.
TOKEN_SHAPE = re.compile(r"hf_(?:jwt|oauth)_[A-Za-z0-9._~+/=-]{8,}|hf_[A-Za-z0-9]{8,}"
                         r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")


class PushError(AptoError, RuntimeError):
    """A push failed. ``results`` says which repos were published and which were not."""

    def __init__(self, message: str, *, results: Sequence[RepoResult] = (), **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.results = list(results)


def redact(text: str, secrets: Iterable[str | None], *, token_shapes: bool = False) -> str:
    """``text`` with every secret (empty ones skipped) replaced by ``hf_***``; with ``token_shapes``
    also anything that looks like a token (``TOKEN_SHAPE``)."""
    return _redact(text, secrets, mask=REDACTED, shape=TOKEN_SHAPE if token_shapes else None)


class Session:
    """The api, the secrets to redact, and the retry policy; ``scope``: the one repo (its OIDC
    resource) that the token was exchanged for, when it was (None: a user token)."""

    def __init__(self, api, *, attempts: int, backoff: float, sleep: Callable[[float], None] = time.sleep) -> None:
        import os

        from huggingface_hub import get_token

        self.api = api
        self.token = api.token if isinstance(api.token, str) else (None if api.token is False else get_token())
        self.secrets = [s for s in {self.token, api.token if isinstance(api.token, str) else None, get_token(),
                                    os.environ.get("HF_OIDC_ID_TOKEN")} if s]
        # With HF_OIDC_RESOURCE the client itself exchanged the CI's id token for that one repo.
        self.scope = os.environ.get("HF_OIDC_RESOURCE") or None if not isinstance(api.token, str) else None
        self._renew: Callable[[bool], str] | None = None
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.sleep = sleep

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)

    def scoped(self, token: str, scope: str, renew: Callable[[bool], str] | None = None) -> Session:
        """A session on the same endpoint whose requests carry ``token``, exchanged for ``scope``
        (it shares this session's secrets and retry policy); ``renew(force)``: the repo's token
        again, a new one when the old one is old (or ``force``)."""
        from huggingface_hub import HfApi

        api = self.api
        child = Session(HfApi(endpoint=api.endpoint, token=token, library_name=api.library_name,
                              library_version=api.library_version, user_agent=api.user_agent, headers=api.headers),
                        attempts=self.attempts, backoff=self.backoff, sleep=self.sleep)
        child.secrets, child.scope, child._renew = self.secrets, scope, renew
        if token not in self.secrets:
            self.secrets.append(token)
        return child

    def refresh(self, *, force: bool = False) -> bool:
        """Trusted Publishing: take a new token for the repo when this one is old (or ``force``: it
        was refused); True when the token changed."""
        if self._renew is None:
            return False
        token = self._renew(force)
        if token == self.token:
            return False
        self.api.token = self.token = token
        if token not in self.secrets:
            self.secrets.append(token)
        return True

    def redact_error(self, exc: AptoError) -> None:
        """Take the token out of the error's message and hint."""
        exc.message = self.redact(exc.message)
        exc.args = (exc.message,)
        if exc.hint:
            exc.hint = self.redact(exc.hint)

    def describe(self, exc: BaseException) -> str:
        """One line for an error from the client, without the token."""
        status = http_status(exc)
        text = " ".join(str(exc).split()) or type(exc).__name__
        if status is not None and str(status) not in text[:20]:
            text = f"HTTP {status}: {text}"
        if status in (403, 404) and self.scope:
            text += f" (the token was exchanged for {self.scope} only: Trusted Publishing scopes a token to one repo)"
        return self.redact(text)

    def wait(self, exc: BaseException, attempt: int) -> float:
        response = getattr(exc, "response", None)
        return retry_delay(getattr(response, "headers", None), attempt, backoff=self.backoff, cap=RETRY_AFTER_CAP)

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
                status = http_status(exc)
                if status in pass_status:
                    raise
                if status in RETRYABLE and status != 412 and attempt < self.attempts:
                    self.sleep(self.wait(exc, attempt))
                    continue
                raise PushError(f"{what} failed: {self.describe(exc)}", repo=repo_id) from None
            except transport_errors() as exc:  # connection errors
                if attempt < self.attempts:
                    self.sleep(self.wait(exc, attempt))
                    continue
                raise PushError(f"{what} failed: {self.describe(exc)}", repo=repo_id) from None
        raise AssertionError("unreachable")  # pragma: no cover


def transport_errors() -> tuple[type[BaseException], ...]:
    """Connection errors: OSError and the client's HTTP library's transport errors."""
    errors: list[type[BaseException]] = [OSError]
    for name in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            errors.append(__import__(name).TransportError)
    return tuple(errors)


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a client error (None: no response, e.g. a connection error)."""
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def make_api(api):
    """``api``, or an ``HfApi`` from the environment when it is None."""
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


def check_write_access(session: Session, selected: Sequence[Target]) -> None:
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

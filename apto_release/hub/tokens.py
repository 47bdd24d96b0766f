"""The push's tokens, repo by repo: one token for every repo (HF_TOKEN, the login, or the one that
``huggingface_hub`` exchanges itself for ``HF_OIDC_RESOURCE``), or Trusted Publishing: for each
repo its own one-hour token from an exchange of the CI's OIDC id token (``huggingface_hub``'s
exchange), scoped to that repo. docs/push.md, "Tokens", says when which is used.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from apto_release.errors import UsageError

if TYPE_CHECKING:
    from apto_release.hub.client import Session
    from apto_release.hub.targets import Target

#: Where the Hub's documentation says to add a repo's trusted publisher.
DOCS = "https://huggingface.co/docs/hub/trusted-publishers"
#: Seconds after which a repo's token is exchanged again before its repo is published: the Hub's
#: tokens last an hour and cannot be refreshed, and a release's uploads can take longer.
RENEW_AFTER = 300.0


def oidc_resource(target: Target) -> str:
    """What an exchange for ``target``'s repo names as its ``resource``: ``namespace/name`` for a
    model, ``datasets/namespace/name`` for a dataset (as the Hub and ``HF_OIDC_RESOURCE`` spell it)."""
    return ("datasets/" if target.repo_type == "dataset" else "") + target.repo_id


def settings_url(target: Target, endpoint: str) -> str:
    """The repo's settings page, where its trusted publishers are configured."""
    return f"{endpoint.rstrip('/')}/{'datasets/' if target.repo_type == 'dataset' else ''}{target.repo_id}/settings"


def id_token_at_hand(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether an OIDC id token can be had: ``HF_OIDC_ID_TOKEN``, or GitHub's request variables
    (set only in a job with ``permissions: id-token: write``)."""
    return bool(environ.get("HF_OIDC_ID_TOKEN")
                or environ.get("ACTIONS_ID_TOKEN_REQUEST_URL") and environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN"))


def use_trusted_publishing(choice: bool | None, api, environ: Mapping[str, str] = os.environ) -> bool:
    """``choice``, or when it is None (auto): an id token is at hand and no other token is given
    (no token on ``api``, no ``HF_TOKEN``, no ``HF_OIDC_RESOURCE``): the fallback stays the token."""
    if choice is not None:
        return choice
    given = isinstance(getattr(api, "token", None), str) or any(
        environ.get(k) for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"))
    return not given and id_token_at_hand(environ)


class TrustedPublishing:
    """One exchange per repo, through ``session`` (its retries; its secrets get every id token and
    every token, for redaction). The id token: ``HF_OIDC_ID_TOKEN``, or minted from the CI
    (GitHub Actions) for each exchange, with the endpoint as its audience, as the client does."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.endpoint = session.api.endpoint
        self._tokens: dict[str, tuple[str, float]] = {}  # resource -> (token, when it was exchanged)

    def _id_token(self) -> str:
        from huggingface_hub._oidc import get_oidc_token
        from huggingface_hub.errors import OIDCError

        given = os.environ.get("HF_OIDC_ID_TOKEN")
        if given:
            return given
        try:
            token = self.session.call("getting the CI's OIDC id token", "", lambda: get_oidc_token(audience=self.endpoint))
        except OIDCError as exc:
            raise UsageError(f"Trusted Publishing needs an OIDC id token: {' '.join(str(exc).split())}",
                             hint="in GitHub Actions give the push job 'permissions: id-token: write'; elsewhere set "
                                  "HF_OIDC_ID_TOKEN, or push with HF_TOKEN and --no-trusted-publishing") from None
        self.session.secrets.append(token)
        return token

    def token_for(self, target: Target, max_age: float | None = None) -> str:
        """A token scoped to ``target``'s repo: the one exchanged before unless it is older than
        ``max_age`` seconds (None: any age)."""
        from huggingface_hub._oidc import exchange_oidc_token
        from huggingface_hub.errors import HfHubHTTPError

        resource = oidc_resource(target)
        if resource in self._tokens:
            token, when = self._tokens[resource]
            if max_age is None or time.monotonic() - when <= max_age:
                return token
        subject = self._id_token()
        try:
            answer = self.session.call(
                "exchanging the OIDC id token", target.repo_id,
                lambda: exchange_oidc_token(subject_token=subject, resource=resource, endpoint=self.endpoint),
                pass_status=(400, 401, 403))
        except HfHubHTTPError as exc:
            why = self.session.describe(exc)
            raise UsageError(f"Trusted Publishing gave no token for the {target.role} repo {target.repo_id} "
                             f"(resource {resource}): the Hub refused the exchange ({why})", repo=target.repo_id,
                             hint=f"add a trusted publisher matching this workflow on {settings_url(target, self.endpoint)} "
                                  f"(Trusted Publishers; the repo must exist; {DOCS}), or push with HF_TOKEN "
                                  "and --no-trusted-publishing") from None
        token = answer["access_token"]
        self.session.secrets.append(token)
        self._tokens[resource] = (token, time.monotonic())
        return token

    def renewer(self, target: Target):
        """``renew(force)`` for ``target``'s session: its token again, or a new one when it is older
        than ``RENEW_AFTER`` (or ``force``)."""
        return lambda force: self.token_for(target, max_age=0.0 if force else RENEW_AFTER)


def check_scope(scope: str, selected: Sequence[Target]) -> None:
    """Pre-flight for a token scoped to one repo (``HF_OIDC_RESOURCE``): ``UsageError`` naming
    every repo of the push it cannot write, and the resource it was scoped to, before any request."""
    other = [t for t in selected if oidc_resource(t) != scope]
    if other:
        names = ", ".join(f"the {t.role} repo {t.repo_id}" for t in other)
        raise UsageError(f"the token cannot write {names}: it was exchanged for {scope} (HF_OIDC_RESOURCE), and a "
                         "Trusted Publishing token writes only the repo it was exchanged for",
                         hint="unset HF_OIDC_RESOURCE and push with --trusted-publishing (one exchange per repo), "
                              f"or push only {scope}")


def target_sessions(session: Session, trusted: TrustedPublishing | None, selected: Sequence[Target], *,
                    check: bool) -> dict[Target, Session]:
    """The session each target's requests go through: ``session`` itself, or (Trusted Publishing)
    one with the repo's own token. Every exchange happens here, before the first write; ``check``:
    a token scoped to one repo (``session.scope``) must be that of every target."""
    if trusted is None:
        if check and session.scope:
            check_scope(session.scope, selected)
        return {t: session for t in selected}
    return {t: session.scoped(trusted.token_for(t), oidc_resource(t), trusted.renewer(t)) for t in selected}

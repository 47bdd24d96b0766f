"""The Hub's repos as a release names them: the rules a user, organisation, repo or git ref name must meet."""

from __future__ import annotations

MAX_NAME_LENGTH = 96  # the Hub's limit on a user, organisation or repo name


def _show(value: str) -> str:
    """A value quoted for a one-line message: a newline or other control character shows escaped."""
    return repr(value)


def name_problem(name: str) -> str | None:
    """Why the Hub would refuse ``name`` as a user, organisation or repo name, or None.

    The rules of ``huggingface_hub.utils.validate_repo_id`` (which mirrors the Hub's own), each
    with its own reason, plus one of ours: a name starts with a letter or a digit.
    """
    if not name:
        return "the name is empty"
    bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "._-"))})
    if bad:
        return f"{', '.join(_show(c) for c in bad)} not allowed (only ASCII letters, digits, '.', '_' and '-')"
    if len(name) > MAX_NAME_LENGTH:
        return f"{len(name)} characters; the Hub allows {MAX_NAME_LENGTH}"
    if "--" in name or ".." in name:
        return "the Hub forbids '--' and '..' in a name"
    if name[0] in "-." or name[-1] in "-.":
        return "the Hub forbids a name that starts or ends with '-' or '.'"
    if not name[0].isalnum():
        return "a name starts with a letter or a digit"
    if name.endswith(".git"):
        return "the Hub forbids a name ending in '.git'"
    return None


def repo_id_problem(repo_id: str) -> str | None:
    """Why the Hub would refuse ``repo_id`` (``name`` or ``organisation/name``), or None.

    Our checks give the reason; huggingface_hub's own validator runs after them, so that a rule
    it adds in a later release is enforced here too (its message then reaches the user).
    """
    parts = repo_id.split("/")
    if len(parts) > 2:
        return "a repo id is organisation/name, with one '/'"
    for part in parts:
        problem = name_problem(part)
        if problem:
            return problem
    try:
        from huggingface_hub.errors import HFValidationError
        from huggingface_hub.utils import validate_repo_id
    except ModuleNotFoundError:  # pragma: no cover - huggingface_hub is a dependency
        return None
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        return " ".join(str(exc).split())
    return None


def git_ref_problem(ref: str) -> str | None:
    """Why ``ref`` (a full name, ``refs/tags/v1.0.0``) is not a valid git ref, or None.

    The rules of ``git check-ref-format`` (https://git-scm.com/docs/git-check-ref-format).
    """
    bad = sorted({c for c in ref if ord(c) < 0x20 or ord(c) == 0x7F or c in " ~^:?*[\\"})
    if bad:
        return f"{', '.join(_show(c) for c in bad)} not allowed in a git ref"
    if ".." in ref:
        return "'..' not allowed in a git ref"
    if "@{" in ref:
        return "'@{' not allowed in a git ref"
    if ref == "@":
        return "'@' alone is not a git ref"
    if ref.startswith("/") or ref.endswith("/") or "//" in ref:
        return "a git ref does not start or end with '/' or hold '//'"
    if ref.endswith("."):
        return "a git ref does not end with '.'"
    for component in ref.split("/"):
        if component.startswith("."):
            return f"a git ref component does not start with '.' ({_show(component)})"
        if component.endswith(".lock"):
            return f"a git ref component does not end with '.lock' ({_show(component)})"
    return None

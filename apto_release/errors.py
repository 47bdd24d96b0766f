"""Errors raised by the library, turned into one line and an exit code by ``cli.main``.

A bad *command* (a file that cannot be read, an impossible option) is an exception from this
module. A bad *record* is not: it is a finding, collected in a report (see ``dataset.findings``).

Each error carries where it happened (path, line, field, repo) and, where we know it, what to do
next. Like huggingface_hub's errors, each also inherits a standard type so callers that catch
``ValueError`` or ``OSError`` keep working.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path


def redact(text: str, secrets: Iterable[str | None], *, mask: str = "***", shape: re.Pattern[str] | None = None) -> str:
    """``text`` with every secret (empty ones skipped) replaced by ``mask``; with ``shape`` also
    anything that matches it (what a token looks like). The one redaction helper: the Hub's token
    (``hub.client``) and the engines' API keys (``evals.client``) both go through it."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, mask)
    return shape.sub(mask, text) if shape is not None else text


class AptoError(Exception):
    """Base class of every error that is the user's to fix (no traceback at the CLI)."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        repo: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.repo = repo
        self.hint = hint

    @property
    def location(self) -> str:
        """``file:line``, ``file``, ``repo`` or the empty string."""
        if self.path and self.line is not None:
            return f"{self.path}:{self.line}"
        return self.path or self.repo or ""

    def __str__(self) -> str:
        where = self.location
        text = f"{where}: {self.message}" if where else self.message
        if self.field and f"'{self.field}'" not in self.message:
            text += f" (field '{self.field}')"
        return text


class InputError(AptoError, ValueError):
    """An input file is missing, unreadable or not in the expected format."""

    exit_code = 2


class UsageError(AptoError, ValueError):
    """Options that cannot work together or values out of range."""

    exit_code = 2


class ValidationFailed(AptoError, ValueError):
    """A stage refused its input because validation found errors.

    ``report`` is the ``ValidationReport`` so the CLI can show the findings.
    """

    def __init__(self, message: str, *, report, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.report = report


class BuildError(AptoError, RuntimeError):
    """A stage's own check of its output failed: the output was not put in place."""

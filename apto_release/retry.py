"""Waiting between tries of a request: exponential backoff, the server's ``Retry-After`` honoured,
both capped. Shared by the Hub's client and the eval engines' client."""

from __future__ import annotations

import contextlib
from typing import Any


def retry_delay(headers: Any, attempt: int, *, backoff: float, cap: float) -> float:
    """Seconds to wait before try ``attempt + 1``: ``backoff`` doubled per try (``backoff`` after
    the first), replaced by the response's ``Retry-After`` (seconds) or ``retry-after-ms`` when it
    sends one, never below 0 nor above ``cap``. ``headers``: the response's headers, or None when
    there was no response (a connection error)."""
    delay = backoff * 2 ** (attempt - 1)
    if headers is not None:
        for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
            with contextlib.suppress(TypeError, ValueError):
                delay = float(headers.get(name)) / scale
    return max(0.0, min(delay, cap))

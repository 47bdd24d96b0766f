"""retry_delay: backoff doubles per try; a server's Retry-After (seconds) or retry-after-ms replaces it; the cap holds."""

from __future__ import annotations

import httpx2

from apto_release.retry import retry_delay


def test_backoff_doubles_and_is_capped_without_a_response():
    assert [retry_delay(None, n, backoff=0.5, cap=3.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]


def test_the_servers_wait_replaces_the_backoff_within_the_cap():
    delay = lambda **h: retry_delay(httpx2.Headers(h), 3, backoff=0.5, cap=10.0)  # noqa: E731
    assert delay(**{"Retry-After": "7"}) == 7.0  # any case: headers are case-insensitive
    assert delay(**{"retry-after-ms": "250"}) == 0.25
    assert delay(**{"retry-after-ms": "250", "retry-after": "4"}) == 4.0  # seconds win over milliseconds
    assert delay(**{"Retry-After": "120"}) == 10.0
    assert delay(**{"Retry-After": "-3"}) == 0.0
    assert delay(**{"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}) == 2.0  # a date is not read: the backoff stands

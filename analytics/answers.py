"""Analytics answers kept in the cache, never stale, each computed once however many ask.

An answer is cached under its team's write version, ``TapSequence.last_seq``, which the
transaction storing a tap moves; the version is read in the request, after the request's
``as_of`` is taken, so a tap stored before ``as_of`` has moved the version and the old
answer is never found again. An answer is also kept only until the first of its buckets
that had not ended when it was computed ends, since that bucket's ``partial`` flag then
changes.

When identical requests arrive together on a cold cache, one of them computes while the
others wait for its answer (a lock taken with the cache's atomic ``add``, shared by every
worker through Redis). A cache that fails is not an outage: the request computes its own
answer and the failure is logged.
"""

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.cache import cache

from analytics.models import TapSequence

log = logging.getLogger(__name__)

# Long enough for the slowest answer; a waiter stops waiting after it and computes.
COMPUTE_SECONDS = 10.0
WAIT_STEP_SECONDS = 0.004
KEEP_SECONDS = 3600


@dataclass(frozen=True)
class Answer:
    body: Any
    # The instant the body's partial flags stop being true; None: never.
    valid_until: datetime | None


def write_version(team_id: int) -> int:
    version = TapSequence.objects.filter(team_id=team_id).values_list("last_seq", flat=True)
    return next(iter(version), 0)


def answer_key(team_id: int, version: int, question: str) -> str:
    digest = hashlib.sha256(question.encode()).hexdigest()[:32]
    return f"answer:{team_id}:{version}:{digest}"


def _usable(entry: object, as_of: datetime) -> bool:
    return isinstance(entry, Answer) and (entry.valid_until is None or as_of < entry.valid_until)


class _Cache:
    """The default cache, skipped for ``RETRY_SECONDS`` after a failure so that a Redis
    outage costs one connection timeout per process, not several per request."""

    RETRY_SECONDS = 5.0
    down_until = 0.0

    @classmethod
    def call(cls, operation: Callable[..., Any], *args: Any, failed: Any = None) -> Any:
        if time.monotonic() < cls.down_until:
            return failed
        try:
            return operation(*args)
        except Exception as error:  # noqa: BLE001 -- any cache failure: answer without it
            cls.down_until = time.monotonic() + cls.RETRY_SECONDS
            log.warning("answer cache unavailable, computing answers without it: %r", error)
            return failed


def cached_answer(
    team_id: int, question: str, as_of: datetime, compute: Callable[[], Answer]
) -> Any:
    """The body ``compute`` gives for ``question`` (a canonical description of the query),
    from the cache when the team has stored nothing since it was computed."""
    key = answer_key(team_id, write_version(team_id), question)
    entry = _Cache.call(cache.get, key)
    if _usable(entry, as_of):
        return entry.body
    lock = f"{key}:computing"
    deadline = time.monotonic() + COMPUTE_SECONDS
    # A failing cache lets every request compute (``failed=True``: as if it held the lock).
    while not _Cache.call(cache.add, lock, 1, COMPUTE_SECONDS, failed=True):
        time.sleep(WAIT_STEP_SECONDS)
        entry = _Cache.call(cache.get, key)
        if _usable(entry, as_of):
            return entry.body
        if time.monotonic() > deadline:
            return compute().body
    try:
        # The computer before us may have finished between our first look and our lock.
        entry = _Cache.call(cache.get, key)
        if _usable(entry, as_of):
            return entry.body
        answer = compute()
        _Cache.call(cache.set, key, answer, KEEP_SECONDS)
    finally:
        _Cache.call(cache.delete, lock)
    return answer.body


def reset_local_state() -> None:
    """Forget a remembered cache failure (for tests)."""
    _Cache.down_until = 0.0

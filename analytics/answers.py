"""Analytics answers kept in the cache, never stale, each computed once however many ask.

An answer is cached under its team's write version, ``TapSequence.last_seq``, which the
transaction storing a tap moves; the version is read in the request, after the request's
``as_of`` is taken, so a tap stored before ``as_of`` has moved the version and the old
answer is never found again. An answer is also kept only until the first of its buckets
that had not ended when it was computed ends, since that bucket's ``partial`` flag then
changes.

When identical requests arrive together on a cold cache, one of them computes while the
others wait for its answer (a lock taken with an atomic add, ``SET NX`` in Redis, shared
by every worker). A cache that fails is not an outage: the request computes its own
answer and the failure is logged.
"""

import functools
import hashlib
import logging
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeGuard

import redis
from django.conf import settings
from django.core.cache import cache
from django.db import connection

from analytics.models import TapSequence
from analytics.throttling import AnswerFound, AnswerLookup
from taps_project import sql

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


@functools.cache
def _write_version_sql() -> str:
    return (
        f"SELECT {sql.column(TapSequence, 'last_seq')} FROM {sql.table(TapSequence)} "
        f"WHERE {sql.column(TapSequence, 'team')} = %s"
    )


def write_version(team_id: int) -> int:
    # Composed once and run on a plain cursor: it is asked on every analytics request.
    with connection.cursor() as cursor:
        cursor.execute(_write_version_sql(), [team_id])
        row = cursor.fetchone()
    return int(row[0]) if row else 0


# Moves whenever what is stored under a key changes shape, so that a deploy never reads
# what the previous release cached (2: rendered JSON instead of dictionaries; 3: the
# rendered JSON's class moved to analytics.rendered).
ANSWER_FORMAT = 3


def answer_key(team_id: int, version: int, question: str) -> str:
    digest = hashlib.sha256(question.encode()).hexdigest()[:32]
    return f"answer{ANSWER_FORMAT}:{team_id}:{version}:{digest}"


def _usable(entry: object, as_of: datetime) -> TypeGuard[Answer]:
    return isinstance(entry, Answer) and (entry.valid_until is None or as_of < entry.valid_until)


class _DjangoCache:
    """Answers in Django's default cache (the embedded mode's local memory)."""

    def get(self, key: str) -> object:
        return cache.get(key)

    def lock_or_get(self, key: str, lock: str) -> tuple[bool, object]:
        """Take the computing lock, and read the answer in case it has just arrived."""
        return cache.add(lock, 1, COMPUTE_SECONDS), cache.get(key)

    def put(self, key: str, lock: str, answer: Answer) -> None:
        cache.set(key, answer, KEEP_SECONDS)
        cache.delete(lock)

    def unlock(self, lock: str) -> None:
        cache.delete(lock)


class _RedisCache:
    """Answers in Redis through redis-py itself: django-redis cost about half a
    millisecond of CPU per call, and a cold answer takes five calls where pipelines
    make it three round trips."""

    PREFIX = "taps:"

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)

    def get(self, key: str) -> object:
        return _loaded(self.client.get(self.PREFIX + key))

    def lock_or_get(self, key: str, lock: str) -> tuple[bool, object]:
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.PREFIX + lock, 1, nx=True, ex=int(COMPUTE_SECONDS))
        pipe.get(self.PREFIX + key)
        locked, raw = pipe.execute()
        return bool(locked), _loaded(raw)

    def put(self, key: str, lock: str, answer: Answer) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.PREFIX + key, pickle.dumps(answer, pickle.HIGHEST_PROTOCOL), ex=KEEP_SECONDS)
        pipe.delete(self.PREFIX + lock)
        pipe.execute()

    def unlock(self, lock: str) -> None:
        self.client.delete(self.PREFIX + lock)


def _loaded(raw: object) -> object:
    # Redis is the service's own, as trusted as its database; django-redis pickles too.
    return pickle.loads(raw) if isinstance(raw, bytes) else None  # noqa: S301


@functools.cache
def _redis_cache(url: str) -> _RedisCache:
    return _RedisCache(url)


class _Cache:
    """The answer store, skipped for ``RETRY_SECONDS`` after a failure so that a Redis
    outage costs one connection timeout per process, not several per request."""

    RETRY_SECONDS = 5.0
    down_until = 0.0

    @staticmethod
    def store() -> _DjangoCache | _RedisCache:
        url = settings.REDIS_URL
        return _redis_cache(url) if url else _DjangoCache()

    @classmethod
    def lookup(cls, key: str, lock: str) -> AnswerLookup | None:
        """Where an answer and its lock are in Redis, if answers are kept there now."""
        store = cls.store()
        if not isinstance(store, _RedisCache) or time.monotonic() < cls.down_until:
            return None
        return AnswerLookup(store.PREFIX + key, store.PREFIX + lock, int(COMPUTE_SECONDS))

    @classmethod
    def call(cls, operation: str, *args: Any, failed: Any = None) -> Any:
        if time.monotonic() < cls.down_until:
            return failed
        try:
            return getattr(cls.store(), operation)(*args)
        except Exception as error:  # noqa: BLE001 -- any cache failure: answer without it
            cls.down_until = time.monotonic() + cls.RETRY_SECONDS
            log.warning("answer cache unavailable, computing answers without it: %r", error)
            return failed


def stored_answer_key(team_id: int, version: int, question: str) -> str | None:
    """The Redis key ``cached`` keeps this answer under, or None if answers are not kept
    in Redis (``analytics.shortcut`` replays the answer from there)."""
    store = _Cache.store()
    if not isinstance(store, _RedisCache):
        return None
    return store.PREFIX + answer_key(team_id, version, question)


FirstLook = Callable[[AnswerLookup | None], AnswerFound | None]


def cached(
    team_id: int,
    question: str,
    as_of: datetime,
    compute: Callable[[], Answer],
    *,
    version: int | None = None,
    first_look: FirstLook | None = None,
) -> Answer:
    """The answer ``compute`` gives for ``question`` (a canonical description of the query),
    from the cache when the team has stored nothing since it was computed.

    ``version`` is the team's write version read at or after ``as_of`` (requests have it
    from their key's lookup); without it, it is read here. ``first_look``, if given, is
    called before anything else with where the answer is in Redis (None if answers are
    not kept there) and returns what it found there (None: it did not look): the rate
    limit spends its slot and looks in one round trip, or raises.
    """
    if version is None:
        version = write_version(team_id)
    key = answer_key(team_id, version, question)
    lock = f"{key}:computing"
    found = first_look(_Cache.lookup(key, lock)) if first_look is not None else None
    if found is None:
        locked, entry = False, _Cache.call("get", key)
    else:
        locked, entry = found.locked, _loaded(found.stored)
    if _usable(entry, as_of):
        return entry
    deadline = time.monotonic() + COMPUTE_SECONDS
    while not locked:
        # A failing cache lets every request compute (as if it held the lock).
        locked, entry = _Cache.call("lock_or_get", key, lock, failed=(True, None))
        # The computer before us may have finished between our first look and our lock.
        if _usable(entry, as_of):
            if locked:
                _Cache.call("unlock", lock)
            return entry
        if locked:
            break
        if time.monotonic() > deadline:
            return compute()
        time.sleep(WAIT_STEP_SECONDS)
    try:
        answer = compute()
    except BaseException:
        _Cache.call("unlock", lock)
        raise
    _Cache.call("put", key, lock, answer)
    return answer


def reset_local_state() -> None:
    """Forget a remembered cache failure (for tests)."""
    _Cache.down_until = 0.0

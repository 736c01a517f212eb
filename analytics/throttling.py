"""Per-key rate limits over a rolling window (SPEC 7).

Each key's recent requests are a Redis sorted set scored by time. One Lua script drops
what left the window, counts what is left, and records the request only if there is
room, so concurrent requests from any number of workers can never let more through
(DRF's cache throttles read, then write, and do: encode/django-rest-framework#5181).
Without ``REDIS_URL``, or while Redis is unreachable, the same window is kept in the
process; an outage of the limiter is not an outage of the API.
"""

import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

import redis
from django.conf import settings
from rest_framework.exceptions import Throttled
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from teams.auth import TeamAuth

logger = logging.getLogger(__name__)

PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
# After a Redis failure, stay on the local window this long before trying Redis again,
# so an outage costs one connection timeout per worker every few seconds, not per request.
REDIS_RETRY_SECONDS = 5.0

# KEYS[1]: the key's sorted set. ARGV: now (ms), window (ms), limit, member, record (1/0).
# Returns {allowed, used, oldest score or -1}. With KEYS[2] and KEYS[3] (an answer and its
# computing lock, ARGV[6] the lock's seconds), a granted request also reads the answer and,
# if there is none, takes the lock, in the same round trip: returns
# {allowed, used, oldest, locked (1/0), answer (absent if none)}.
SLIDING_WINDOW = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
local allowed = 0
if ARGV[5] == '1' and used < limit then
    redis.call('ZADD', KEYS[1], now, ARGV[4])
    redis.call('PEXPIRE', KEYS[1], window)
    used = used + 1
    allowed = 1
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
oldest = oldest[2] or '-1'
if allowed == 1 and KEYS[2] then
    local answer = redis.call('GET', KEYS[2])
    if answer then
        return {allowed, used, oldest, 0, answer}
    end
    local locked = redis.call('SET', KEYS[3], 1, 'NX', 'EX', tonumber(ARGV[6]))
    return {allowed, used, oldest, locked and 1 or 0}
end
return {allowed, used, oldest}
"""

# KEYS[1]: the key's sorted set, KEYS[2]: a replay (``analytics.shortcut``), which starts
# with the millisecond it stops being valid (16 digits, 0: never) and the length (4 digits)
# and name of the cached answer it replays. ARGV: now (ms), window (ms), limit, member.
# Spends a slot only if the replay and its answer are there, the replay still valid, and
# the key under its limit: returns {used, oldest, replay, answer}. Otherwise it changes
# nothing and returns {}: the request goes on to Django, which spends (or refuses) the
# slot itself. The answer's name is read from the replay: this needs one Redis server,
# not a cluster, as the rate limit and the answer cache already do.
SPEND_IF_REPLAYED = """
local replay = redis.call('GET', KEYS[2])
if not replay then
    return {}
end
local now = tonumber(ARGV[1])
local valid_until = tonumber(string.sub(replay, 1, 16))
if valid_until > 0 and now >= valid_until then
    return {}
end
local answer = redis.call('GET', string.sub(replay, 21, 20 + tonumber(string.sub(replay, 17, 20))))
if not answer then
    return {}
end
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
if used >= tonumber(ARGV[3]) then
    return {}
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], window)
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {used + 1, oldest[2], replay, answer}
"""


def parse_rate(rate: str) -> tuple[int, int]:
    """``100/hour`` -> (100, 3600)."""
    count, _, period = rate.partition("/")
    return int(count), PERIODS[period]


@dataclass(frozen=True)
class Budget:
    """What a key may still do: ``reset`` is the seconds until a slot frees (0: none used)."""

    allowed: bool
    limit: int
    remaining: int
    reset: int
    window: int

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }


def _budget(
    allowed: bool, used: int, oldest_ms: float, now_ms: float, limit: int, window: int
) -> Budget:
    reset = 0 if oldest_ms < 0 else max(1, math.ceil((oldest_ms + window * 1000 - now_ms) / 1000))
    return Budget(allowed, limit, max(limit - used, 0), reset, window)


class LocalWindow:
    """The same rolling window, kept in this process (embedded mode, Redis outages)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hits: dict[str, deque[float]] = {}

    def take(self, name: str, limit: int, window: int, now_ms: float, *, record: bool) -> Budget:
        with self._lock:
            hits = self._hits.setdefault(name, deque())
            while hits and hits[0] <= now_ms - window * 1000:
                hits.popleft()
            allowed = record and len(hits) < limit
            if allowed:
                hits.append(now_ms)
            oldest = hits[0] if hits else -1
            used = len(hits)
            if not hits:
                del self._hits[name]
            return _budget(allowed, used, oldest, now_ms, limit, window)


@dataclass(frozen=True)
class AnswerLookup:
    """An answer to read in the rate limit's round trip: its Redis key, and the lock to
    take if it is missing (``analytics.answers``)."""

    key: str
    lock: str
    lock_seconds: int


@dataclass(frozen=True)
class AnswerFound:
    """What the rate limit's round trip found: the stored answer, if any, and whether it
    took the lock (only when there was none)."""

    locked: bool
    stored: bytes | None


@dataclass(frozen=True)
class Replay:
    """What ``SPEND_IF_REPLAYED`` found: the slot it spent, the replay and its answer."""

    budget: Budget
    stored: bytes
    answer: bytes


class RedisWindow:
    def __init__(self, url: str) -> None:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        self._script = client.register_script(SLIDING_WINDOW)
        self._replay_script = client.register_script(SPEND_IF_REPLAYED)

    def take_if_replayed(
        self, name: str, limit: int, window: int, now_ms: float, replay_key: str
    ) -> "Replay | None":
        member = f"{now_ms}:{uuid.uuid4().hex}"
        found = self._replay_script(
            keys=[f"taps:ratelimit:{name}", replay_key], args=[now_ms, window * 1000, limit, member]
        )
        if not found:
            return None
        used, oldest, replay, answer = found
        return Replay(
            _budget(True, int(used), float(oldest), now_ms, limit, window), replay, answer
        )

    def take(
        self,
        name: str,
        limit: int,
        window: int,
        now_ms: float,
        *,
        record: bool,
        lookup: AnswerLookup | None = None,
    ) -> tuple[Budget, AnswerFound | None]:
        keys = [f"taps:ratelimit:{name}"]
        args: list[Any] = [now_ms, window * 1000, limit, f"{now_ms}:{uuid.uuid4().hex}"]
        args.append(int(record))
        if lookup is not None:
            keys += [lookup.key, lookup.lock]
            args.append(lookup.lock_seconds)
        allowed, used, oldest, *found = self._script(keys=keys, args=args)
        budget = _budget(bool(allowed), int(used), float(oldest), now_ms, limit, window)
        if lookup is None or not budget.allowed:
            return budget, None
        return budget, AnswerFound(bool(found[0]), found[1] if len(found) > 1 else None)


@cache
def _redis_window(url: str) -> RedisWindow:
    return RedisWindow(url)


_local = LocalWindow()
_redis_down_until = 0.0


def take(name: str, rate: str, *, now: float, record: bool = True) -> Budget:
    """Spend (``record``) or read one slot of ``rate`` for ``name`` at ``now`` (seconds)."""
    return take_and_look(name, rate, now=now, record=record)[0]


def take_and_look(
    name: str,
    rate: str,
    *,
    now: float,
    record: bool = True,
    lookup: AnswerLookup | None = None,
) -> tuple[Budget, AnswerFound | None]:
    """``take``, and if the slot is granted, ``lookup`` in the same Redis round trip. The
    second item is None when nothing was looked up: no lookup, no slot, or no Redis (the
    process's own window was used)."""
    limit, window = parse_rate(rate)
    now_ms = now * 1000
    url = settings.REDIS_URL
    if url and time.monotonic() >= _redis_down_until:
        try:
            return _redis_window(url).take(
                name, limit, window, now_ms, record=record, lookup=lookup
            )
        except redis.exceptions.RedisError as error:
            _redis_failed(error)
    return _local.take(name, limit, window, now_ms, record=record), None


def take_if_replayed(name: str, rate: str, *, now: float, replay_key: str) -> Replay | None:
    """Spend a slot of ``rate`` for ``name`` only if the replay under ``replay_key`` and
    its answer are in Redis, the replay valid at ``now``, and the slot free: the budget,
    the replay and the answer, or None (nothing spent; also without Redis, or while it is
    unreachable)."""
    url = settings.REDIS_URL
    if not url or time.monotonic() < _redis_down_until:
        return None
    limit, window = parse_rate(rate)
    try:
        return _redis_window(url).take_if_replayed(name, limit, window, now * 1000, replay_key)
    except redis.exceptions.RedisError as error:
        _redis_failed(error)
        return None


def _redis_failed(error: redis.exceptions.RedisError) -> None:
    global _redis_down_until
    _redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
    logger.warning(
        "Rate limiter cannot reach Redis (%s); limiting per process for %.0f s",
        type(error).__name__,
        REDIS_RETRY_SECONDS,
    )


def reset_local_state() -> None:
    """Forget the in-process windows and any Redis outage (for tests)."""
    global _local, _redis_down_until
    _local = LocalWindow()
    _redis_down_until = 0.0
    _redis_window.cache_clear()


class KeyRateThrottle(BaseThrottle):
    """Limits each API key (never an IP) to the rate in ``rate_setting``.

    The budget is left on the request for ``RateLimitHeadersMixin``.
    """

    rate_setting: ClassVar[str] = "TAPS_RATE_LIMIT"
    budget_name: ClassVar[str] = "analytics"
    timer: ClassVar[Callable[[], float]] = time.time

    def allow_request(self, request: Request, view: Any) -> bool:
        auth = request.auth
        if not isinstance(auth, TeamAuth):
            return True
        self.budget, _ = self.spend(auth)
        request.rate_limit_budget = self.budget  # type: ignore[attr-defined]
        return self.budget.allowed

    @classmethod
    def spend(
        cls, auth: TeamAuth, lookup: AnswerLookup | None = None
    ) -> tuple[Budget, AnswerFound | None]:
        """Spend one of the key's slots (``take_and_look``)."""
        return take_and_look(
            f"{cls.budget_name}:{auth.key.prefix}",
            getattr(settings, cls.rate_setting),
            now=cls.timer(),
            lookup=lookup,
        )

    @classmethod
    def spend_if_replayed(cls, key_prefix: str, replay_key: str) -> Replay | None:
        """Spend one of the key's slots if the replay is there (``take_if_replayed``)."""
        return take_if_replayed(
            f"{cls.budget_name}:{key_prefix}",
            getattr(settings, cls.rate_setting),
            now=cls.timer(),
            replay_key=replay_key,
        )

    def wait(self) -> float:
        return self.budget.reset


class AnalyticsRateThrottle(KeyRateThrottle):
    rate_setting = "TAPS_RATE_LIMIT"
    budget_name = "analytics"


class IngestRateThrottle(KeyRateThrottle):
    rate_setting = "TAPS_INGEST_RATE_LIMIT"
    budget_name = "ingest"


def budget_of(auth: TeamAuth, *, now: float | None = None) -> Budget:
    """The key's budget for its scope, without spending any of it (``GET /v1/usage``)."""
    throttle = IngestRateThrottle if auth.scope == "ingest" else AnalyticsRateThrottle
    return take(
        f"{throttle.budget_name}:{auth.key.prefix}",
        getattr(settings, throttle.rate_setting),
        now=throttle.timer() if now is None else now,
        record=False,
    )


class SpendWithAnswerLookupMixin:
    """For views answered from ``analytics.answers``: the key's slot is spent in the
    answer cache's first round trip (``spend_and_look``, passed as its ``first_look``),
    not before the view as DRF's throttles are. A request that fails before it gets
    there spends its slot as it fails: every authenticated request spends one, and one
    over the limit gets 429 whatever else is wrong with it, as with a DRF throttle."""

    throttle: ClassVar[type[KeyRateThrottle]] = AnalyticsRateThrottle
    _slot_due = False

    def check_permissions(self, request: Request) -> None:
        # DRF checks the key's scope before its throttles: marked first, a key refused
        # for its scope (403) spends its slot too.
        self.check_throttles(request)
        super().check_permissions(request)  # type: ignore[misc]

    def check_throttles(self, request: Request) -> None:
        self._slot_due = isinstance(request.auth, TeamAuth)

    def options(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        # DRF answers OPTIONS without the view's code, so without the answer cache's
        # round trip: the slot is spent here.
        self.spend_and_look(None)
        return super().options(request, *args, **kwargs)  # type: ignore[misc]

    def spend_and_look(self, lookup: AnswerLookup | None) -> AnswerFound | None:
        budget, found = self.throttle.spend(self._auth(), lookup)
        self._spent(budget)
        return found

    def handle_exception(self, exc: Exception) -> Any:
        if self._slot_due:
            try:
                self._spent(self.throttle.spend(self._auth())[0])
            except Throttled as refusal:
                exc = refusal
        return super().handle_exception(exc)  # type: ignore[misc]

    def _auth(self) -> TeamAuth:
        auth = self.request.auth  # type: ignore[attr-defined]
        assert isinstance(auth, TeamAuth)
        return auth

    def _spent(self, budget: Budget) -> None:
        self._slot_due = False
        self.request.rate_limit_budget = budget  # type: ignore[attr-defined]
        if not budget.allowed:
            raise Throttled(wait=budget.reset)


class SpendBeforeScopeCheckMixin:
    """For views limited by a DRF throttle: the slot is spent before the key's scope is
    checked (DRF checks permissions first), so that a key refused for its scope (403)
    spends one too and gets the headers: every authenticated request counts (SPEC 7)."""

    _throttles_checked = False

    def check_permissions(self, request: Request) -> None:
        if isinstance(request.auth, TeamAuth):
            self.check_throttles(request)
        super().check_permissions(request)  # type: ignore[misc]

    def check_throttles(self, request: Request) -> None:
        if not self._throttles_checked:
            self._throttles_checked = True
            super().check_throttles(request)  # type: ignore[misc]


class RateLimitHeadersMixin:
    """Adds the ``X-RateLimit-*`` headers to every response of a throttled view.

    A 401 has no key whose budget it could describe; it gets the budget a valid key
    starts with (nothing spent), so that every response carries the headers (SPEC 7) and
    a client learns the limit before it has a working key.
    """

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        budget = getattr(request, "rate_limit_budget", None)
        if budget is None and response.status_code == 401:
            budget = self._unspent_budget()
        if budget is not None:
            for name, value in budget.headers().items():
                response[name] = value
        return response

    def _unspent_budget(self) -> Budget:
        throttle = getattr(self, "throttle", None)
        if throttle is None:
            throttle = next(
                (
                    candidate
                    for candidate in getattr(self, "throttle_classes", ())
                    if issubclass(candidate, KeyRateThrottle)
                ),
                AnalyticsRateThrottle,
            )
        limit, window = parse_rate(getattr(settings, throttle.rate_setting))
        return Budget(True, limit, limit, 0, window)

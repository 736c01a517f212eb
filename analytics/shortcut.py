"""Repeated analytics answers replayed without Django's request machinery (issue 5).

A cached answer still cost about 1.5 ms of worker CPU, most of it in Django's and DRF's
request handling around one key lookup and one Redis trip: on 2 cores, repeated queries
stopped near 1,100 requests/s. So a JSON answer of ``GET /v1/analytics/taps`` is also
kept as a *replay*: the response's headers and the answer's bytes around the request's
own ``team`` and ``as_of`` members, in Redis under the team, its write version and the
request as it came (HTTPS or not, path, query string, ``Accept``, and the team's zone,
which a request without ``tz`` is read in). The next identical request is answered from
it before the middleware chain runs: the key's statement, as in Django (a revoked or
expired key is refused on the very next request), then one Redis script that spends the
key's slot only if the replay is there, still valid, and the key under its limit.

Anything else goes on to Django's chain on the same thread and connection, with the key
already read: no replay (a new question, or a tap stored since: the version moved), a
bad, revoked, expired or ingest key, a spent budget, a host not allowed, plain HTTP
where HTTPS is required, a repeated header a replay depends on, Redis down, DEBUG.
Django then answers as always and keeps the replay. A request with a ``tag`` filter is
never replayed: the filter is checked against the team's tags on every request.
"""

import functools
import hashlib
import logging
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.core import signals
from django.db import OperationalError
from django.http import HttpResponseBase
from django.http.request import split_domain_port, validate_host

from analytics.answers import KEEP_SECONDS
from analytics.filters import team_zone
from analytics.rendered import Replayable, tap_counts_json
from analytics.throttling import AnalyticsRateThrottle
from taps_project.errors import database_unavailable
from taps_project.handlers import SyncChainASGIHandler
from teams.auth import key_in_headers
from teams.keys import KeyRejected, ResolvedKey, read_key
from teams.models import Scope

log = logging.getLogger(__name__)

PATH = "/v1/analytics/taps"
# Moves whenever a replay's stored form changes, so that a deploy never reads the last's.
REPLAY_FORMAT = 2
# A stored replay starts with its validity (16 digits) and its answer's key's length (4).
_HEADER_LENGTH = 20
# The request headers a replay depends on. A request repeating one of them goes to
# Django, which joins the repeats into one value.
_READ_HEADERS = frozenset(
    {b"host", b"x-api-key", b"authorization", b"accept", b"x-forwarded-proto"}
)
# The only proxy header the settings use for HTTPS; with another, nothing is replayed.
_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Response headers written for each request rather than replayed.
_OWN_HEADERS = frozenset(
    {"content-length", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"}
)


def replay_key(team_id: int, version: int, zone: str, request: "SeenRequest") -> str:
    described = b"\n".join(
        (
            b"https" if request.secure else b"http",
            request.path.encode(),
            request.query_string,
            request.headers.get(b"accept", b""),
            zone.encode(),
        )
    )
    digest = hashlib.sha256(described).hexdigest()[:32]
    return f"taps:replay{REPLAY_FORMAT}:{team_id}:{version}:{digest}"


@dataclass(frozen=True)
class SeenRequest:
    """What a replay depends on in a request that may have one."""

    path: str
    query_string: bytes
    headers: dict[bytes, bytes]
    # As Django's ``is_secure`` would say.
    secure: bool


def seen_request(scope: Mapping[str, Any]) -> SeenRequest | None:
    """The request as a replay sees it, or None if it may not have one."""
    if not (
        scope["type"] == "http"
        and scope["method"] == "GET"
        and scope["path"] == PATH
        and not scope.get("root_path")
        and settings.REDIS_URL
        and not settings.DEBUG
        and not settings.USE_X_FORWARDED_HOST
        and settings.SECURE_PROXY_SSL_HEADER in (None, _PROXY_SSL_HEADER)
    ):
        return None
    headers: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in _READ_HEADERS:
            if name in headers:
                return None
            headers[name] = value
    if not _host_allowed(headers.get(b"host", b"")):
        return None
    secure = scope.get("scheme") == "https"
    forwarded = headers.get(b"x-forwarded-proto")
    if settings.SECURE_PROXY_SSL_HEADER and forwarded is not None:
        secure = forwarded.split(b",", 1)[0].strip() == b"https"
    if settings.SECURE_SSL_REDIRECT and not secure:
        return None
    return SeenRequest(scope["path"], scope.get("query_string", b""), headers, secure)


def _host_allowed(host: bytes) -> bool:
    domain, _ = split_domain_port(host.decode("latin-1"))
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)


@functools.cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)


@dataclass(frozen=True)
class Replayed:
    """A response as the ASGI server takes it."""

    headers: list[tuple[bytes, bytes]]
    body: bytes


def replayed(request: SeenRequest) -> Replayed | ResolvedKey | None:
    """The response from this request's replay. Without one: the key it read, which
    Django's authentication then uses rather than reading it again (None if it read
    none)."""
    x_api_key = request.headers.get(b"x-api-key")
    plaintext = key_in_headers(
        None if x_api_key is None else x_api_key.decode("latin-1"),
        request.headers.get(b"authorization", b"").decode("latin-1"),
    )
    if not plaintext:
        return None
    try:
        found = read_key(plaintext)
    except KeyRejected:
        return None
    key = found.key
    if key.scope != Scope.READ:
        return found
    team = key.team
    where = replay_key(team.id, found.team_write_version, team_zone(team).key, request)
    spent = AnalyticsRateThrottle.spend_if_replayed(key.prefix, where)
    if spent is None:
        return found
    # Our own Redis, as trusted as the database (the answer cache pickles too).
    kept, head = pickle.loads(spent.stored[_HEADER_LENGTH + int(spent.stored[16:20]) :])  # noqa: S301
    answer = pickle.loads(spent.answer)  # noqa: S301
    body = tap_counts_json(team.id, team.name, head, answer.body, found.read_at)
    own = {"Content-Length": str(len(body)), **spent.budget.headers()}
    return Replayed([*kept, *_as_sent(own.items())], body)


def keep(seen: SeenRequest, response: HttpResponseBase) -> None:
    """Keep the replay of a response the view marked ``replayable``, with every header
    the middleware gave it; a cache that fails only costs the next request its shortcut."""
    replayable: Replayable | None = getattr(response, "replayable", None)
    if replayable is None or response.status_code != 200 or response.cookies:
        return
    where = replay_key(replayable.team_id, replayable.version, replayable.team_zone, seen)
    valid_until = replayable.valid_until
    valid_until_ms = 0 if valid_until is None else int(valid_until.timestamp() * 1000)
    answer_key = replayable.answer_key.encode()
    # The answer itself stays where the answer cache keeps it: the replay names it
    # (``SPEND_IF_REPLAYED`` reads both), so long answers are not kept twice.
    stored = b"%016d%04d" % (valid_until_ms, len(answer_key)) + answer_key
    stored += pickle.dumps(
        (_replayed_headers(response.items()), replayable.head), pickle.HIGHEST_PROTOCOL
    )
    try:
        _client(settings.REDIS_URL).set(where, stored, ex=KEEP_SECONDS)
    except redis.exceptions.RedisError as error:
        log.warning("could not keep a replay: %r", error)


def _replayed_headers(items: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return _as_sent((name, value) for name, value in items if name.lower() not in _OWN_HEADERS)


def _as_sent(items: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    # As Django's ASGI handler sends them.
    return [(name.encode("ascii"), value.encode("latin-1")) for name, value in items]


class ReplayingASGIHandler(SyncChainASGIHandler):
    """The one-hop handler, answering what it can from replays and keeping new ones.

    A request that may have a replay makes its one hop to a request thread with the
    replay's lookup first: a replayed answer gives the database connection back and is
    sent as it is; a request without one is served by Django on the same thread, with
    its key already read."""

    async def answer(self, scope: dict[str, Any], body_file: Any, send: Any) -> None:
        seen = seen_request(scope)
        if seen is None:
            await super().answer(scope, body_file, send)
            return
        answer = await self.in_thread(self.replay_or_respond, seen, scope, body_file)
        if isinstance(answer, Replayed):
            start = {"type": "http.response.start", "status": 200, "headers": answer.headers}
            await send(start)
            await send({"type": "http.response.body", "body": answer.body})
            return
        response, refused = answer
        await self.send_response(response, send)
        if refused or response.streaming:
            await self.in_thread(response.close)

    def replay_or_respond(
        self, seen: SeenRequest, scope: dict[str, Any], body_file: Any
    ) -> Replayed | tuple[HttpResponseBase, bool]:
        """The replay, or Django's response and whether it is a refusal of the request
        itself (which the caller closes, as ``SyncChainASGIHandler.handle`` does).

        The lookup runs after ``request_started``, so that a request without a replay
        keeps the database connection the lookup took (``request_started`` gives
        connections back): taking another cost a sixth of a new answer's throughput."""
        signals.request_started.send(sender=self.__class__, scope=scope)
        try:
            found = replayed(seen)
        except OperationalError as error:
            # Django would wait for a connection as long again before failing the same way.
            return database_unavailable(error), True
        except Exception:  # noqa: BLE001 -- Django meets it again, and answers as it always does
            found = None
        if isinstance(found, Replayed):
            signals.request_finished.send(sender=self.__class__)
            return found
        request, refusal = self.create_request(scope, body_file)
        if request is None:
            assert refusal is not None  # create_request gives one or the other
            return refusal, True
        request.resolved_key = found  # type: ignore[attr-defined]
        response = self.respond_started(request)
        keep(seen, response)
        return response, False

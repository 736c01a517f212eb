"""Repeated analytics answers replayed before Django's machinery (issue 5).

A cached answer still cost about 1.5 ms of worker CPU, most of it in Django's and DRF's
request handling around one key lookup and one Redis trip: on 2 cores, repeated queries
stopped near 1,100 requests/s. So a JSON answer of ``GET /v1/analytics/taps`` is also
kept as a *replay*: the response's headers and the answer's bytes around the request's
own ``team`` and ``as_of`` members, in Redis under the team, its write version and the
request as it came (scheme, path, query string, ``Accept``, and the team's zone, which a
request without ``tz`` is read in). The next identical request is answered from it here,
in one hop to a request thread: the key's statement, as in Django (a revoked or expired
key is refused on the very next request), then one Redis script that spends the key's
slot only if the replay is there, still valid, and the key under its limit.

Anything else goes on to Django unchanged, having cost only that statement: no replay (a
new question, or a tap stored since: the version moved), a bad, revoked, expired or
ingest key, a spent budget, a host not allowed, plain HTTP where HTTPS is required, Redis
down, DEBUG. Django then answers as always and keeps the replay. A request with a
``tag`` filter is never replayed: the filter is checked against the team's tags on every
request.
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
from django.core.handlers.asgi import ASGIRequest
from django.db import close_old_connections
from django.http import HttpResponseBase
from django.http.request import split_domain_port, validate_host

from analytics.answers import KEEP_SECONDS
from analytics.filters import team_zone
from analytics.rendered import Replayable, tap_counts_json
from analytics.throttling import AnalyticsRateThrottle, Budget
from taps_project.handlers import SyncChainASGIHandler
from teams.auth import key_in_headers
from teams.keys import KeyRejected, read_key
from teams.models import Scope

log = logging.getLogger(__name__)

PATH = "/v1/analytics/taps"
# Moves whenever a replay's stored form changes, so that a deploy never reads the last's.
REPLAY_FORMAT = 1
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
Headers = list[tuple[bytes, bytes]]


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


def replay(request: SeenRequest) -> tuple[Headers, bytes] | None:
    """The response to this request from its replay, or None: Django must answer it.
    Runs on a request thread, whose database connection it gives back."""
    try:
        return _replayed(request)
    finally:
        close_old_connections()


def _replayed(request: SeenRequest) -> tuple[Headers, bytes] | None:
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
        return None
    team = key.team
    where = replay_key(team.id, found.team_write_version, team_zone(team).key, request)
    spent = AnalyticsRateThrottle.spend_if_replayed(key.prefix, where)
    if spent is None:
        return None
    budget, stored = spent
    kept, before_as_of, after_as_of = pickle.loads(stored[16:])  # noqa: S301 -- our own Redis
    body = tap_counts_json(team.id, team.name, before_as_of, found.read_at, after_as_of)
    return [*kept, *_own_headers(len(body), budget)], body


def _own_headers(length: int, budget: Budget) -> Headers:
    own = {"Content-Length": str(length), **budget.headers()}
    return [(name.encode("ascii"), value.encode("latin-1")) for name, value in own.items()]


def keep(request: ASGIRequest, response: HttpResponseBase) -> None:
    """Keep the replay of a response the view marked ``replayable``, with every header
    the middleware gave it; a cache that fails only costs the next request its shortcut."""
    replayable: Replayable | None = getattr(response, "replayable", None)
    if replayable is None or response.status_code != 200 or response.cookies:
        return
    seen = seen_request(request.scope)
    if seen is None:
        return
    where = replay_key(replayable.team_id, replayable.version, replayable.team_zone, seen)
    valid_until = replayable.valid_until
    valid_until_ms = 0 if valid_until is None else int(valid_until.timestamp() * 1000)
    stored = b"%016d" % valid_until_ms + pickle.dumps(
        (_replayed_headers(response.items()), replayable.before_as_of, replayable.after_as_of),
        pickle.HIGHEST_PROTOCOL,
    )
    try:
        _client(settings.REDIS_URL).set(where, stored, ex=KEEP_SECONDS)
    except redis.exceptions.RedisError as error:
        log.warning("could not keep a replay: %r", error)


def _replayed_headers(items: Iterable[tuple[str, str]]) -> Headers:
    # As Django's ASGI handler sends them.
    return [
        (name.encode("ascii"), value.encode("latin-1"))
        for name, value in items
        if name.lower() not in _OWN_HEADERS
    ]


class ReplayingASGIHandler(SyncChainASGIHandler):
    """The one-hop handler, answering what it can from replays and keeping new ones."""

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen = seen_request(scope)
        if seen is not None:
            replayed = await self.in_thread(replay, seen)
            if replayed is not None:
                headers, body = replayed
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await super().handle(scope, receive, send)

    def respond(self, request: ASGIRequest) -> HttpResponseBase:
        response = super().respond(request)
        keep(request, response)
        return response

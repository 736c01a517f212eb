"""Repeated analytics answers replayed before Django (analytics.shortcut): the same answer
as Django's, and never one Django would not give.

Requests go through the project's ASGI handler in this process, to real PostgreSQL or
SQLite and real Redis; an innermost middleware notes which requests Django's chain
served.
"""

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, Protocol

import pytest
import redis
from django.http import HttpRequest, HttpResponseBase
from django.utils import timezone
from pytest_django.fixtures import Settings as SettingsWrapper

from analytics import shortcut, throttling
from analytics.shortcut import REPLAY_FORMAT, ReplayingASGIHandler
from taps_project.asgi import django_http
from teams import auth, keys
from teams.keys import IssuedKey, create_key, revoke_key
from teams.models import Scope, Tag, Team
from tests.asgi_client import get
from tests.conftest import add_taps

pytestmark = pytest.mark.django_db(transaction=True)

YEAR = "interval=month&start=2024-01-01&end=2024-12-31&tz=UTC"


@pytest.fixture(autouse=True)
def _redis(settings: SettingsWrapper, redis_url: str) -> None:
    settings.REDIS_URL = redis_url
    settings.TAPS_RATE_LIMIT = "100/hour"


DJANGO_CHAIN: list[str] = []


class NoteChain:
    """The innermost middleware: notes each request that went through Django's chain."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        DJANGO_CHAIN.append(request.get_full_path())
        return self.get_response(request)


@pytest.fixture
def handler(settings: SettingsWrapper) -> ReplayingASGIHandler:
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, f"{__name__}.NoteChain"]
    return ReplayingASGIHandler()


@pytest.fixture
def served_by_django(handler: ReplayingASGIHandler) -> Iterator[list[str]]:
    """One entry per request that Django's middleware chain served."""
    DJANGO_CHAIN.clear()
    yield DJANGO_CHAIN
    DJANGO_CHAIN.clear()


class Ask(Protocol):
    def __call__(
        self, key: IssuedKey | None, query: str = YEAR, *,
        headers: list[tuple[bytes, bytes]] | None = None, host: bytes = b"localhost",
    ) -> dict[str, Any]: ...  # fmt: skip


@pytest.fixture
def ask(handler: ReplayingASGIHandler) -> Ask:
    """GET /v1/analytics/taps through the handler, in this process."""

    def asking(
        key: IssuedKey | None, query: str = YEAR, *,
        headers: list[tuple[bytes, bytes]] | None = None, host: bytes = b"localhost",
    ) -> dict[str, Any]:  # fmt: skip
        sent = [(b"x-api-key", key.plaintext.encode())] if key else []
        path = "/v1/analytics/taps"
        return get(handler, path, [*sent, *(headers or [])], query=query, host=host)

    return asking


def header_map(answer: dict[str, Any]) -> dict[bytes, bytes]:
    names = [name.lower() for name, _ in answer["headers"]]
    assert len(names) == len(set(names)), names
    return {name.lower(): value for name, value in answer["headers"]}


def without_as_of(body: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(body)
    data.pop("as_of")
    return data


@pytest.fixture
def tapped(tag: Tag) -> Tag:
    add_taps((1, tag.uid, 3, "2024-03-05T10:00:00Z"), (2, tag.uid, 4, "2024-07-01T23:59:00Z"))
    return tag


def test_the_project_serves_http_with_the_replaying_handler() -> None:
    assert isinstance(django_http, ReplayingASGIHandler)


def test_a_repeated_answer_is_replayed_as_django_gave_it(
    ask: Ask, tapped: Tag, read_key: IssuedKey, served_by_django: list[str]
) -> None:
    first = ask(read_key)
    assert len(served_by_django) == 1
    second = ask(read_key)
    assert len(served_by_django) == 1  # not Django

    assert first["status"] == second["status"] == 200
    assert without_as_of(second["body"]) == without_as_of(first["body"])
    assert without_as_of(second["body"])["total"] == 7
    # Byte for byte, but for the request's own as_of.
    as_of = json.loads(second["body"])["as_of"]
    first_as_of = json.loads(first["body"])["as_of"]
    assert second["body"] == first["body"].replace(first_as_of.encode(), as_of.encode())
    assert as_of > first_as_of
    ours, djangos = header_map(second), header_map(first)
    assert djangos.pop(b"x-ratelimit-remaining") == b"99"
    assert ours.pop(b"x-ratelimit-remaining") == b"98"
    assert ours == djangos
    assert b"x-frame-options" in ours and ours[b"content-type"] == b"application/json"


def test_a_request_without_a_replay_reads_its_key_once(
    ask: Ask, tapped: Tag, read_key: IssuedKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []

    def reading(plaintext: str, **options: Any) -> keys.ResolvedKey:
        reads.append(plaintext)
        return keys.read_key(plaintext, **options)

    monkeypatch.setattr(shortcut, "read_key", reading)
    monkeypatch.setattr(auth, "read_key", reading)
    answers = [ask(read_key), ask(read_key, YEAR + "&format=csv"), ask(read_key)]

    assert [answer["status"] for answer in answers] == [200, 200, 200]
    assert len(reads) == 3


def test_a_stored_tap_is_in_the_next_answer(
    ask: Ask, tapped: Tag, read_key: IssuedKey, served_by_django: list[str]
) -> None:
    ask(read_key)
    ask(read_key)
    add_taps((3, tapped.uid, 5, "2024-12-31T12:00:00Z"))

    after = ask(read_key)

    assert len(served_by_django) == 2
    assert json.loads(after["body"])["total"] == 12


def test_a_revoked_key_is_refused_on_the_next_request(
    ask: Ask, tapped: Tag, read_key: IssuedKey, served_by_django: list[str]
) -> None:
    ask(read_key)
    assert ask(read_key)["status"] == 200
    revoke_key(read_key.api_key.prefix)

    refused = ask(read_key)

    assert refused["status"] == 401
    assert "revoked" in json.loads(refused["body"])["detail"]


def test_an_expired_key_is_refused(ask: Ask, tapped: Tag, team: Team) -> None:
    key = create_key(team, name="brief", expires_at=timezone.now() + timedelta(seconds=3))
    ask(key)
    assert ask(key)["status"] == 200
    key.api_key.expiry_date = timezone.now() - timedelta(seconds=1)
    key.api_key.save()

    assert ask(key)["status"] == 401


def test_another_team_never_gets_the_replay(
    ask: Ask, tapped: Tag, read_key: IssuedKey, other_team: Team, served_by_django: list[str]
) -> None:
    ask(read_key)
    other_key = create_key(other_team, name="reader")

    theirs = ask(other_key)

    assert len(served_by_django) == 2
    assert json.loads(theirs["body"])["team"]["id"] == other_team.id
    assert json.loads(theirs["body"])["total"] == 0


def test_an_ingest_key_is_refused(ask: Ask, tapped: Tag, team: Team, read_key: IssuedKey) -> None:
    ask(read_key)
    ingest = create_key(team, name="ingest", scope=Scope.INGEST)

    assert ask(ingest)["status"] == 403


def test_replays_spend_the_rate_limit(
    ask: Ask,
    tapped: Tag,
    read_key: IssuedKey,
    settings: SettingsWrapper,
    served_by_django: list[str],
) -> None:
    settings.TAPS_RATE_LIMIT = "3/hour"
    answers = [ask(read_key) for _ in range(4)]

    assert [answer["status"] for answer in answers] == [200, 200, 200, 429]
    assert [header_map(answer)[b"x-ratelimit-remaining"] for answer in answers] == [
        b"2", b"1", b"0", b"0"
    ]  # fmt: skip
    assert len(served_by_django) == 2  # the first and the refused one


def test_the_team_name_is_read_on_every_request(
    ask: Ask, tapped: Tag, read_key: IssuedKey, team: Team
) -> None:
    ask(read_key)
    Team.objects.filter(pk=team.pk).update(name="Acme Renamed")

    assert json.loads(ask(read_key)["body"])["team"]["name"] == "Acme Renamed"


def test_a_new_team_zone_is_the_default_of_the_next_request(
    ask: Ask, tapped: Tag, read_key: IssuedKey, team: Team
) -> None:
    no_tz = "interval=day&start=2024-03-05&end=2024-03-05"
    assert json.loads(ask(read_key, no_tz)["body"])["tz"] == "Europe/Paris"
    Team.objects.filter(pk=team.pk).update(time_zone="Asia/Kolkata")

    assert json.loads(ask(read_key, no_tz)["body"])["tz"] == "Asia/Kolkata"


@pytest.mark.parametrize(
    ("query", "headers", "content_type"),
    [
        (YEAR, [(b"accept", b"text/csv")], b"text/csv; charset=utf-8"),
        (YEAR + "&format=csv", [], b"text/csv; charset=utf-8"),
        (YEAR + "&tag=1000009083", [], b"application/json"),
    ],
)
def test_csv_and_tag_filters_are_left_to_django(
    ask: Ask,
    tapped: Tag,
    read_key: IssuedKey,
    served_by_django: list[str],
    query: str,
    headers: list[tuple[bytes, bytes]],
    content_type: bytes,
) -> None:
    answers = [ask(read_key, query, headers=headers) for _ in range(2)]

    assert len(served_by_django) == 2
    assert [header_map(answer)[b"content-type"] for answer in answers] == [content_type] * 2


def test_a_tag_moved_away_is_refused_even_after_a_replay(
    ask: Ask, tapped: Tag, read_key: IssuedKey, other_team: Team
) -> None:
    query = YEAR + f"&tag={tapped.uid}"
    assert ask(read_key, query)["status"] == 200
    Tag.objects.filter(pk=tapped.pk).update(team=other_team)

    assert ask(read_key, query)["status"] == 400


def test_a_host_not_allowed_is_refused(ask: Ask, tapped: Tag, read_key: IssuedKey) -> None:
    ask(read_key)

    assert ask(read_key, host=b"evil.example")["status"] == 400


def test_repeated_key_headers_are_left_to_django(
    ask: Ask, tapped: Tag, read_key: IssuedKey, served_by_django: list[str]
) -> None:
    ask(read_key)
    doubled = ask(read_key, headers=[(b"x-api-key", read_key.plaintext.encode())])

    assert doubled["status"] == 401
    assert len(served_by_django) == 2


def test_a_bad_query_is_answered_by_django(ask: Ask, read_key: IssuedKey) -> None:
    for _ in range(2):
        refused = ask(read_key, "interval=day&start=2024-02-30&end=2024-03-01")
        assert refused["status"] == 400
        assert "start" in json.loads(refused["body"])


def test_nothing_is_replayed_without_redis(
    ask: Ask,
    tapped: Tag,
    read_key: IssuedKey,
    settings: SettingsWrapper,
    served_by_django: list[str],
) -> None:
    settings.REDIS_URL = None
    assert [ask(read_key)["status"] for _ in range(2)] == [200, 200]
    assert len(served_by_django) == 2


def test_a_replay_ends_when_its_partial_bucket_does(
    ask: Ask, tag: Tag, read_key: IssuedKey, served_by_django: list[str], redis_url: str
) -> None:
    now = timezone.now()
    add_taps((1, tag.uid, 2, (now - timedelta(minutes=1)).isoformat()))
    today = f"interval=hour&start={now.date()}&end={now.date()}&tz=UTC"
    first = ask(read_key, today)
    assert json.loads(first["body"])["results"][now.hour]["partial"] is True
    ask(read_key, today)
    assert len(served_by_django) == 1

    # The replay says when its current hour ends; past that instant, the script finds
    # it stale and spends nothing.
    client = redis.Redis.from_url(redis_url)
    (where,) = client.keys(f"taps:replay{REPLAY_FORMAT}:*")
    valid_until_ms = int(client.get(where)[:16])  # type: ignore[index]
    hour_end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    assert valid_until_ms == int(hour_end.timestamp() * 1000)
    name = f"analytics:{read_key.api_key.prefix}"
    rate = "100/hour"
    late = valid_until_ms / 1000
    assert throttling.take_if_replayed(name, rate, now=late, replay_key=where.decode()) is None
    assert throttling.take_if_replayed(name, rate, now=late - 1, replay_key=where.decode())


def test_a_replay_names_its_answer_rather_than_holding_it(
    ask: Ask, tapped: Tag, read_key: IssuedKey, served_by_django: list[str], redis_url: str
) -> None:
    quarter = "interval=hour&start=2024-01-01&end=2024-03-31&tz=UTC"
    first = ask(read_key, quarter)
    client = redis.Redis.from_url(redis_url)
    (where,) = client.keys(f"taps:replay{REPLAY_FORMAT}:*")
    (answer,) = client.keys("taps:answer*")
    stored = client.get(where)
    assert stored is not None and answer in stored
    assert len(first["body"]) > 100_000 and len(stored) < 2_000

    client.delete(answer)  # the answer expired or was evicted: Django computes it again
    second = ask(read_key, quarter)

    assert len(served_by_django) == 2
    assert without_as_of(second["body"]) == without_as_of(first["body"])

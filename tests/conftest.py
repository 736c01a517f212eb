import os
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from rest_framework.test import APIClient

from analytics import answers, queries, throttling, views
from analytics.ingest import TapRow, store_taps
from teams.keys import IssuedKey, create_key
from teams.models import Scope, Tag, Team

TEST_REDIS_URL = os.environ.get("TAPS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A real Redis database, flushed before and after the test.

    In CI a missing Redis fails the test rather than skipping it.
    """
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as error:
        if in_ci():
            pytest.fail(f"Redis is not reachable at {TEST_REDIS_URL}: {error}")
        pytest.skip(f"Redis is not reachable at {TEST_REDIS_URL}")
    client.flushdb()
    yield TEST_REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture(autouse=True)
def _flush_configured_redis() -> Iterator[None]:
    """With REDIS_URL set, the suite's cache is real Redis: start every test empty."""
    if settings.REDIS_URL:
        client = redis.Redis.from_url(settings.REDIS_URL)
        client.flushdb()
        yield
        client.flushdb()
        client.close()
    else:
        # The in-process cache outlives the test database, whose ids a later test reuses.
        cache.clear()
        yield
        cache.clear()


@pytest.fixture(autouse=True)
def _fresh_rate_limiter() -> Iterator[None]:
    """In-process rate-limit windows and any remembered Redis outage start empty."""
    throttling.reset_local_state()
    answers.reset_local_state()
    yield
    throttling.reset_local_state()
    answers.reset_local_state()


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[queries.TapQuery]:
    """The queries the views really count (the real ``count_taps`` runs)."""
    calls: list[queries.TapQuery] = []

    def counting(team: Team, query: queries.TapQuery, **options: object) -> queries.TapCounts:
        calls.append(query)
        return queries.count_taps(team, query, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(views, "count_taps", counting)
    return calls


@pytest.fixture
def team(db: None) -> Team:
    return Team.objects.create(name="Acme", time_zone="Europe/Paris")


@pytest.fixture
def other_team(db: None) -> Team:
    return Team.objects.create(name="Globex")


@pytest.fixture
def tag(team: Team) -> Tag:
    return Tag.objects.create(uid=1000009083, team=team)


@pytest.fixture
def read_key(team: Team) -> IssuedKey:
    return create_key(team, name="reader", scope=Scope.READ)


@pytest.fixture
def ingest_key(team: Team) -> IssuedKey:
    return create_key(team, name="ingester", scope=Scope.INGEST)


@pytest.fixture
def api() -> APIClient:
    return APIClient()


def at(text: str) -> datetime:
    """An instant from ISO text, UTC when no offset is given."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def add_taps(*rows: tuple[int, int, int, str]) -> None:
    """Store (tap id, tag uid, count, instant) rows through the write path."""
    store_taps([TapRow(tap_id, uid, count, at(when)) for tap_id, uid, count, when in rows])


def database_vendor() -> str:
    return connection.vendor

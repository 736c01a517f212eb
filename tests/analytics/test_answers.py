"""Cached answers: never stale, computed once for identical concurrent requests, and an
outage of the cache is not an outage of the API."""

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test import override_settings
from rest_framework.test import APIClient

from analytics import answers, queries
from analytics.answers import Answer, cached
from teams.keys import IssuedKey
from teams.models import Tag, Team
from tests.conftest import add_taps
from tests.servers import free_port

URL = "/v1/analytics/taps"
ASKERS = 30
YEAR = {"start": "2023-01-01", "end": "2023-12-31", "tz": "UTC"}


def total(api: APIClient, key: IssuedKey, **params: str) -> int:
    response = api.get(URL, {**YEAR, **params}, HTTP_X_API_KEY=key.plaintext)
    assert response.status_code == 200, response.content
    return response.json()["total"]


def test_a_repeated_query_is_answered_from_the_cache(
    api: APIClient, read_key: IssuedKey, tag: Tag, counted: list[queries.TapQuery]
) -> None:
    add_taps((1, tag.uid, 5, "2023-03-01T10:00:00Z"))

    assert [total(api, read_key) for _ in range(3)] == [5, 5, 5]
    assert len(counted) == 1
    assert total(api, read_key, interval="week") == 5
    assert len(counted) == 2


def test_a_stored_tap_is_in_the_next_answer(
    api: APIClient, read_key: IssuedKey, tag: Tag, counted: list[queries.TapQuery]
) -> None:
    add_taps((1, tag.uid, 5, "2023-03-01T10:00:00Z"))
    assert total(api, read_key) == 5

    add_taps((2, tag.uid, 7, "2023-03-01T10:00:00Z"))

    assert total(api, read_key) == 12
    assert len(counted) == 2


def test_a_duplicate_keeps_the_answer_right(api: APIClient, read_key: IssuedKey, tag: Tag) -> None:
    add_taps((1, tag.uid, 5, "2023-03-01T10:00:00Z"))
    assert total(api, read_key) == 5

    add_taps((1, tag.uid, 5, "2023-03-01T10:00:00Z"), (2, tag.uid, 1, "2023-12-31T23:59:00Z"))

    assert total(api, read_key) == 6


def test_another_teams_taps_do_not_reach_the_answer(
    api: APIClient, read_key: IssuedKey, tag: Tag, other_team: Team
) -> None:
    Tag.objects.create(uid=77, team=other_team)
    add_taps((1, tag.uid, 5, "2023-03-01T10:00:00Z"))
    assert total(api, read_key) == 5

    add_taps((1, 77, 9, "2023-03-01T10:00:00Z"))

    assert total(api, read_key) == 5


def test_an_answer_is_kept_only_until_its_first_unfinished_bucket_ends(
    team: Team, tag: Tag
) -> None:
    as_of = datetime(2023, 3, 1, 10, 0, tzinfo=UTC)
    query = queries.TapQuery(
        start=queries.Endpoint(instant=datetime(2023, 3, 1, tzinfo=UTC)),
        end=queries.Endpoint(instant=datetime(2023, 3, 3, tzinfo=UTC)),
        zone=ZoneInfo("UTC"),
    )

    counts = queries.count_taps(team, query, as_of=as_of)

    assert counts.valid_until == datetime(2023, 3, 2, tzinfo=UTC)
    assert [period.partial for period in counts.periods] == [True, True]
    later = queries.count_taps(team, query, as_of=datetime(2023, 3, 2, 0, 1, tzinfo=UTC))
    assert [period.partial for period in later.periods] == [False, True]
    assert (
        queries.count_taps(team, query, as_of=datetime(2024, 1, 1, tzinfo=UTC)).valid_until is None
    )


def test_a_cached_answer_past_its_validity_is_computed_again(team: Team) -> None:
    as_of = datetime(2023, 3, 1, tzinfo=UTC)
    computed: list[int] = []

    def compute() -> Answer:
        computed.append(1)
        return Answer(len(computed), valid_until=as_of + timedelta(hours=1))

    assert cached(team.id, "q", as_of, compute).body == 1
    assert cached(team.id, "q", as_of + timedelta(minutes=59), compute).body == 1
    assert cached(team.id, "q", as_of + timedelta(hours=1), compute).body == 2


@pytest.mark.django_db(transaction=True)
def test_identical_concurrent_requests_compute_the_answer_once(team: Team) -> None:
    computing = threading.Lock()
    computed: list[int] = []
    results: list[object] = []

    def compute() -> Answer:
        with computing:
            computed.append(1)
        time.sleep(0.3)
        return Answer({"total": 42}, None)

    def ask() -> None:
        try:
            results.append(cached(team.id, "the same", datetime.now(UTC), compute).body)
        finally:
            connection.close()  # back to the pool, which has fewer connections than askers

    askers = [threading.Thread(target=ask) for _ in range(ASKERS)]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join()

    assert results == [{"total": 42}] * ASKERS
    assert len(computed) == 1


@pytest.fixture
def unreachable_cache() -> Iterator[None]:
    location = f"redis://127.0.0.1:{free_port()}/0"
    backend = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": location}
    with override_settings(CACHES={"default": backend}, REDIS_URL=location):
        yield


def test_answers_are_computed_while_the_cache_is_unreachable(
    api: APIClient,
    read_key: IssuedKey,
    tag: Tag,
    counted: list[queries.TapQuery],
    unreachable_cache: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    add_taps((1, tag.uid, 5, "2023-03-01T10:00:00Z"))

    assert [total(api, read_key) for _ in range(3)] == [5, 5, 5]
    add_taps((2, tag.uid, 1, "2023-03-01T10:00:00Z"))
    assert total(api, read_key) == 6

    assert len(counted) == 4
    assert "answer cache unavailable" in caplog.text
    assert read_key.plaintext not in caplog.text
    # one failed connection per retry period, not one per request
    assert caplog.text.count("answer cache unavailable") == 1
    answers.reset_local_state()

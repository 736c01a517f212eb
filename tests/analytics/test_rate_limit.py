"""The per-key rate limit (SPEC 7): exact under concurrency, rolling, per key, headers,
and an API that keeps answering when Redis does not."""

import logging
import multiprocessing
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from pytest_django.fixtures import Settings as SettingsWrapper
from rest_framework.test import APIClient

from analytics import throttling
from analytics.throttling import AnswerFound, AnswerLookup, KeyRateThrottle, take, take_and_look
from teams.keys import IssuedKey, create_key
from teams.models import Tag, Team
from tests.burst import fire
from tests.servers import private_redis, serve

URL = "/v1/analytics/taps?start=2024-01-01&end=2024-01-07"


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(KeyRateThrottle, "timer", clock)
    return clock


@pytest.fixture(params=["redis", "in-process"])
def limiter_backend(request: pytest.FixtureRequest, settings: SettingsWrapper) -> Iterator[str]:
    """Every behaviour below holds for the Redis window and the in-process one."""
    if request.param == "redis":
        settings.REDIS_URL = request.getfixturevalue("redis_url")
    else:
        settings.REDIS_URL = ""
    throttling.reset_local_state()
    yield request.param
    throttling.reset_local_state()


@pytest.fixture
def limit(settings: SettingsWrapper, limiter_backend: str, clock: Clock) -> Callable[[str], None]:
    """Sets TAPS_RATE_LIMIT for a test on either backend, with the clock under control."""

    def set_rate(rate: str) -> None:
        settings.TAPS_RATE_LIMIT = rate

    return set_rate


def get(api: APIClient, key: IssuedKey, url: str = URL) -> object:
    return api.get(url, HTTP_X_API_KEY=key.plaintext)


def test_every_response_carries_the_budget(
    api: APIClient, read_key: IssuedKey, limiter_backend: str, clock: Clock
) -> None:
    first = get(api, read_key)
    bad = get(api, read_key, "/v1/analytics/taps?start=nonsense&end=2024-01-01")
    assert first.status_code == 200 and bad.status_code == 400
    assert (first["X-RateLimit-Limit"], first["X-RateLimit-Remaining"]) == ("100", "99")
    assert first["X-RateLimit-Reset"] == "3600"
    assert bad["X-RateLimit-Remaining"] == "98"


def test_a_request_without_a_valid_key_gets_the_unspent_budget_and_spends_nothing(
    api: APIClient,
    read_key: IssuedKey,
    limit: Callable[[str], None],
    clock: Clock,
    settings: SettingsWrapper,
) -> None:
    limit("3/minute")
    settings.TAPS_INGEST_RATE_LIMIT = "7/hour"
    seed = {"startDate": "2024-01-01", "endDate": "2024-01-07"}
    refused = [
        api.get(URL),
        api.get(URL, HTTP_X_API_KEY="nonsense.key"),
        api.post("/v1/api/tap/analytics", seed, format="json"),
        api.get("/v1/usage"),
        api.post("/v1/taps", [], format="json"),
    ]
    assert [r.status_code for r in refused] == [401] * 5
    headers = [
        (r["X-RateLimit-Limit"], r["X-RateLimit-Remaining"], r["X-RateLimit-Reset"])
        for r in refused
    ]
    assert headers == [("3", "3", "0")] * 4 + [("7", "7", "0")]
    assert get(api, read_key)["X-RateLimit-Remaining"] == "2"


def test_the_101st_request_in_an_hour_gets_429_with_retry_after(
    api: APIClient, read_key: IssuedKey, limiter_backend: str, clock: Clock
) -> None:
    for _ in range(100):
        assert get(api, read_key).status_code == 200
        clock.now += 10
    refused = get(api, read_key)
    assert refused.status_code == 429
    assert refused["X-RateLimit-Remaining"] == "0"
    assert refused["Retry-After"] == refused["X-RateLimit-Reset"] == str(3600 - 1000)
    assert "detail" in refused.json()


def test_the_window_rolls_instead_of_resetting_on_the_hour(
    api: APIClient,
    read_key: IssuedKey,
    limit: Callable[[str], None],
    clock: Clock,
) -> None:
    limit("5/second")
    for _ in range(5):
        assert get(api, read_key).status_code == 200
        clock.now += 0.1
    assert get(api, read_key).status_code == 429
    clock.now += 0.55  # the first request (1.0 s ago) has left the window; the rest not
    assert get(api, read_key).status_code == 200
    assert get(api, read_key).status_code == 429
    clock.now += 1.0
    statuses = [get(api, read_key).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]


def test_refused_requests_do_not_spend_the_budget(
    api: APIClient,
    read_key: IssuedKey,
    limit: Callable[[str], None],
    clock: Clock,
) -> None:
    limit("2/minute")
    assert [get(api, read_key).status_code for _ in range(10)] == [200, 200] + [429] * 8
    clock.now += 60
    assert [get(api, read_key).status_code for _ in range(3)] == [200, 200, 429]


def test_keys_are_limited_independently(
    api: APIClient,
    team: Team,
    read_key: IssuedKey,
    limit: Callable[[str], None],
    clock: Clock,
) -> None:
    limit("3/hour")
    other_key = create_key(team, name="second")
    assert [get(api, read_key).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert get(api, other_key).status_code == 200
    assert get(api, other_key)["X-RateLimit-Remaining"] == "1"


def test_the_seed_post_shares_the_budget(
    api: APIClient,
    read_key: IssuedKey,
    limit: Callable[[str], None],
    clock: Clock,
) -> None:
    limit("2/hour")
    seed = api.post(
        "/v1/api/tap/analytics",
        {"startDate": "2024-01-01", "endDate": "2024-01-02", "interval": "day"},
        format="json",
        HTTP_X_API_KEY=read_key.plaintext,
    )
    assert seed.status_code == 200 and seed["X-RateLimit-Remaining"] == "1"
    assert get(api, read_key).status_code == 200
    assert get(api, read_key).status_code == 429


def test_over_the_limit_even_a_bad_or_cached_request_gets_429(
    api: APIClient,
    read_key: IssuedKey,
    limit: Callable[[str], None],
    clock: Clock,
    counted: list[object],
) -> None:
    limit("3/hour")
    assert [get(api, read_key).status_code for _ in range(2)] == [200, 200]  # now cached
    assert len(counted) == 1
    assert get(api, read_key, "/v1/analytics/taps?start=2024-02-30").status_code == 400

    bad = get(api, read_key, "/v1/analytics/taps?start=2024-02-30")
    cached = get(api, read_key)
    seed_bad = api.post(
        "/v1/api/tap/analytics",
        "{",
        content_type="application/json",
        HTTP_X_API_KEY=read_key.plaintext,
    )

    assert [bad.status_code, cached.status_code, seed_bad.status_code] == [429, 429, 429]
    assert bad["Retry-After"] == cached["X-RateLimit-Reset"] == "3600"
    assert len(counted) == 1


def test_the_limits_round_trip_reads_the_answer_or_takes_its_lock(
    redis_url: str, settings: SettingsWrapper
) -> None:
    settings.REDIS_URL = redis_url
    lookup = AnswerLookup("taps:answer", "taps:answer:computing", 10)

    def spend() -> tuple[bool, AnswerFound | None]:
        budget, found = take_and_look("analytics:k", "3/hour", now=1_700_000_000.0, lookup=lookup)
        return budget.allowed, found

    assert spend() == (True, AnswerFound(locked=True, stored=None))
    assert spend() == (True, AnswerFound(locked=False, stored=None))  # someone computes
    redis.Redis.from_url(redis_url).set("taps:answer", b"stored")
    assert spend() == (True, AnswerFound(locked=False, stored=b"stored"))
    assert spend() == (False, None)  # over the limit: nothing read


def test_usage_reports_the_budget_without_spending_it(
    api: APIClient, read_key: IssuedKey, limiter_backend: str, clock: Clock
) -> None:
    get(api, read_key)
    clock.now += 100
    usage = [get(api, read_key, "/v1/usage").json() for _ in range(3)]
    assert usage == [{"limit": 100, "remaining": 99, "reset": 3500, "window": 3600}] * 3


def test_usage_of_a_key_that_never_asked_is_the_full_budget(
    api: APIClient, read_key: IssuedKey, limiter_backend: str
) -> None:
    usage = get(api, read_key, "/v1/usage")
    assert usage.json() == {"limit": 100, "remaining": 100, "reset": 0, "window": 3600}
    assert usage["X-RateLimit-Remaining"] == "100"


def test_ingest_keys_have_their_own_budget(
    read_key: IssuedKey, ingest_key: IssuedKey, settings: SettingsWrapper, limiter_backend: str
) -> None:
    settings.TAPS_INGEST_RATE_LIMIT = "7/minute"
    api = APIClient()
    get(api, read_key)
    assert get(api, ingest_key, "/v1/usage").json()["limit"] == 7
    assert get(api, ingest_key, "/v1/usage").json()["remaining"] == 7


def test_the_lua_window_is_exact_under_threads(redis_url: str, settings: SettingsWrapper) -> None:
    settings.REDIS_URL = redis_url
    throttling.reset_local_state()
    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(
            pool.map(lambda _: take("analytics:k", "50/hour", now=1000.0).allowed, range(400))
        )
    assert results.count(True) == 50


# Several OS processes against a real server with two workers, sharing Redis.


@pytest.mark.django_db(transaction=True)
def test_300_concurrent_requests_from_4_processes_get_exactly_100_through(
    redis_url: str, team: Team
) -> None:
    key, second_key = create_key(team, name="burst"), create_key(team, name="bystander")
    with serve({"REDIS_URL": redis_url, "TAPS_RATE_LIMIT": "100/hour"}) as base:
        url = f"{base}/v1/analytics/taps?start=2024-01-01&end=2024-01-02"
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(4)
        out: multiprocessing.Queue[list[int]] = context.Queue()
        clients = [
            context.Process(target=fire, args=(url, key.plaintext, 75, barrier, out))
            for _ in range(4)
        ]
        for client in clients:
            client.start()
        statuses = Counter(status for _ in clients for status in out.get(timeout=120))
        for client in clients:
            client.join(timeout=30)
        request = urllib.request.Request(
            f"{base}/v1/usage", headers={"X-Api-Key": second_key.plaintext}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            bystander = response.read()
    assert statuses == {200: 100, 429: 200}
    assert b'"remaining":100' in bystander.replace(b" ", b"")


@pytest.mark.django_db(transaction=True)
def test_redis_stopping_mid_test_falls_back_to_a_per_process_limit(
    api: APIClient, read_key: IssuedKey, settings: SettingsWrapper, caplog: pytest.LogCaptureFixture
) -> None:
    throttling.reset_local_state()
    with private_redis() as (url, redis_process):
        settings.REDIS_URL = url
        assert get(api, read_key).status_code == 200
        redis_process.kill()
        redis_process.wait()
        with caplog.at_level(logging.WARNING, logger="analytics.throttling"):
            responses = [get(api, read_key) for _ in range(3)]
    throttling.reset_local_state()
    assert [response.status_code for response in responses] == [200, 200, 200]
    assert responses[-1]["X-RateLimit-Remaining"] == "97"
    assert "cannot reach Redis" in caplog.text
    assert read_key.plaintext not in caplog.text


def test_ingest_has_its_own_rate_limit_and_headers(
    api: APIClient,
    read_key: IssuedKey,
    ingest_key: IssuedKey,
    tag: Tag,
    settings: SettingsWrapper,
    limiter_backend: str,
    clock: Clock,
) -> None:
    settings.TAPS_INGEST_RATE_LIMIT = "2/minute"

    def ingest(tap_id: int) -> Any:
        body = [{"id": tap_id, "tag": tag.uid, "at": "2024-01-01T00:00:00Z"}]
        return api.post("/v1/taps", body, format="json", HTTP_X_API_KEY=ingest_key.plaintext)

    responses = [ingest(tap_id) for tap_id in (1, 2, 3)]
    assert [r.status_code for r in responses] == [201, 201, 429]
    assert responses[0]["X-RateLimit-Limit"] == "2"
    assert responses[2]["Retry-After"] == "60"
    assert get(api, read_key)["X-RateLimit-Remaining"] == "99"
    clock.now += 60
    assert ingest(3).status_code == 201


def test_a_key_used_outside_its_scope_spends_a_slot_and_gets_the_headers(
    api: APIClient,
    read_key: IssuedKey,
    ingest_key: IssuedKey,
    tag: Tag,
    limit: Callable[[str], None],
    clock: Clock,
    settings: SettingsWrapper,
) -> None:
    # SPEC 7: every authenticated request counts, whatever its status.
    limit("2/minute")
    settings.TAPS_INGEST_RATE_LIMIT = "5/minute"
    seed = {"startDate": "2024-01-01", "endDate": "2024-01-07", "interval": "day"}
    refused = [
        get(api, ingest_key),
        api.post("/v1/api/tap/analytics", seed, format="json", HTTP_X_API_KEY=ingest_key.plaintext),
        get(api, ingest_key),
    ]
    assert [r.status_code for r in refused] == [403, 403, 429]
    assert [r["X-RateLimit-Remaining"] for r in refused] == ["1", "0", "0"]

    body = [{"id": 1, "tag": tag.uid, "at": "2024-01-01T00:00:00Z"}]
    posted = [
        api.post("/v1/taps", body, format="json", HTTP_X_API_KEY=read_key.plaintext)
        for _ in range(2)
    ]
    assert [r.status_code for r in posted] == [403, 403]
    assert [r["X-RateLimit-Remaining"] for r in posted] == ["4", "3"]
    assert get(api, read_key).status_code == 200


def test_an_options_request_spends_a_slot_and_gets_the_headers(
    api: APIClient, read_key: IssuedKey, limit: Callable[[str], None], clock: Clock
) -> None:
    limit("2/minute")
    asked = [
        api.options(path, HTTP_X_API_KEY=read_key.plaintext)
        for path in ("/v1/analytics/taps", "/v1/api/tap/analytics", "/v1/analytics/taps")
    ]
    assert [r.status_code for r in asked] == [200, 200, 429]
    assert [r["X-RateLimit-Remaining"] for r in asked] == ["1", "0", "0"]
    assert get(api, read_key).status_code == 429

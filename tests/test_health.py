import json
import urllib.error
import urllib.request
from email.message import Message

import pytest
from django.conf import settings
from django.test import Client

from tests.servers import serve


@pytest.mark.django_db
def test_healthz_reports_each_dependency(client: Client) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    expected_redis = "ok" if settings.REDIS_URL else "not configured"
    assert response.json() == {"status": "ok", "database": "ok", "redis": expected_redis}


@pytest.mark.django_db
def test_healthz_is_503_when_redis_does_not_answer(client: Client, settings: object) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # type: ignore[attr-defined]
    settings.CACHES = {  # type: ignore[attr-defined]
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
        }
    }

    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["redis"].startswith("down: ")


@pytest.mark.django_db
def test_an_unknown_url_is_a_json_404(client: Client) -> None:
    response = client.get("/v1/nope")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def _answer(base: str, path: str, *, body: object = None) -> tuple[int, Message, object]:
    request = urllib.request.Request(
        base + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"X-Api-Key": UNCHECKABLE_KEY, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.load(error)


UNCHECKABLE_KEY = "Abcd1234.abcdefghijklmnopqrstuvwxyz012345"


def test_with_the_database_down_every_endpoint_answers_503_in_json(redis_url: str) -> None:
    # A real server whose PostgreSQL refuses connections: nothing listens on port 1.
    down = {"DATABASE_URL": "postgres://postgres@127.0.0.1:1/nowhere", "TAPS_DB_WAIT": "1"}
    with serve({**down, "REDIS_URL": redis_url}, workers=1, healthy=False) as base:
        status, _, health = _answer(base, "/healthz")
        assert status == 503
        assert health == {"status": "unavailable", "database": "down: PoolTimeout", "redis": "ok"}

        seed = {"startDate": "2024-01-01", "endDate": "2024-01-07"}
        answers = [
            _answer(base, "/v1/analytics/taps?start=2024-01-01&end=2024-01-07"),
            _answer(base, "/v1/api/tap/analytics", body=seed),
            _answer(base, "/v1/taps", body=[{"id": 1, "tag": 1}]),
            _answer(base, "/v1/usage"),
            _answer(base, "/v1/team"),
        ]
    for status, headers, body in answers:
        assert status == 503
        assert headers["Retry-After"] == "5"
        assert body == {
            "detail": "The database is unavailable; send the request again in 5 seconds."
        }

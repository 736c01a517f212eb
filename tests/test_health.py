import pytest
from django.conf import settings
from django.test import Client


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

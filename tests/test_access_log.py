"""No key reaches the server's log, even one a client put in a URL."""

import logging

import pytest
from django.test import Client

import taps_project.asgi  # noqa: F401 - the application installs the filter
from taps_project.access_log import redacted


def test_the_server_logs_no_key_a_client_put_in_a_url(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    # As uvicorn logs a request and a websocket handshake.
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d',
        "127.0.0.1:50000",
        "GET",
        "/v1/analytics/taps?start=2024-01-01&api_key=SECRET-ONE&end=2024-01-02",
        "1.1",
        401,
    )
    logging.getLogger("uvicorn.error").info(
        '%s - "WebSocket %s" [accepted]', "127.0.0.1:50001", "/ws/v1/taps?key=SECRET-TWO"
    )

    # As Django logs a 404.
    logging.getLogger("django.request").warning("Not Found: %s", "/v1/x;api_key=SECRET-THREE")

    assert "SECRET" not in caplog.text
    assert "?start=2024-01-01&api_key=[redacted]&end=2024-01-02" in caplog.text
    assert "/ws/v1/taps?key=[redacted]" in caplog.text


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/usage?X-Api-Key=abc.def", "/v1/usage?X-Api-Key=[redacted]"),
        (
            "/x?token=1&a=2&Authorization=Api-Key%20k",
            "/x?token=[redacted]&a=2&Authorization=[redacted]",
        ),
        ("/x?password=p&secret=s", "/x?password=[redacted]&secret=[redacted]"),
        ("/v1/analytics/taps?start=2024-01-01&tag=5", "/v1/analytics/taps?start=2024-01-01&tag=5"),
        ("/keys/are/fine/in/paths?monkey=1", "/keys/are/fine/in/paths?monkey=[redacted]"),
        # Shaped like an issued key: under any name, a percent-encoded one, or in the path.
        ("/ws/v1/taps?k=" + "AbCd1234." + "x" * 32, "/ws/v1/taps?k=[redacted]"),
        ("/x?ke%79=" + "AbCd1234." + "x" * 32 + "&a=1", "/x?ke%79=[redacted]&a=1"),
        ("/v1/analytics/taps;key=" + "AbCd1234." + "x" * 32, "/v1/analytics/taps;key=[redacted]"),
        ("/x?tag=" + "1" * 8 + "." + "2" * 33, "/x?tag=" + "1" * 8 + "." + "2" * 33),
    ],
)
def test_secret_parameters_are_redacted_and_others_kept(path: str, expected: str) -> None:
    assert redacted(path) == expected


@pytest.mark.django_db
def test_a_host_not_served_is_a_400_that_says_so_and_one_warning_line(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    response = client.get("/v1/usage", HTTP_HOST="scanner.example")

    assert response.status_code == 400
    assert "Host header" in response.json()["detail"]
    [record] = [r for r in caplog.records if r.name == "django.security.DisallowedHost"]
    assert (record.levelname, record.exc_info) == ("WARNING", None)
    assert "Traceback" not in caplog.text

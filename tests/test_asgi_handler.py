"""The ASGI handler runs the middleware chain and the view in one hop (taps_project.handlers)."""

import asyncio
import gc
import json
import re
import threading
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import SyncToAsync
from django.conf import settings
from django.core import signals
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase
from django.test import override_settings

from taps_project.asgi import django_http
from taps_project.handlers import SyncChainASGIHandler
from taps_project.parsers import MAX_BODY_BYTES
from teams.keys import IssuedKey
from tests.asgi_client import get, send_request

SEEN: dict[str, int] = {}


class RecordThread:
    """A sync-only middleware, innermost, noting the thread each half runs in."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        SEEN["request"] = threading.get_ident()
        response = self.get_response(request)
        SEEN["response"] = threading.get_ident()
        return response


def test_the_project_serves_http_with_the_one_hop_handler() -> None:
    assert isinstance(django_http, SyncChainASGIHandler)
    assert not asyncio.iscoroutinefunction(django_http._middleware_chain)  # type: ignore[attr-defined]


def masked(sent: object) -> str:
    """Without the CSRF tokens (random, new in each answer; 32 or 64 letters and digits)
    and the CSRF cookie's expiry (a second later in one answer of two, now and then)."""
    text = re.sub(r"\b[A-Za-z0-9]{32}(?:[A-Za-z0-9]{32})?\b", "*", repr(sent))
    return re.sub(r"\d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT", "(date)", text)


@pytest.mark.parametrize("path", ["/v1/team", "/v1/nope", "/v1/docs", "/dashboard/"])
def test_an_asgi_request_is_answered_as_by_djangos_own_handler(path: str) -> None:
    ours = get(django_http, path)
    djangos = get(ASGIHandler(), path)

    assert ours["status"] == djangos["status"]
    assert masked(ours["headers"]) == masked(djangos["headers"])
    assert masked(ours["body"]) == masked(djangos["body"])


def test_the_middleware_still_run() -> None:
    answer = get(django_http, "/v1/team")

    assert answer["status"] == 401
    assert json.loads(answer["body"])["detail"].startswith("Send your team's API key")
    headers = {name.lower(): value for name, value in answer["headers"]}
    assert headers[b"x-content-type-options"] == b"nosniff"  # SecurityMiddleware
    assert headers[b"x-frame-options"] == b"DENY"  # XFrameOptionsMiddleware


def test_the_chain_runs_in_one_thread_off_the_loop_with_few_handoffs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hops = []
    original = SyncToAsync.__call__

    async def counting(self: SyncToAsync, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(self.func, "__qualname__", repr(self.func)))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counting)
    SEEN.clear()
    with override_settings(MIDDLEWARE=[*settings.MIDDLEWARE, f"{__name__}.RecordThread"]):
        handler = SyncChainASGIHandler()
        answer = get(handler, "/v1/nope")

    assert answer["status"] == 404
    assert SEEN["request"] == SEEN["response"] != answer["loop_thread"]
    # request_started, the chain with the view, and response.close, in one hop (Django's
    # own handler made about fifteen for this chain: two per middleware, and the view).
    assert len(hops) == 1, hops


def test_a_request_finishes_in_its_own_thread_and_threads_are_reused() -> None:
    finished: list[int] = []

    def note_thread(**kwargs: object) -> None:
        finished.append(threading.get_ident())

    signals.request_finished.connect(note_thread)
    try:
        with override_settings(MIDDLEWARE=[*settings.MIDDLEWARE, f"{__name__}.RecordThread"]):
            handler = SyncChainASGIHandler()
            served = []
            for _ in range(3 * settings.TAPS_REQUEST_THREADS):
                SEEN.clear()
                assert get(handler, "/v1/nope")["status"] == 404
                served.append(SEEN["request"])
                # request_finished closes the thread's database connection: it must run
                # in the thread that used it.
                assert finished[-1] == SEEN["request"]
    finally:
        signals.request_finished.disconnect(note_thread)

    assert len(finished) == len(served)
    assert len(set(served)) <= min(settings.TAPS_REQUEST_THREADS, len(served) - 1)


def test_the_loaded_application_is_left_out_of_full_collections() -> None:
    # taps_project.asgi is imported above; what it loaded is frozen (not collected).
    assert gc.get_freeze_count() > 10_000


SEED_BODY = b'{"startDate": "2023-01-01", "endDate": "2023-01-31", "interval": "week"}'


@pytest.mark.django_db(transaction=True)
def test_a_chunked_body_is_read_like_one_with_a_length(read_key: IssuedKey) -> None:
    headers = [(b"x-api-key", read_key.plaintext.encode()), (b"content-type", b"application/json")]
    chunked = [*headers, (b"transfer-encoding", b"chunked")]
    with_length = [*headers, (b"content-length", str(len(SEED_BODY)).encode())]

    sent_chunked = send_request(
        django_http, "POST", "/v1/api/tap/analytics", chunked, body=[SEED_BODY[:9], SEED_BODY[9:]]
    )
    sent_whole = send_request(
        django_http, "POST", "/v1/api/tap/analytics", with_length, body=[SEED_BODY]
    )

    assert sent_chunked["status"] == sent_whole["status"] == 200
    assert json.loads(sent_chunked["body"]) == json.loads(sent_whole["body"])


@pytest.mark.django_db(transaction=True)
def test_a_chunked_body_over_1_mib_is_a_413(read_key: IssuedKey) -> None:
    headers = [
        (b"x-api-key", read_key.plaintext.encode()),
        (b"content-type", b"application/json"),
        (b"transfer-encoding", b"chunked"),
    ]
    body = [b"[" + b"1," * 300_000] * 2 + [b"1]"]

    sent = send_request(django_http, "POST", "/v1/api/tap/analytics", headers, body=body)

    assert sent["status"] == 413
    assert "over 1 MiB" in json.loads(sent["body"])["detail"]


def test_no_more_of_a_body_is_kept_than_the_parser_could_refuse() -> None:
    chunks = iter([b"x" * MAX_BODY_BYTES, b"y" * 10, b"z" * MAX_BODY_BYTES])

    async def receive() -> dict[str, Any]:
        chunk = next(chunks, None)
        return {"type": "http.request", "body": chunk or b"", "more_body": chunk is not None}

    body_file = asyncio.run(SyncChainASGIHandler().read_body(receive))

    assert body_file.read() == b"x" * MAX_BODY_BYTES + b"y"
    assert next(chunks, None) is None  # the rest was received all the same

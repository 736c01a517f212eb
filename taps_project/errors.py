"""Every error is JSON in DRF's shape (SPEC 6): no HTML page, no traceback."""

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.exceptions import DisallowedHost, RequestDataTooBig, TooManyFieldsSent
from django.db import DataError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler

from analytics.periods import TooManyBuckets
from taps_project.parsers import BodyTooLarge

logger = logging.getLogger(__name__)

DATABASE_RETRY_SECONDS = 5


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    if isinstance(exception, DisallowedHost):
        return JsonResponse(
            {
                "detail": "This server does not answer to the host name in the Host header; "
                "send one of its own (its operator lists them in ALLOWED_HOSTS)."
            },
            status=400,
        )
    if isinstance(exception, TooManyFieldsSent):
        return JsonResponse(
            {
                "detail": f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} "
                "query parameters or form fields; send fewer."
            },
            status=400,
        )
    if isinstance(exception, RequestDataTooBig):
        return JsonResponse(
            {"detail": "The request body is over the size this page takes; send less."},
            status=413,
        )
    return JsonResponse({"detail": "Bad request."}, status=400)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(
        {"detail": "You do not have permission to perform this action."}, status=403
    )


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"detail": "Not found."}, status=404)


def server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"detail": "Internal server error; it has been logged."}, status=500)


def database_unavailable(error: Exception) -> JsonResponse:
    """503 for a database that cannot answer (down, unreachable, no connection within
    ``TAPS_DB_WAIT``, locked): the client's request was fine, and may be sent again."""
    logger.warning("database unavailable: %s", error)
    response = JsonResponse(
        {
            "detail": "The database is unavailable; send the request again in "
            f"{DATABASE_RETRY_SECONDS} seconds."
        },
        status=503,
    )
    response["Retry-After"] = str(DATABASE_RETRY_SECONDS)
    # Sent as it is when the request's first read fails (``analytics.shortcut``), past the
    # middleware that would set it.
    response["Content-Length"] = str(len(response.content))
    return response


def value_refused(error: Exception) -> JsonResponse:
    """400 for a value the database refuses to store or compare, such as a NUL, which
    PostgreSQL text cannot hold (SQLite takes it): the API's own parameters are checked
    before they reach the database, so this is what the admin's filters and URLs meet."""
    logger.warning("value refused by the database: %s", error)
    return JsonResponse(
        {
            "detail": "A value in the request cannot be stored or compared by the database "
            "(a NUL character, for instance); remove it and send the request again."
        },
        status=400,
    )


class DatabaseUnavailableMiddleware:
    """Answers ``database_unavailable`` instead of a 500 when a view meets an
    ``OperationalError``, which Django and psycopg raise for a database that cannot
    answer, and ``value_refused`` for a ``DataError`` (SQL mistakes are
    ``ProgrammingError``s, still 500s)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, OperationalError):
            return database_unavailable(exception)
        if isinstance(exception, DataError):
            return value_refused(exception)
        return None


def csrf_failure(request: HttpRequest, reason: str = "") -> JsonResponse:
    """``CSRF_FAILURE_VIEW``: only the admin's forms are checked (the API takes keys, not
    cookies), and a refused form gets this rather than Django's HTML page."""
    return JsonResponse(
        {"detail": f"CSRF verification failed: {reason} Reload the page and send it again."},
        status=403,
    )


def get_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """For plain Django views that only read: GET and HEAD are answered, any other method
    gets a JSON 405 (Django's ``require_GET`` answers an empty HTML one). Nothing here
    changes state, so no CSRF check is needed; without it, a POST gets the 405 rather
    than a CSRF refusal."""

    @wraps(view)
    def answer_or_refuse(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method not in {"GET", "HEAD"}:
            method = (request.method or "")[:32]
            refusal = JsonResponse(
                {"detail": f'Method "{method}" not allowed; use GET.'}, status=405
            )
            refusal["Allow"] = "GET, HEAD"
            return refusal
        return view(request, *args, **kwargs)

    return csrf_exempt(answer_or_refuse)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus the domain errors that are the client's to fix."""
    if isinstance(exc, RequestDataTooBig):
        exc = BodyTooLarge()
    elif isinstance(exc, TooManyBuckets) and exc.compared:
        exc = ValidationError(
            {
                "compare": [
                    f"The range compared with holds more than {exc.limit} buckets of this "
                    "interval (a year earlier may hold one day more); shorten the range "
                    "(start, end), choose a longer interval or leave out compare."
                ]
            }
        )
    elif isinstance(exc, TooManyBuckets):
        exc = ValidationError(
            {
                "interval": [
                    f"The range holds more than {exc.limit} buckets of this "
                    "interval; shorten the range (start, end) or choose a longer interval."
                ]
            }
        )
    return exception_handler(exc, context)

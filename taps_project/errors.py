"""Every error is JSON in DRF's shape (SPEC 6): no HTML page, no traceback."""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler

from analytics.periods import TooManyBuckets
from taps_project.parsers import BodyTooLarge


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"detail": "Bad request."}, status=400)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(
        {"detail": "You do not have permission to perform this action."}, status=403
    )


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"detail": "Not found."}, status=404)


def server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"detail": "Internal server error; it has been logged."}, status=500)


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

"""Every error is JSON in DRF's shape (SPEC 6): no HTML page, no traceback."""

from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
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


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus the domain errors that are the client's to fix."""
    if isinstance(exc, RequestDataTooBig):
        exc = BodyTooLarge()
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

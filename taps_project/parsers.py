"""Request body parsing that never ends in a 500 (SPEC 6).

DRF's ``JSONParser`` reads any size and lets a ``RecursionError`` from absurdly nested
JSON escape as a server error. ``StrictJSONParser`` reads at most ``MAX_BODY_BYTES``
(413 beyond) and turns every undecodable body into a 400.
"""

import json
from typing import Any

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser

MAX_BODY_BYTES = 1024 * 1024


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = f"The request body is larger than {MAX_BODY_BYTES} bytes; send fewer items."
    default_code = "request_too_large"


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


class StrictJSONParser(JSONParser):
    """JSON of at most 1 MiB; NaN and Infinity refused; too deep or malformed is a 400."""

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: dict[str, Any] | None = None,
    ) -> Any:
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise RequestTooLarge()
        body = stream.read(MAX_BODY_BYTES + 1) if stream is not None else b""
        if len(body) > MAX_BODY_BYTES:
            raise RequestTooLarge()
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            return json.loads(body.decode(encoding), parse_constant=_reject_constant)
        except RecursionError:
            raise ParseError("The JSON body is nested too deeply.") from None
        except ValueError as error:  # also UnicodeDecodeError and json.JSONDecodeError
            raise ParseError(f"The body is not valid JSON: {error}") from None

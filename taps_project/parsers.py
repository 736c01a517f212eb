"""Request bodies (SPEC 6): JSON only, at most 1 MiB, and never a 500 on odd input."""

import codecs
from typing import Any

from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser
from rest_framework.settings import api_settings
from rest_framework.utils import json

MAX_BODY_BYTES = 1024 * 1024


class BodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is over 1 MiB; send less at a time."
    default_code = "body_too_large"


class StrictJSONParser(JSONParser):
    """DRF's JSON parser with a size cap, read before anything is decoded.

    Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` does not apply here, because DRF reads the
    request as a stream, so the cap is enforced while reading.
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        if stream is None:
            raise ParseError("The request body is empty; send a JSON document.")
        body = stream.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            raise BodyTooLarge()
        encoding = (parser_context or {}).get("encoding") or "utf-8"
        try:
            text = codecs.decode(body, encoding)
        except (UnicodeDecodeError, LookupError):
            raise ParseError(f"The request body is not valid {encoding} text.") from None
        parse_constant = json.strict_constant if api_settings.STRICT_JSON else None
        try:
            return json.loads(text, parse_constant=parse_constant)
        except ValueError as error:
            raise ParseError(f"The request body is not valid JSON: {error}.") from None
        except RecursionError:
            raise ParseError("The request body's JSON is nested too deeply.") from None

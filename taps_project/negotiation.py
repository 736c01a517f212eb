"""Content negotiation for every endpoint: JSON unless CSV is asked for."""

from typing import Any

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request


class FormatNegotiation(DefaultContentNegotiation):
    """``?format=`` first, then an ``Accept`` that prefers CSV to JSON; anything else is
    answered in JSON (a bad ``format`` is refused by the parameter check, with a 400, not
    a 404)."""

    def select_renderer(
        self, request: Request, renderers: list[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        by_format = {renderer.format: renderer for renderer in renderers}
        wanted = request.query_params.get("format")
        if wanted is None and prefers_csv(request.META.get("HTTP_ACCEPT", "")):
            wanted = "csv"
        renderer = by_format.get(wanted or "json") or by_format.get("json") or renderers[0]
        return renderer, renderer.media_type


def prefers_csv(accept: str) -> bool:
    """Whether ``Accept`` names CSV and ranks it above JSON (RFC 9110: each type takes
    the weight of the most specific range that matches it). At equal weight, CSV wins
    only when named and JSON is not: ``text/csv, */*`` asks for CSV; ``application/json,
    text/csv`` leaves JSON, the default."""
    ranges = [_media_range(item) for item in accept.split(",") if item.strip()]
    csv, csv_named = _weight(ranges, "text", "csv")
    json, json_named = _weight(ranges, "application", "json")
    return csv_named and csv > 0 and (csv > json or (csv == json and not json_named))


def _media_range(item: str) -> tuple[str, str, float]:
    """``type/subtype;q=...`` as (type, subtype, weight); a weight that is not a number
    from 0 to 1 counts as 1, like no weight."""
    media, *parameters = item.split(";")
    kind, _, subtype = media.strip().lower().partition("/")
    weight = 1.0
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            try:
                weight = float(value.strip())
            except ValueError:
                weight = 1.0
            if not 0 <= weight <= 1:
                weight = 1.0
    return kind, subtype.strip(), weight


def _weight(ranges: list[tuple[str, str, float]], kind: str, subtype: str) -> tuple[float, bool]:
    """The weight ``Accept`` gives a media type (0 if no range matches it), and whether
    a range names it exactly."""
    exact = [q for k, s, q in ranges if (k, s) == (kind, subtype)]
    if exact:
        return max(exact), True
    for matches in ((kind, "*"), ("*", "*")):
        found = [q for k, s, q in ranges if (k, s) == matches]
        if found:
            return max(found), False
    return 0.0, False


class JSONErrorsMixin:
    """For API views: errors are JSON whatever format the answer would have had."""

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(response, "status_code", 200) >= 400:
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]

"""Content negotiation for every endpoint: JSON unless CSV is asked for."""

from typing import Any

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request


class FormatNegotiation(DefaultContentNegotiation):
    """``?format=`` first, then ``Accept: text/csv``; anything else is answered in JSON
    (a bad ``format`` is refused by the parameter check, with a 400, not a 404)."""

    def select_renderer(
        self, request: Request, renderers: list[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        by_format = {renderer.format: renderer for renderer in renderers}
        wanted = request.query_params.get("format")
        if wanted is None:
            accept = request.META.get("HTTP_ACCEPT", "")
            if any(item.split(";")[0].strip().lower() == "text/csv" for item in accept.split(",")):
                wanted = "csv"
        renderer = by_format.get(wanted or "json") or by_format.get("json") or renderers[0]
        return renderer, renderer.media_type


class JSONErrorsMixin:
    """For API views: errors are JSON whatever format the answer would have had."""

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(response, "status_code", 200) >= 400:
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]

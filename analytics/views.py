"""The analytics endpoints (SPEC 6.1, 6.2, 6.4): parse, call ``count_taps``, shape.

Answers are written as JSON text once, cached, and sent as bytes (thousands of buckets go
through no serializer and no dictionary); the serializers in ``analytics.schema``
describe them for OpenAPI.
"""

from datetime import datetime
from typing import Any

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics import schema
from analytics.answers import Answer, cached, stored_answer_key
from analytics.filters import read_tap_query, seed_tap_query, team_zone
from analytics.periods import TooManyBuckets
from analytics.queries import TapQuery, compared_query, count_taps
from analytics.rendered import CountedJSON, Replayable, json_bytes, tap_counts_json
from analytics.throttling import RateLimitHeadersMixin, SpendWithAnswerLookupMixin, budget_of
from taps_project.negotiation import JSONErrorsMixin
from taps_project.parameters import OneValuePerParameterMixin
from teams.auth import TeamAuth
from teams.models import Team


class TapCountsCSVRenderer(BaseRenderer):
    """``period,taps``, or ``period,tag,taps`` for a grouped answer (SPEC 6.1)."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        if "series" in data:
            lines = ["period,tag,taps"]
            for series in data["series"]:
                lines += [
                    f"{row['period']},{series['tag']},{row['taps']}" for row in series["results"]
                ]
        else:
            lines = ["period,taps"]
            lines += [f"{row['period']},{row['taps']}" for row in data["results"]]
        return ("\r\n".join(lines) + "\r\n").encode()


def tap_counts_payload(
    team: Team, query: TapQuery, counted: dict[str, Any], as_of: datetime
) -> dict[str, Any]:
    """The answer of ``GET /v1/analytics/taps`` around a ``_counts_payload``."""
    return {
        "team": {"id": team.id, "name": team.name},
        "interval": str(query.interval),
        "tz": query.zone.key,
        "start": counted["start"],
        "end": counted["end"],
        "as_of": as_of.isoformat(timespec="microseconds"),
        **{name: value for name, value in counted.items() if name not in ("start", "end")},
    }


def _earliest(*instants: datetime | None) -> datetime | None:
    return min((instant for instant in instants if instant is not None), default=None)


class TapAnalyticsViewSet(
    SpendWithAnswerLookupMixin, JSONErrorsMixin, RateLimitHeadersMixin, viewsets.ViewSet
):
    """``GET /v1/analytics/taps``: the team's tap counts by interval."""

    renderer_classes = [JSONRenderer, TapCountsCSVRenderer]

    @extend_schema(**schema.TAP_COUNTS)
    def list(self, request: Request) -> HttpResponse | Response:
        auth: TeamAuth = request.auth
        team = auth.team
        wanted = read_tap_query(request.query_params, team)
        as_of = auth.read_at

        def compute() -> Answer:
            counts = count_taps(team, wanted.query, as_of=as_of)
            if not wanted.compare:
                return Answer(CountedJSON.of(counts), counts.valid_until)
            try:
                earlier = count_taps(
                    team,
                    compared_query(wanted.query, wanted.compare),
                    as_of=as_of,
                    series_tags=None if counts.series is None else [s.tag for s in counts.series],
                )
            except TooManyBuckets as error:
                raise TooManyBuckets(error.limit, compared=True) from None
            counted = CountedJSON.of(counts, (wanted.compare, CountedJSON.of(earlier)))
            return Answer(counted, _earliest(counts.valid_until, earlier.valid_until))

        question = repr(("taps", wanted.query, wanted.compare))
        answer = cached(
            team.id,
            question,
            as_of,
            compute,
            version=auth.team_write_version,
            first_look=self.spend_and_look,
        )
        counted: CountedJSON = answer.body
        if not isinstance(request.accepted_renderer, JSONRenderer):
            return Response(tap_counts_payload(team, wanted.query, counted.as_dict(), as_of))
        # JSON goes out as the cached bytes, with this request's own members around them.
        query = wanted.query
        head = json_bytes({"interval": str(query.interval), "tz": query.zone.key})[1:-1]
        content = tap_counts_json(team.id, team.name, head, counted, as_of)
        response = HttpResponse(content, content_type=JSONRenderer.media_type)
        stored_at = stored_answer_key(team.id, auth.team_write_version, question)
        if stored_at is not None and not query.tags:
            # A tag filter is checked against the team's tags on every request (a tag may
            # have moved since), which a replay would skip.
            response.replayable = Replayable(  # type: ignore[attr-defined]
                team.id,
                auth.team_write_version,
                team_zone(team).key,
                head,
                stored_at,
                answer.valid_until,
            )
        return response


class SeedTapAnalyticsView(
    OneValuePerParameterMixin,
    SpendWithAnswerLookupMixin,
    JSONErrorsMixin,
    RateLimitHeadersMixin,
    APIView,
):
    """``POST /v1/api/tap/analytics``: the seed service's request and envelope (SPEC 6.2)."""

    @extend_schema(**schema.SEED_TAP_ANALYTICS)
    def post(self, request: Request) -> HttpResponse:
        auth: TeamAuth = request.auth
        query = seed_tap_query(request.data)
        as_of = auth.read_at

        def compute() -> Answer:
            counts = count_taps(auth.team, query, as_of=as_of)
            data = [
                {"period": period.label, "total_count": period.taps} for period in counts.periods
            ]
            return Answer(json_bytes({"message": "Successful", "data": data}), counts.valid_until)

        content = cached(
            auth.team.id,
            repr(("seed", query)),
            as_of,
            compute,
            version=auth.team_write_version,
            first_look=self.spend_and_look,
        ).body
        return HttpResponse(content, content_type=JSONRenderer.media_type)


class UsageView(OneValuePerParameterMixin, RateLimitHeadersMixin, APIView):
    """``GET /v1/usage``: the presenting key's rate-limit budget, without spending it."""

    required_scope = None

    @extend_schema(**schema.USAGE)
    def get(self, request: Request) -> Response:
        budget = budget_of(request.auth)
        request.rate_limit_budget = budget  # type: ignore[attr-defined]
        return Response(
            {
                "limit": budget.limit,
                "remaining": budget.remaining,
                "reset": budget.reset,
                "window": budget.window,
            }
        )

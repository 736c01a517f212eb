"""The design the rollup replaces, served beside it for the benchmark's ratios: a plain
``Trunc`` + ``Sum`` over the raw taps table.

Same authentication, rate limit and parameter parsing as the real endpoints; the answer
lists the non-empty buckets only (no zero fill, no partial flags), as the seed did.
"""

from datetime import datetime
from typing import Any

from django.db.models import Sum
from django.db.models.functions import Trunc
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics.filters import read_tap_query, seed_tap_query
from analytics.models import Tap
from analytics.queries import TapQuery
from analytics.throttling import AnalyticsRateThrottle, RateLimitHeadersMixin
from teams.auth import TeamAuth
from teams.models import Team


def trunc_sum(team: Team, query: TapQuery) -> list[dict[str, Any]]:
    start, end = query.range()
    fields = ["bucket", "tag_id"] if query.group_by_tag else ["bucket"]
    taps = Tap.objects.filter(team=team, created_at__gte=start, created_at__lt=end)
    if query.tags:
        taps = taps.filter(tag_id__in=query.tags)
    if query.group_by_tag:
        # The service shows the `limit` busiest tags; so does the baseline, ranked by one
        # more aggregate over the raw taps (every tag's rows were 155,000 for a busy
        # month at bench-10M, and their rendering dominated the worker's memory).
        ranked = taps.values("tag_id").annotate(total=Sum("count")).order_by("-total", "tag_id")
        taps = taps.filter(tag_id__in=[row["tag_id"] for row in ranked[: query.limit]])
    rows = (
        taps.annotate(bucket=Trunc("created_at", str(query.interval), tzinfo=query.zone))
        .values(*fields)
        .annotate(taps=Sum("count"))
        .order_by(*fields)
    )
    return [_shown(row) for row in rows]


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    bucket: datetime = row.pop("bucket")
    return {"period": bucket.isoformat(), **row}


class BaselineTapsView(RateLimitHeadersMixin, APIView):
    """``GET /bench/baseline/taps``: the parameters of ``GET /v1/analytics/taps``."""

    throttle_classes = [AnalyticsRateThrottle]

    def get(self, request: Request) -> Response:
        auth: TeamAuth = request.auth
        wanted = read_tap_query(request.query_params, auth.team)
        return Response({"results": trunc_sum(auth.team, wanted.query)})


class BaselineSeedView(RateLimitHeadersMixin, APIView):
    """``POST /bench/baseline/seed``: the body of ``POST /v1/api/tap/analytics``."""

    throttle_classes = [AnalyticsRateThrottle]

    def post(self, request: Request) -> Response:
        auth: TeamAuth = request.auth
        return Response({"results": trunc_sum(auth.team, seed_tap_query(request.data))})

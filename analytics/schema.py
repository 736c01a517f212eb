"""OpenAPI descriptions of the analytics endpoints (drf-spectacular, SPEC 6.4).

The views answer with plain dictionaries; these serializers only describe them.
"""

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse
from rest_framework import serializers

from analytics.filters import SeedQuerySerializer
from analytics.periods import WEEKDAYS, Interval


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField()


class FieldErrorsSerializer(serializers.Serializer):
    """A 400: each offending parameter (or body field) with messages saying what to change."""

    parameter = serializers.ListField(child=serializers.CharField(), required=False)


class TeamSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class PeriodSerializer(serializers.Serializer):
    period = serializers.DateTimeField(help_text="The bucket's first instant, local offset.")
    taps = serializers.IntegerField(help_text="Sum of count over the bucket's taps in range.")
    partial = serializers.BooleanField(
        help_text="The range cuts this bucket, or it has not ended yet."
    )


class SeriesSerializer(serializers.Serializer):
    tag = serializers.IntegerField()
    total = serializers.IntegerField()
    results = PeriodSerializer(many=True)


class ComparedSerializer(serializers.Serializer):
    range = serializers.ChoiceField(choices=["previous", "year"])
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    total = serializers.IntegerField()
    results = PeriodSerializer(many=True, required=False)
    series = SeriesSerializer(many=True, required=False)


class TapCountsSerializer(serializers.Serializer):
    team = TeamSerializer()
    interval = serializers.ChoiceField(choices=[str(i) for i in Interval])
    tz = serializers.CharField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField(help_text="Exclusive: the first instant not counted.")
    as_of = serializers.DateTimeField(help_text="Every tap stored before this is counted.")
    total = serializers.IntegerField()
    results = PeriodSerializer(many=True, required=False, help_text="Without group_by.")
    series = SeriesSerializer(many=True, required=False, help_text="With group_by=tag.")
    compare = ComparedSerializer(required=False, help_text="With compare.")


class SeedPeriodSerializer(serializers.Serializer):
    period = serializers.DateTimeField()
    total_count = serializers.IntegerField()


class SeedAnswerSerializer(serializers.Serializer):
    message = serializers.CharField()
    data = SeedPeriodSerializer(many=True)


class UsageSerializer(serializers.Serializer):
    limit = serializers.IntegerField()
    remaining = serializers.IntegerField()
    reset = serializers.IntegerField(help_text="Seconds until a slot frees (0: none used).")
    window = serializers.IntegerField(help_text="The rolling window, in seconds.")


RATE_LIMIT_HEADERS = [
    OpenApiParameter(
        name, OpenApiTypes.INT, OpenApiParameter.HEADER, response=True, description=description
    )
    for name, description in [
        ("X-RateLimit-Limit", "Requests allowed per rolling window for this key."),
        ("X-RateLimit-Remaining", "Requests left in the current window."),
        ("X-RateLimit-Reset", "Seconds until a slot frees."),
    ]
]

_ERRORS: dict[int, Any] = {
    400: OpenApiResponse(FieldErrorsSerializer, "A parameter is wrong; its messages say why."),
    401: OpenApiResponse(DetailSerializer, "Missing, unknown, revoked or expired key."),
    403: OpenApiResponse(DetailSerializer, "The key's scope is not read."),
    429: OpenApiResponse(
        DetailSerializer, "Over the key's rate limit; Retry-After says when to retry."
    ),
}


def _query(name: str, description: str, **extra: Any) -> OpenApiParameter:
    return OpenApiParameter(name, location=OpenApiParameter.QUERY, description=description, **extra)


TAP_COUNTS: dict[str, Any] = {
    "operation_id": "tap_counts",
    "summary": "Tap counts by interval over a range",
    "parameters": [
        _query(
            "start",
            "A date YYYY-MM-DD (the start of that day in tz) or an ISO 8601 datetime with "
            "an offset.",
            type=str,
            required=True,
        ),
        _query(
            "end",
            "A date (inclusive: the whole day in tz counts) or a datetime (exclusive).",
            type=str,
            required=True,
        ),
        _query(
            "interval", "Bucket size.", type=str, enum=[str(i) for i in Interval], default="day"
        ),
        _query("tz", "IANA time zone of buckets and labels; default the team's zone.", type=str),
        _query(
            "tag",
            "Restrict to these tag uids of the team (repeat the parameter for several).",
            type=int,
            many=True,
            explode=True,
        ),
        _query("group_by", "tag: one series per tag.", type=str, enum=["tag"]),
        _query(
            "fill",
            "zero: every bucket, empty ones with 0; none: only non-empty buckets.",
            type=str,
            enum=["zero", "none"],
            default="zero",
        ),
        _query(
            "week_start", "First day of a week.", type=str, enum=list(WEEKDAYS), default="monday"
        ),
        _query(
            "compare",
            "previous: the range of the same length just before; year: a year earlier.",
            type=str,
            enum=["previous", "year"],
        ),
        _query("limit", "With group_by=tag: most series returned.", type=int, default=50),
        _query(
            "format",
            "json or csv (Accept: text/csv also selects CSV).",
            type=str,
            enum=["json", "csv"],
            default="json",
        ),
        *RATE_LIMIT_HEADERS,
    ],
    "responses": {
        (200, "application/json"): OpenApiResponse(TapCountsSerializer),
        (200, "text/csv"): OpenApiResponse(
            OpenApiTypes.STR, "period,taps (or period,tag,taps with group_by=tag)."
        ),
        **_ERRORS,
    },
    "examples": [
        OpenApiExample(
            "A week",
            value={
                "team": {"id": 1, "name": "Acme"},
                "interval": "week",
                "tz": "Europe/Paris",
                "start": "2023-01-01T00:00:00+01:00",
                "end": "2023-12-23T00:00:00+01:00",
                "as_of": "2023-12-24T09:30:00.123456+00:00",
                "total": 51234,
                "results": [{"period": "2022-12-26T00:00:00+01:00", "taps": 12, "partial": True}],
            },
            response_only=True,
        )
    ],
}

SEED_TAP_ANALYTICS: dict[str, Any] = {
    "operation_id": "seed_tap_analytics",
    "summary": "Tap counts in the seed service's request and envelope",
    "request": SeedQuerySerializer,
    "parameters": RATE_LIMIT_HEADERS,
    "responses": {
        200: SeedAnswerSerializer,
        413: OpenApiResponse(DetailSerializer, "The body is over 1 MiB."),
        415: OpenApiResponse(DetailSerializer, "The body is not JSON."),
        **_ERRORS,
    },
}

USAGE: dict[str, Any] = {
    "operation_id": "usage",
    "summary": "The presenting key's rate-limit budget, without spending any",
    "responses": {200: UsageSerializer, 401: _ERRORS[401]},
}

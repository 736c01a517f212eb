"""``POST /v1/taps``: teams post batches of taps with an ingest key (SPEC 6.3)."""

import re
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics.ingest import TapRow, TapsRefused, ingest_taps, owned_tags, tag_refusal
from analytics.loader import MAX_COUNT, RowError, parse_instant
from analytics.throttling import (
    IngestRateThrottle,
    RateLimitHeadersMixin,
    SpendBeforeScopeCheckMixin,
)
from taps_project.parameters import OneValuePerParameterMixin
from taps_project.parsers import TapBatchJSONParser
from teams.auth import TeamAuth
from teams.models import MAX_BIGINT, Scope

MAX_BATCH = 1000
# SPEC 6.3: a device clock may run a little fast; more than this is a bad clock.
MAX_FUTURE = timedelta(minutes=5)


_DIGITS = re.compile(r"[0-9]+")


class WholeNumberField(serializers.IntegerField):
    """A JSON integer, or a string of ASCII digits. DRF's field also takes 5.0, 1e3,
    "1_000", " 5" and other scripts' digits ("١"), reading each as some integer: for an
    id, a retry could then skip a tap as a duplicate of another id."""

    default_error_messages = {"invalid": "A whole number is required: digits only, such as 123."}

    def to_internal_value(self, data: Any) -> int:
        if not (type(data) is int or (isinstance(data, str) and _DIGITS.fullmatch(data))):
            self.fail("invalid")
        return int(super().to_internal_value(data))


class TapInSerializer(serializers.Serializer):
    id = WholeNumberField(min_value=1, max_value=MAX_BIGINT)
    tag = WholeNumberField(min_value=1, max_value=MAX_BIGINT)
    count = WholeNumberField(min_value=1, max_value=MAX_COUNT, default=1)
    at = serializers.CharField(required=False, trim_whitespace=True, max_length=64)

    def validate_at(self, value: str) -> datetime:
        try:
            instant = parse_instant(value)
        except RowError as error:
            raise serializers.ValidationError(str(error)) from None
        now: datetime = self.context["now"]
        if instant > now + MAX_FUTURE:
            raise serializers.ValidationError(
                f"{value} is more than 5 minutes in the future (server time "
                f"{now.isoformat()}); check the device clock."
            )
        return instant


class TapBatchSerializer(serializers.ListSerializer):
    child = TapInSerializer()


class StoredSerializer(serializers.Serializer):
    """The answer; only describes it for the OpenAPI schema."""

    accepted = serializers.IntegerField(help_text="Taps stored now.")
    duplicates = serializers.IntegerField(help_text="Ids the team had already: not counted.")


def positioned(errors: Any) -> Any:
    """DRF lists one error dict per item, empty for good items; answer with only the bad
    items, keyed by position, so a 1000-item batch names its bad item plainly."""
    if isinstance(errors, list):
        return {str(position): error for position, error in enumerate(errors) if error}
    return errors


# The id and tag of an item read alone, for the checks across items of a batch with
# other problems.
_ID = WholeNumberField(min_value=1, max_value=MAX_BIGINT)
_TAG = WholeNumberField(min_value=1, max_value=MAX_BIGINT)


def _valid(field: serializers.Field, value: Any) -> Any:
    try:
        return field.run_validation(value)
    except ValidationError:
        return None


def batch_problems(
    items: list[Any], team_id: int, now: datetime
) -> dict[str, dict[str, list[str]]]:
    """Every bad item of a refused batch, by position, with all that is wrong with it:
    its fields, an id an earlier item has, a tag that is not the team's, a tap from before
    the team got its tag. One answer then names everything to fix, not only the first
    kind of problem found."""
    problems: dict[str, dict[str, list[str]]] = {}
    first_position: dict[int, int] = {}
    tagged: list[tuple[int, int, datetime | None]] = []
    for position, item in enumerate(items):
        checked = TapInSerializer(data=item, context={"now": now})
        valid = checked.is_valid()
        fields = {name: [str(m) for m in messages] for name, messages in checked.errors.items()}
        if isinstance(item, dict):
            tap_id = _valid(_ID, item.get("id"))
            if tap_id is not None:
                earlier = first_position.setdefault(tap_id, position)
                if earlier != position:
                    message = f"Duplicate id {tap_id}: item {earlier} has the same id."
                    fields.setdefault("id", []).append(message)
            uid = _valid(_TAG, item.get("tag"))
            if uid is not None:
                at = checked.validated_data.get("at", now) if valid else None
                tagged.append((position, uid, at))
        if fields:
            problems[str(position)] = fields
    owned = owned_tags(team_id, sorted({uid for _, uid, _ in tagged}))
    for position, uid, at in tagged:
        refusal = tag_refusal(uid, at, owned)
        if refusal:
            fields = problems.setdefault(str(position), {})
            for name, messages in refusal.items():
                fields.setdefault(name, []).extend(messages)
    return problems


def _repeats_an_id(items: list[dict[str, Any]]) -> bool:
    return len({item["id"] for item in items}) < len(items)


def plainly_valid_rows(data: Any, now: datetime) -> list[TapRow] | None:
    """The batch's rows when every item is plainly valid (JSON integers in range, a good
    ``at``, no repeated id), else None: then the serializer, which accepts the same and
    more (numbers in strings) and words every error, decides. It costs a tenth of the
    serializer on a batch of 1000."""
    if not isinstance(data, list) or not 0 < len(data) <= MAX_BATCH:
        return None
    rows = []
    seen: set[int] = set()
    for position, item in enumerate(data):
        if not isinstance(item, dict):
            return None
        tap_id, tag, count = item.get("id"), item.get("tag"), item.get("count", 1)
        if not (
            type(tap_id) is int
            and type(tag) is int
            and type(count) is int
            and 1 <= tap_id <= MAX_BIGINT
            and 1 <= tag <= MAX_BIGINT
            and 1 <= count <= MAX_COUNT
            and tap_id not in seen
        ):
            return None
        seen.add(tap_id)
        at = item.get("at", now)
        if at is now:
            instant = now
        elif isinstance(at, str):
            try:
                instant = parse_instant(at.strip())
            except RowError:
                return None
            if instant > now + MAX_FUTURE:
                return None
        else:
            return None
        rows.append(TapRow(tap_id, tag, count, instant, line=position))
    return rows


class TapIngestView(
    OneValuePerParameterMixin, SpendBeforeScopeCheckMixin, RateLimitHeadersMixin, APIView
):
    """Store a JSON list of up to 1000 taps, all or nothing; 201 with what was new."""

    required_scope = Scope.INGEST
    throttle_classes = [IngestRateThrottle]
    parser_classes = [TapBatchJSONParser]

    @extend_schema(
        summary="Post taps (ingest key)",
        request=TapInSerializer(many=True),
        responses={
            201: StoredSerializer,
            400: OpenApiResponse(
                description='Bad items by position, nothing stored: {"3": {"count": ["..."]}}'
            ),
            413: OpenApiResponse(description="Body over 1 MiB."),
            415: OpenApiResponse(description="Body not JSON."),
            429: OpenApiResponse(
                description="Over the key's TAPS_INGEST_RATE_LIMIT; see Retry-After."
            ),
        },
    )
    def post(self, request: Request) -> Response:
        auth: TeamAuth = request.auth
        now = timezone.now()
        rows = plainly_valid_rows(request.data, now)
        if rows is None:
            batch = TapBatchSerializer(
                data=request.data, max_length=MAX_BATCH, context={"now": now}
            )
            if not batch.is_valid() or _repeats_an_id(batch.validated_data):
                if isinstance(request.data, list) and len(request.data) <= MAX_BATCH:
                    raise ValidationError(batch_problems(request.data, auth.team.pk, now))
                raise ValidationError(positioned(batch.errors))
            rows = [
                TapRow(item["id"], item["tag"], item["count"], item.get("at", now), line=position)
                for position, item in enumerate(batch.validated_data)
            ]
        try:
            result = ingest_taps(auth.team.pk, rows)
        except TapsRefused as refused:
            raise ValidationError(
                {str(position): fields for position, fields in refused.problems.items()}
            ) from None
        return Response(
            {"accepted": result.accepted, "duplicates": result.duplicates},
            status=status.HTTP_201_CREATED,
        )

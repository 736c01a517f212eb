"""Parameters of the analytics endpoints, validated into a ``TapQuery`` (SPEC 6.1, 6.2).

``TapCountFilter`` is a django-filter FilterSet used for what it is good at here:
declaring the parameters and validating each one in a form. The counting itself is in
``analytics.queries``. Every message names what to change.
"""

import functools
import re
import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

import django_filters
from django import forms
from django.http import QueryDict
from django.utils.datastructures import MultiValueDict
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from analytics.models import TeamRollup
from analytics.periods import EARLIEST, LATEST, WEEKDAYS, Interval
from analytics.queries import Compare, Endpoint, TapQuery, compared_query
from taps_project.parameters import repeated_parameters
from teams.models import Tag, Team, time_zone_names

MAX_TAG_UID = 2**63 - 1
MAX_TAGS = 1000
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?", re.ASCII
)


def parse_zone(text: str) -> zoneinfo.ZoneInfo:
    if text not in time_zone_names():
        raise forms.ValidationError(
            f"{text[:64]!r} is not an IANA time zone; use a name such as Europe/Paris, "
            "America/New_York or UTC."
        )
    return zoneinfo.ZoneInfo(text)


def parse_endpoint(text: str) -> Endpoint:
    """A date ``YYYY-MM-DD`` or an ISO 8601 datetime with an offset."""
    text = text.strip()
    example = "a date such as 2023-01-31 or a datetime with an offset such as 2023-01-31T09:00:00Z"
    if _DATE.fullmatch(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise forms.ValidationError(
                f"{text!r} is not a calendar date; give {example}."
            ) from None
        if not EARLIEST.date() <= day < LATEST.date():
            raise forms.ValidationError(_out_of_range(text))
        return Endpoint(day=day)
    if not _DATETIME.fullmatch(text):
        raise forms.ValidationError(f"{text[:64]!r} is not a date or datetime; give {example}.")
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise forms.ValidationError(f"{text!r} is not a valid datetime; give {example}.") from None
    if instant.tzinfo is None:
        raise forms.ValidationError(
            f"{text!r} has no offset; add one (2023-01-31T09:00:00+01:00 or ...Z), "
            "or give a plain date, which is read in tz."
        )
    # The year as written, as for a date: a date of 1900 read in +05:30 starts before
    # 1900 in UTC too.
    if not EARLIEST.year <= instant.year < LATEST.year:
        raise forms.ValidationError(_out_of_range(text))
    return Endpoint(instant=instant)


def _out_of_range(text: str) -> str:
    return f"{text!r} is outside the years {EARLIEST.year} to {LATEST.year - 1}."


def parse_tag(text: str) -> int:
    if (
        not text.isascii()
        or not text.isdigit()
        or len(text) > 19  # Python reads no more than 4,300 digits
        or not 1 <= int(text) <= MAX_TAG_UID
    ):
        raise forms.ValidationError(
            f"{text[:64]!r} is not a tag uid; give a positive whole number such as 1000009083."
        )
    return int(text)


class EndpointField(forms.Field):
    def to_python(self, value: Any) -> Endpoint | None:
        return parse_endpoint(str(value)) if value not in self.empty_values else None


class ZoneField(forms.Field):
    def to_python(self, value: Any) -> zoneinfo.ZoneInfo | None:
        return parse_zone(str(value).strip()) if value not in self.empty_values else None


class TagsField(forms.Field):
    widget = forms.MultipleHiddenInput

    def to_python(self, value: Any) -> tuple[int, ...]:
        values = value or []
        if len(values) > MAX_TAGS:
            raise forms.ValidationError(f"Give at most {MAX_TAGS} tags.")
        return tuple(dict.fromkeys(parse_tag(str(item).strip()) for item in values))


class EndpointFilter(django_filters.Filter):
    field_class = EndpointField


class ZoneFilter(django_filters.Filter):
    field_class = ZoneField


class TagsFilter(django_filters.Filter):
    field_class = TagsField


class LimitField(forms.IntegerField):
    """ASCII digits only: Django's field also reads 5.0, " 5", "1_0" and other scripts'
    digits as numbers."""

    def to_python(self, value: Any) -> int | None:
        if value not in self.empty_values and not re.fullmatch(r"[0-9]+", str(value)):
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        return super().to_python(value)


class LimitFilter(django_filters.Filter):
    field_class = LimitField


def _choices(values: Any) -> list[tuple[str, str]]:
    return [(str(value), str(value)) for value in values]


def _choice(name: str, values: Any, *, default: str | None = None) -> django_filters.Filter:
    listed = ", ".join(str(value) for value in values)
    tail = f" (default {default})" if default else ""
    return django_filters.ChoiceFilter(
        choices=_choices(values),
        error_messages={
            "invalid_choice": f"%(value)s is not a valid {name}; use one of {listed}{tail}."
        },
    )


def _endpoint(name: str) -> django_filters.Filter:
    return EndpointFilter(
        required=True,
        error_messages={
            "required": f"Give {name}: a date such as 2023-01-31 or a datetime with an "
            "offset such as 2023-01-31T09:00:00Z."
        },
    )


class TapCountFilter(django_filters.FilterSet):
    """``GET /v1/analytics/taps`` parameters; each field's errors are keyed by its name."""

    start = _endpoint("start")
    end = _endpoint("end")
    interval = _choice("interval", Interval, default="day")
    tz = ZoneFilter()
    tag = TagsFilter()
    group_by = _choice("group_by", ["tag"])
    fill = _choice("fill", ["zero", "none"], default="zero")
    week_start = _choice("week_start", WEEKDAYS, default="monday")
    compare = _choice("compare", ["previous", "year"])
    limit = LimitFilter(
        min_value=1,
        max_value=1000,
        error_messages={
            "invalid": "limit must be a whole number from 1 to 1000.",
            "min_value": "limit must be at least 1.",
            "max_value": "limit can be at most 1000.",
        },
    )
    format = _choice("format", ["json", "csv"], default="json")

    class Meta:
        # Only the form is used; the rows are read by analytics.queries.
        model = TeamRollup
        fields: list[str] = []


# The FilterSet builds its form class anew for every instance; build it once.
TapCountForm = TapCountFilter().get_form_class()
PARAMETERS = frozenset(TapCountFilter.base_filters)
REPEATABLE = frozenset({"tag"})
# An empty start or end gets the message of a missing one, which says what to give.
REQUIRED = frozenset({"start", "end"})


@dataclass(frozen=True)
class AnalyticsRequest:
    query: TapQuery
    compare: Compare | None
    format: str | None


def reject_unusable_names(params: QueryDict) -> None:
    """Unknown, repeated and empty parameters are refused rather than silently ignored:
    ``interval=`` is as likely a mistake as ``intreval=day``."""
    errors = repeated_parameters(params, REPEATABLE)
    for name, values in params.lists():
        shown = name[:64]
        if name not in PARAMETERS:
            errors[shown] = [
                f"Unknown parameter {shown!r}; the parameters are {', '.join(sorted(PARAMETERS))}."
            ]
        elif name not in errors and name not in REQUIRED and not all(v.strip() for v in values):
            errors[name] = [f"{name} is empty; give it a value, or leave it out."]
    if errors:
        raise ValidationError(errors)


@functools.lru_cache(maxsize=1024)
def _cleaned(params: tuple[tuple[str, tuple[str, ...]], ...]) -> dict[str, Any]:
    """The form's cleaned values, with the form's errors: they depend on the parameters
    alone, so they are remembered (invalid parameters raise, and are not).

    The form's own fields clean them, but no form is built: a form deep-copies every
    field, which was a tenth of a cached answer's CPU and, once answers were replayed, a
    sixth of a new answer's (py-spy at bench-1M). Cleaning keeps no state in a field.
    """
    data = MultiValueDict({name: list(values) for name, values in params})
    cleaned: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name, field in TapCountForm.base_fields.items():
        try:
            cleaned[name] = field.clean(field.widget.value_from_datadict(data, {}, name))
        except forms.ValidationError as error:
            errors[name] = error.messages
    if errors:
        raise ValidationError(errors)
    return cleaned


def read_tap_query(params: QueryDict, team: Team) -> AnalyticsRequest:
    """Validate ``GET /v1/analytics/taps`` parameters for this team."""
    reject_unusable_names(params)
    data = _cleaned(tuple((name, tuple(values)) for name, values in params.lists()))
    grouped = data["group_by"] == "tag"
    if data["limit"] is not None and not grouped:
        raise ValidationError({"limit": ["limit applies to group_by=tag only; remove it."]})
    if data["compare"] and data["format"] == "csv":
        raise ValidationError(
            {"compare": ["compare is not available in CSV; ask for JSON or remove compare."]}
        )
    interval = Interval(data["interval"] or Interval.DAY)
    if data["week_start"] and interval != Interval.WEEK:
        raise ValidationError(
            {"week_start": ["week_start applies to interval=week only; remove it."]}
        )
    query = TapQuery(
        start=data["start"],
        end=data["end"],
        zone=data["tz"] or team_zone(team),
        interval=interval,
        week_start=WEEKDAYS.index(data["week_start"] or "monday"),
        tags=owned_tags(team, data["tag"], field="tag"),
        group_by_tag=grouped,
        fill=data["fill"] != "none",
        limit=data["limit"] or 50,
    )
    check_range(query)
    if data["compare"]:
        check_compared_range(query, cast(Compare, data["compare"]))
    return AnalyticsRequest(query, data["compare"] or None, data["format"] or None)


def team_zone(team: Team) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(team.time_zone or "UTC")


def owned_tags(team: Team, tags: tuple[int, ...], *, field: str) -> tuple[int, ...]:
    """The tags, if the team owns every one; another team's tag and a tag that does not
    exist get the same answer, so a key learns nothing about other teams."""
    if not tags:
        return ()
    owned = set(Tag.objects.filter(team=team, uid__in=tags).values_list("uid", flat=True))
    missing = [tag for tag in tags if tag not in owned]
    if missing:
        listed = ", ".join(str(tag) for tag in missing[:10])
        raise ValidationError(
            {field: [f"Your team has no tag {listed}; list only your team's tag uids."]}
        )
    return tags


def check_range(query: TapQuery, *, end_field: str = "end") -> None:
    start, end = query.range()
    if end <= start:
        raise ValidationError(
            {end_field: ["The end must be after the start (an end date counts its whole day)."]}
        )


def check_compared_range(query: TapQuery, compare: Compare) -> None:
    """A range can be compared with one that holds no time: a year before a day a zone
    skipped (Pacific/Apia's 30 December 2011), or the day before it."""
    start, end = compared_query(query, compare).range()
    if end <= start:
        raise ValidationError(
            {
                "compare": [
                    f"The range to compare with ({compare}) holds no time in "
                    f"{query.zone.key}: its dates were skipped there. Choose a longer range "
                    "or leave out compare."
                ]
            }
        )


class SeedQuerySerializer(serializers.Serializer):
    """The seed's body: ``startDate``, ``endDate``, ``interval``, and optionally ``tz``.

    Other fields are ignored, as the seed ignored them.
    """

    startDate = serializers.CharField(  # noqa: N815 - the seed's field names
        max_length=64, error_messages={"required": "Give startDate, a date such as 2023-01-01."}
    )
    endDate = serializers.CharField(  # noqa: N815
        max_length=64, error_messages={"required": "Give endDate, a date such as 2023-12-22."}
    )
    interval = serializers.ChoiceField(
        choices=_choices(Interval),
        default=str(Interval.DAY),
        error_messages={
            "invalid_choice": '"{input}" is not a valid interval; use one of '
            + ", ".join(str(value) for value in Interval)
            + " (default day).",
            "null": "interval may not be null; use one of "
            + ", ".join(str(value) for value in Interval)
            + ", or leave it out for day.",
        },
    )
    tz = serializers.CharField(
        max_length=64,
        required=False,
        error_messages={
            "null": "tz may not be null; give an IANA time zone such as Europe/Paris, or "
            "leave it out for UTC.",
            "blank": "tz may not be empty; give an IANA time zone such as Europe/Paris, or "
            "leave it out for UTC.",
        },
    )

    def validate_startDate(self, value: str) -> Endpoint:  # noqa: N802
        return parse_endpoint(value)

    def validate_endDate(self, value: str) -> Endpoint:  # noqa: N802
        return parse_endpoint(value)

    def validate_tz(self, value: str) -> zoneinfo.ZoneInfo:
        return parse_zone(value)


def seed_tap_query(body: Any) -> TapQuery:
    """Validate the seed-compatible POST body: UTC unless ``tz`` is given, end date
    inclusive, only non-empty periods."""
    serializer = SeedQuerySerializer(data=body)
    serializer.is_valid(raise_exception=True)
    data = serializer.validated_data
    query = TapQuery(
        start=data["startDate"],
        end=data["endDate"],
        zone=data.get("tz") or zoneinfo.ZoneInfo("UTC"),
        interval=Interval(data["interval"]),
        fill=False,
    )
    check_range(query, end_field="endDate")
    return query

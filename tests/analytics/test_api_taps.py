"""``GET /v1/analytics/taps`` over HTTP (SPEC 6.1)."""

import csv
import io
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from analytics.ingest import TapRow, store_taps
from teams.keys import IssuedKey, create_key
from teams.models import Tag, Team
from tests.conftest import add_taps

URL = "/v1/analytics/taps"


def get(api: APIClient, key: IssuedKey, **params: object) -> object:
    return api.get(URL, params, HTTP_X_API_KEY=key.plaintext)


@pytest.fixture
def paris_taps(team: Team, tag: Tag) -> None:
    Tag.objects.create(uid=1000000002, team=team)
    add_taps(
        (1, tag.uid, 2, "2023-01-01T00:30:00+01:00"),
        (2, tag.uid, 3, "2023-01-02T23:59:59+01:00"),
        (3, 1000000002, 4, "2023-01-03T12:00:00+01:00"),
        (4, tag.uid, 100, "2023-01-04T00:00:00+01:00"),
    )


def test_answers_in_the_spec_shape(api: APIClient, read_key: IssuedKey, paris_taps: None) -> None:
    response = get(api, read_key, start="2023-01-01", end="2023-01-03")
    assert response.status_code == 200
    body = response.json()
    assert body["team"] == {"id": read_key.api_key.team.id, "name": "Acme"}
    assert body["interval"] == "day" and body["tz"] == "Europe/Paris"
    assert body["start"] == "2023-01-01T00:00:00+01:00"
    assert body["end"] == "2023-01-04T00:00:00+01:00"
    assert datetime.fromisoformat(body["as_of"]).tzinfo is not None
    assert body["total"] == 9
    assert body["results"] == [
        {"period": "2023-01-01T00:00:00+01:00", "taps": 2, "partial": False},
        {"period": "2023-01-02T00:00:00+01:00", "taps": 3, "partial": False},
        {"period": "2023-01-03T00:00:00+01:00", "taps": 4, "partial": False},
    ]


def test_a_cached_answer_keeps_the_shape_and_takes_the_new_as_of(
    api: APIClient, read_key: IssuedKey, paris_taps: None
) -> None:
    first = get(api, read_key, start="2023-01-01", end="2023-01-03")
    again = get(api, read_key, start="2023-01-01", end="2023-01-03")

    assert first["Content-Type"] == again["Content-Type"] == "application/json"
    assert list(again.json()) == [
        "team", "interval", "tz", "start", "end", "as_of", "total", "results"
    ]  # fmt: skip
    assert again.json()["as_of"] > first.json()["as_of"]
    assert {**again.json(), "as_of": None} == {**first.json(), "as_of": None}
    as_csv = get(api, read_key, start="2023-01-01", end="2023-01-03", format="csv")
    assert as_csv.content.decode().splitlines()[1:] == [
        f"{row['period']},{row['taps']}" for row in first.json()["results"]
    ]


def test_end_date_is_inclusive_and_end_datetime_exclusive(
    api: APIClient, read_key: IssuedKey, paris_taps: None
) -> None:
    assert get(api, read_key, start="2023-01-01", end="2023-01-04").json()["total"] == 109
    exclusive = get(api, read_key, start="2023-01-01", end="2023-01-04T00:00:00+01:00")
    assert exclusive.json()["total"] == 9


def test_tz_moves_the_day_boundaries(api: APIClient, read_key: IssuedKey, paris_taps: None) -> None:
    body = get(api, read_key, start="2022-12-31", end="2023-01-01", tz="UTC").json()
    assert body["results"] == [
        {"period": "2022-12-31T00:00:00+00:00", "taps": 2, "partial": False},
        {"period": "2023-01-01T00:00:00+00:00", "taps": 0, "partial": False},
    ]


def test_fill_none_lists_only_non_empty_buckets(
    api: APIClient, read_key: IssuedKey, paris_taps: None
) -> None:
    body = get(api, read_key, start="2022-12-01", end="2023-01-31", fill="none").json()
    assert [row["period"][:10] for row in body["results"]] == [
        "2023-01-01",
        "2023-01-02",
        "2023-01-03",
        "2023-01-04",
    ]


def test_tag_filter_repeats_and_restricts(
    api: APIClient, read_key: IssuedKey, tag: Tag, paris_taps: None
) -> None:
    one = get(api, read_key, start="2023-01-01", end="2023-01-04", tag=[tag.uid]).json()
    assert one["total"] == 105
    both = api.get(
        f"{URL}?start=2023-01-01&end=2023-01-04&tag={tag.uid}&tag=1000000002",
        HTTP_X_API_KEY=read_key.plaintext,
    ).json()
    assert both["total"] == 109


def test_group_by_tag_orders_series_by_total_and_limits(
    api: APIClient, read_key: IssuedKey, tag: Tag, paris_taps: None
) -> None:
    body = get(
        api, read_key, start="2023-01-01", end="2023-01-04", group_by="tag", interval="month"
    ).json()
    assert "results" not in body
    assert [(s["tag"], s["total"]) for s in body["series"]] == [(tag.uid, 105), (1000000002, 4)]
    assert body["total"] == 109
    limited = get(
        api, read_key, start="2023-01-01", end="2023-01-04", group_by="tag", limit=1
    ).json()
    assert [s["tag"] for s in limited["series"]] == [tag.uid]


def test_group_by_tag_lists_a_requested_tag_even_when_empty(
    api: APIClient, read_key: IssuedKey, team: Team, paris_taps: None
) -> None:
    Tag.objects.create(uid=77, team=team)
    body = get(api, read_key, start="2023-01-01", end="2023-01-02", group_by="tag", tag=[77]).json()
    assert body["series"] == [
        {
            "tag": 77,
            "total": 0,
            "results": [
                {"period": "2023-01-01T00:00:00+01:00", "taps": 0, "partial": False},
                {"period": "2023-01-02T00:00:00+01:00", "taps": 0, "partial": False},
            ],
        }
    ]


def test_csv_by_format_or_accept(api: APIClient, read_key: IssuedKey, paris_taps: None) -> None:
    by_param = get(api, read_key, start="2023-01-01", end="2023-01-02", format="csv")
    by_accept = api.get(
        URL,
        {"start": "2023-01-01", "end": "2023-01-02"},
        HTTP_X_API_KEY=read_key.plaintext,
        HTTP_ACCEPT="text/csv",
    )
    for response in (by_param, by_accept):
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/csv")
        assert list(csv.reader(io.StringIO(response.content.decode()))) == [
            ["period", "taps"],
            ["2023-01-01T00:00:00+01:00", "2"],
            ["2023-01-02T00:00:00+01:00", "3"],
        ]


def test_csv_by_tag_has_a_tag_column(api: APIClient, read_key: IssuedKey, paris_taps: None) -> None:
    response = get(
        api, read_key, start="2023-01-03", end="2023-01-03", group_by="tag", format="csv"
    )
    assert response.content.decode().splitlines() == [
        "period,tag,taps",
        "2023-01-03T00:00:00+01:00,1000000002,4",
    ]


def test_errors_stay_json_when_csv_was_asked(api: APIClient, read_key: IssuedKey) -> None:
    response = get(api, read_key, start="2023-13-01", end="2023-01-02", format="csv")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert "start" in response.json()


def test_compare_previous_adds_the_range_before(
    api: APIClient, read_key: IssuedKey, paris_taps: None
) -> None:
    body = get(
        api, read_key, start="2023-01-03", end="2023-01-04", compare="previous", fill="zero"
    ).json()
    assert body["total"] == 104
    assert body["compare"] == {
        "range": "previous",
        "start": "2023-01-01T00:00:00+01:00",
        "end": "2023-01-03T00:00:00+01:00",
        "total": 5,
        "results": [
            {"period": "2023-01-01T00:00:00+01:00", "taps": 2, "partial": False},
            {"period": "2023-01-02T00:00:00+01:00", "taps": 3, "partial": False},
        ],
    }


def test_compare_year_by_tag_uses_the_same_series(
    api: APIClient, read_key: IssuedKey, tag: Tag, paris_taps: None
) -> None:
    add_taps((10, tag.uid, 6, "2022-01-03T10:00:00+01:00"))
    body = get(
        api,
        read_key,
        start="2023-01-03",
        end="2023-01-04",
        group_by="tag",
        compare="year",
        interval="month",
    ).json()
    assert [s["tag"] for s in body["series"]] == [tag.uid, 1000000002]
    assert [(s["tag"], s["total"]) for s in body["compare"]["series"]] == [
        (tag.uid, 6),
        (1000000002, 0),
    ]


def test_a_tap_stored_is_counted_by_the_next_query(
    api: APIClient, read_key: IssuedKey, tag: Tag
) -> None:
    before = get(api, read_key, start="2024-01-01", end="2024-01-01").json()["total"]
    add_taps((1, tag.uid, 3, "2024-01-01T12:00:00Z"))
    after = get(api, read_key, start="2024-01-01", end="2024-01-01").json()["total"]
    assert (before, after) == (0, 3)


# Tenant isolation: no parameter combination shows another team's taps.

OWN_TAGS = (101, 102)
FOREIGN_TAGS = (201, 202)
params = st.fixed_dictionaries(
    {
        "start": st.sampled_from(["2024-01-01", "2023-12-31T23:00:00Z", "2024-03-01"]),
        "end": st.sampled_from(["2024-12-31", "2024-06-30T12:00:00+02:00"]),
    },
    optional={
        "interval": st.sampled_from(["hour", "day", "week", "month", "quarter", "year"]),
        "tz": st.sampled_from(["UTC", "Asia/Kolkata", "America/New_York"]),
        "tag": st.lists(st.sampled_from(OWN_TAGS + FOREIGN_TAGS + (999,)), min_size=1, max_size=3),
        "group_by": st.just("tag"),
        "fill": st.sampled_from(["zero", "none"]),
        "compare": st.sampled_from(["previous", "year"]),
    },
)


class Rollback(Exception):
    pass


@pytest.mark.django_db
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=params)
def test_no_key_ever_sees_another_teams_taps(query: dict) -> None:
    # Own taps count 1; the other team's taps count 1000, in the same instants, so any
    # leak shows in every total.
    try:
        with transaction.atomic():
            own, other = Team.objects.create(name="Own"), Team.objects.create(name="Other")
            for uid in OWN_TAGS:
                Tag.objects.create(uid=uid, team=own)
            for uid in FOREIGN_TAGS:
                Tag.objects.create(uid=uid, team=other)
            instants = [datetime(2024, month, 15, 8, tzinfo=UTC) for month in range(1, 13)]
            rows = [TapRow(i, OWN_TAGS[i % 2], 1, at) for i, at in enumerate(instants, 1)]
            rows += [TapRow(i, FOREIGN_TAGS[i % 2], 1000, at) for i, at in enumerate(instants, 1)]
            store_taps(rows)
            key = create_key(own, name="prop")
            response = APIClient().get(URL, query, HTTP_X_API_KEY=key.plaintext)
            raise Rollback(response)
    except Rollback as rollback:
        response = rollback.args[0]
    asked_tags = set(query.get("tag", []))
    if asked_tags - set(OWN_TAGS):
        assert response.status_code == 400
        # A foreign tag and a tag that exists nowhere get the same answer.
        assert list(response.json()) == ["tag"]
        assert response.json()["tag"][0].startswith("Your team has no tag ")
        return
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["total"] < 1000
    assert {series["tag"] for series in body.get("series", [])} <= set(OWN_TAGS)
    if "compare" in body:
        assert body["compare"]["total"] < 1000
        assert {series["tag"] for series in body["compare"].get("series", [])} <= set(OWN_TAGS)


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("text/csv", "text/csv"),
        ("text/csv, */*", "text/csv"),
        ("text/csv;q=0.5, */*;q=0.1", "text/csv"),
        ("application/json;q=0.4, text/csv;q=0.9", "text/csv"),
        ("TEXT/CSV; charset=utf-8", "text/csv"),
        ("application/json, text/csv;q=0", "application/json"),
        ("text/csv;q=0.5, application/json", "application/json"),
        ("text/csv;q=0.5, */*", "application/json"),
        ("application/json, text/csv", "application/json"),
        ("text/*", "application/json"),
        ("text/html,application/xhtml+xml,*/*;q=0.8", "application/json"),
        ("text/csv;q=nonsense", "text/csv"),
        ("", "application/json"),
    ],
)
def test_accept_chooses_csv_only_when_it_ranks_csv_above_json(
    api: APIClient, read_key: IssuedKey, accept: str, content_type: str
) -> None:
    response = api.get(
        URL,
        {"start": "2023-01-01", "end": "2023-01-02"},
        HTTP_X_API_KEY=read_key.plaintext,
        HTTP_ACCEPT=accept,
    )
    assert response.status_code == 200
    assert response["Content-Type"].split(";")[0] == content_type


def test_a_compared_range_over_the_bucket_cap_is_a_400_naming_compare(
    api: APIClient, read_key: IssuedKey, settings: Any
) -> None:
    # 365 days from 1 February 2025; the same range a year earlier holds 29 February 2024.
    settings.TAPS_MAX_BUCKETS = 365
    asked = {"start": "2025-02-01", "end": "2026-01-31"}

    alone = get(api, read_key, **asked)
    compared = get(api, read_key, **asked, compare="year")
    previous = get(api, read_key, **asked, compare="previous")

    assert alone.status_code == previous.status_code == 200
    assert compared.status_code == 400
    assert list(compared.json()) == ["compare"]
    assert "leave out compare" in compared.json()["compare"][0]


@pytest.mark.parametrize(
    ("asked", "compare"),
    [
        # Samoa skipped 30 December 2011; Kiribati's Line Islands 31 December 1994.
        ({"start": "2012-12-30", "end": "2012-12-30", "tz": "Pacific/Apia"}, "year"),
        ({"start": "2011-12-31", "end": "2011-12-31", "tz": "Pacific/Apia"}, "previous"),
        ({"start": "1995-01-01", "end": "1995-01-01", "tz": "Pacific/Kiritimati"}, "previous"),
        (
            {
                "start": "1995-12-31",
                "end": "1995-12-31",
                "tz": "Pacific/Kiritimati",
                "interval": "year",
                "group_by": "tag",
            },
            "year",
        ),
    ],
)
def test_a_compared_range_a_zone_skipped_is_a_400_naming_compare(
    api: APIClient, read_key: IssuedKey, asked: dict[str, str], compare: str
) -> None:
    alone = get(api, read_key, **asked)
    compared = get(api, read_key, **asked, compare=compare)

    assert alone.status_code == 200
    assert compared.status_code == 400
    assert list(compared.json()) == ["compare"]
    assert "skipped" in compared.json()["compare"][0]


@pytest.mark.parametrize(
    ("start", "end", "status"),
    [
        ("1900-01-01T00:00:00+05:00", "1900-01-03", 200),  # 1899 in UTC, 1900 as written
        ("1899-12-31T23:00:00-05:00", "1900-01-03", 400),  # 1900 in UTC, 1899 as written
        ("2999-12-30", "2999-12-31T23:00:00-12:00", 200),  # 3000 in UTC, 2999 as written
        ("2999-12-30", "3000-01-01T00:00:00+14:00", 400),
    ],
)
def test_the_years_allowed_are_read_as_written_like_dates(
    api: APIClient, read_key: IssuedKey, start: str, end: str, status: int
) -> None:
    response = get(api, read_key, start=start, end=end)

    assert response.status_code == status, response.content[:300]

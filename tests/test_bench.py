"""The benchmark harness (bench/): the baseline endpoint it serves beside the real one."""

import pytest
from django.http import QueryDict
from django.test import Client

from analytics.filters import read_tap_query
from bench.baseline import trunc_sum
from teams.keys import IssuedKey
from teams.models import Tag
from tests.conftest import add_taps


@pytest.mark.urls("bench.urls")
def test_the_baseline_counts_what_the_service_counts(
    client: Client, read_key: IssuedKey, tag: Tag
) -> None:
    add_taps(
        (1, tag.uid, 2, "2023-01-01T10:00:00Z"),
        (2, tag.uid, 3, "2023-01-03T20:00:00Z"),  # 4 January in Kolkata
        (3, tag.uid, 4, "2023-03-26T00:30:00Z"),
    )
    query = "interval=week&start=2023-01-01&end=2023-12-31&tz=Asia/Kolkata"
    headers = {"HTTP_X_API_KEY": read_key.plaintext}
    service = client.get(f"/v1/analytics/taps?{query}", **headers).json()
    baseline = client.get(f"/bench/baseline/taps?{query}", **headers).json()
    assert baseline["results"] == [
        {"period": row["period"], "taps": row["taps"]} for row in service["results"] if row["taps"]
    ]
    seed = client.post(
        "/bench/baseline/seed",
        {"startDate": "2023-01-01", "endDate": "2023-12-31", "interval": "month"},
        content_type="application/json",
        **headers,
    )
    assert seed.json()["results"] == [
        {"period": "2023-01-01T00:00:00+00:00", "taps": 5},
        {"period": "2023-03-01T00:00:00+00:00", "taps": 4},
    ]


def test_the_baseline_groups_by_tag(read_key: IssuedKey, tag: Tag) -> None:
    other = Tag.objects.create(uid=1000009084, team=tag.team)
    add_taps((1, tag.uid, 2, "2023-01-01T10:00:00Z"), (2, other.uid, 3, "2023-01-01T11:00:00Z"))

    wanted = read_tap_query(
        QueryDict("start=2023-01-01&end=2023-01-01&tz=UTC&group_by=tag"), tag.team
    )
    assert trunc_sum(tag.team, wanted.query) == [
        {"period": "2023-01-01T00:00:00+00:00", "tag_id": tag.uid, "taps": 2},
        {"period": "2023-01-01T00:00:00+00:00", "tag_id": other.uid, "taps": 3},
    ]

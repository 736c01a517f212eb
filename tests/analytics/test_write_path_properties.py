"""Property: whatever batches arrive, in whatever order and overlap, the stored taps are
exactly the first occurrence of each (team, id), and the rollup and the day levels equal
their sums."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.ingest import TapRow, store_taps
from analytics.models import ROLLUP_STEP, TagDay, Tap, TeamRollup
from analytics.rollup import day_start, find_rollup_differences, unpack_tag_cells
from teams.models import Tag, Team

EPOCH = datetime(2024, 3, 30, 23, 0, tzinfo=UTC)
TAG_UIDS = (11, 12, 21)

instants = st.integers(min_value=0, max_value=4 * 3600 * 1000).map(
    lambda ms: EPOCH + timedelta(milliseconds=ms)
)
tap_rows = st.builds(
    TapRow,
    tap_id=st.integers(min_value=1, max_value=40),
    tag_uid=st.sampled_from(TAG_UIDS),
    count=st.integers(min_value=1, max_value=5),
    at=instants,
)
batches = st.lists(st.lists(tap_rows, max_size=30), min_size=1, max_size=6)


def bucket_of(at: datetime) -> datetime:
    return at.replace(minute=at.minute - at.minute % 15, second=0, microsecond=0)


def tag_day_sums() -> dict[tuple[int, datetime], int]:
    sums = {}
    for day in TagDay.objects.all():
        tags, taps, quarters = unpack_tag_cells(bytes(day.tags) + bytes(day.cells))
        for tag, count, quarter in zip(
            tags.tolist(), taps.tolist(), quarters.tolist(), strict=True
        ):
            sums[tag, day_start(day.day) + quarter * ROLLUP_STEP] = count
    return sums


class Rollback(Exception):
    pass


@pytest.mark.django_db
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=batches)
def test_stored_taps_and_rollups_match_a_plain_python_reference(
    batches: list[list[TapRow]],
) -> None:
    try:
        with transaction.atomic():
            first, second = Team.objects.create(name="A"), Team.objects.create(name="B")
            team_of = {11: first.id, 12: first.id, 21: second.id}
            for uid, team_id in team_of.items():
                Tag.objects.create(uid=uid, team_id=team_id)

            expected: dict[tuple[int, int], TapRow] = {}
            for batch in batches:
                store_taps(batch)
                for row in batch:
                    expected.setdefault((team_of[row.tag_uid], row.tap_id), row)

            stored = {
                (tap.team_id, tap.tap_id): (tap.tag_id, tap.count, tap.created_at)
                for tap in Tap.objects.all()
            }
            assert stored == {key: (r.tag_uid, r.count, r.at) for key, r in expected.items()}
            team_sums: dict[tuple[int, datetime], int] = {}
            tag_sums: dict[tuple[int, datetime], int] = {}
            for (team_id, _), row in expected.items():
                team_key, tag_key = (team_id, bucket_of(row.at)), (row.tag_uid, bucket_of(row.at))
                team_sums[team_key] = team_sums.get(team_key, 0) + row.count
                tag_sums[tag_key] = tag_sums.get(tag_key, 0) + row.count
            assert {(r.team_id, r.bucket): r.taps for r in TeamRollup.objects.all()} == team_sums
            assert tag_day_sums() == tag_sums
            assert find_rollup_differences()[0] == 0
            raise Rollback
    except Rollback:
        pass

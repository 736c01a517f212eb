import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from analytics.ingest import StoreResult, TapRow, store_taps
from analytics.models import Tap, TeamRollup
from analytics.rollup import find_rollup_differences
from teams.models import Tag, Team


def rows(first_id: int, count: int, uid: int) -> list[TapRow]:
    start = datetime(2024, 3, 1, tzinfo=UTC)
    return [
        TapRow(tap_id, uid, 1 + tap_id % 3, start + timedelta(minutes=7 * tap_id))
        for tap_id in range(first_id, first_id + count)
    ]


@pytest.mark.django_db
def test_store_taps_reports_accepted_and_duplicates(tag: Tag) -> None:
    first = store_taps(rows(1, 10, tag.uid))
    second = store_taps(rows(6, 10, tag.uid))

    assert first == StoreResult(accepted=10, duplicates=0)
    assert second == StoreResult(accepted=5, duplicates=5)
    assert Tap.objects.count() == 15


@pytest.mark.django_db
def test_an_id_repeated_in_one_batch_counts_once(tag: Tag) -> None:
    result = store_taps(rows(1, 3, tag.uid) + rows(2, 1, tag.uid))

    assert result == StoreResult(accepted=3, duplicates=1)
    assert find_rollup_differences()[0] == 0


@pytest.mark.django_db
def test_a_tap_is_stamped_with_its_tags_team(tag: Tag, team: Team, other_team: Team) -> None:
    Tag.objects.create(uid=77, team=other_team)

    store_taps(rows(1, 2, tag.uid) + rows(1, 1, 77))

    assert sorted(Tap.objects.values_list("team_id", "tap_id")) == sorted(
        [(team.id, 1), (team.id, 2), (other_team.id, 1)]
    )


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_of_the_same_ids_store_each_tap_once(tag: Tag) -> None:
    batch = rows(1, 2000, tag.uid)
    results: list[StoreResult] = []
    barrier = threading.Barrier(4)

    def write() -> None:
        try:
            barrier.wait()
            results.append(store_taps(batch))
        finally:
            connection.close()

    writers = [threading.Thread(target=write) for _ in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()

    assert len(results) == 4
    assert sum(result.accepted for result in results) == 2000
    assert sum(result.duplicates for result in results) == 3 * 2000
    assert sum(TeamRollup.objects.values_list("taps", flat=True)) == sum(r.count for r in batch)
    assert find_rollup_differences()[0] == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_of_one_team_and_day_all_reach_its_day_levels(tag: Tag) -> None:
    # The tag day level adds each batch to the day's stored cells: a writer that read
    # them before the previous writer of the team committed would drop that writer's taps.
    start = datetime(2024, 3, 1, tzinfo=UTC)
    batches = [
        [
            TapRow(1000 * writer + n + 1, tag.uid, 1, start + timedelta(minutes=5 * n))
            for n in range(150)
        ]
        for writer in range(4)
    ]
    barrier = threading.Barrier(4)

    def write(batch: list[TapRow]) -> None:
        try:
            barrier.wait()
            store_taps(batch)
        finally:
            connection.close()

    writers = [threading.Thread(target=write, args=(batch,)) for batch in batches]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()

    assert Tap.objects.count() == 4 * 150
    assert find_rollup_differences() == (0, [])


@pytest.mark.django_db(transaction=True)
def test_the_staging_table_is_empty_after_each_commit(tag: Tag) -> None:
    # A stage emptied by DELETE is never vacuumed: a pooled connection's stage would grow
    # with every batch it ever staged. PostgreSQL truncates it at commit instead.
    if connection.vendor != "postgresql":
        pytest.skip("SQLite reuses the pages of deleted rows")
    for first_id in range(1, 2001, 500):
        store_taps(rows(first_id, 500, tag.uid))

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_relation_size('pg_temp.tap_stage')")
        (size,) = cursor.fetchone()

    assert size == 0
    assert Tap.objects.count() == 2000


@pytest.mark.django_db
@pytest.mark.parametrize(
    "start",
    [
        datetime(1969, 12, 31, 23, 50, tzinfo=UTC),
        datetime(1960, 5, 5, 12, 34, 56, 789000, tzinfo=UTC),
        datetime(2024, 3, 31, 1, 59, 59, 999999, tzinfo=UTC),
        datetime(2999, 12, 28, 23, 59, 59, 999999, tzinfo=UTC),
    ],
)
def test_day_levels_added_to_or_rebuilt_match_the_raw_taps(tag: Tag, start: datetime) -> None:
    # A tag or minute day is added to when it holds many taps per stored cell (the dense
    # batches), and rebuilt from its raw taps when its cells are nearly as many as its
    # taps (the sparse ones, across midnight).
    def batch(first_id: int, size: int, count: int, step: timedelta) -> None:
        store_taps([TapRow(first_id + n, tag.uid, count, start + n * step) for n in range(size)])

    batch(1, 300, 2, timedelta(seconds=1))
    batch(1000, 5, 1, timedelta(seconds=7))
    batch(2000, 200, 1, timedelta(minutes=17))
    batch(3000, 3, 1, timedelta(seconds=1))
    batch(4000, 20, 1, timedelta(minutes=31))

    assert find_rollup_differences() == (0, [])

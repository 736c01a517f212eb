import io
from datetime import UTC, date, datetime

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from analytics.models import MinuteDay, TagDay, Tap, TeamDay, TeamRollup
from analytics.rollup import (
    find_rollup_differences,
    pack_minutes,
    pack_quarters,
    pack_tag_cells,
    refresh_all_day_levels,
    split_tag_day,
    unpack_minutes,
    unpack_quarters,
    unpack_tag_cells,
    unpack_tag_directory,
)
from teams.models import Tag, Team
from tests.conftest import add_taps


def verify(*args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command("verify_rollup", *args, stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


@pytest.fixture
def stored(tag: Tag) -> Tag:
    add_taps(
        (1, tag.uid, 1, "2024-02-29T23:59:59.999Z"),
        (2, tag.uid, 2, "2024-03-01T00:00:00Z"),
        (3, tag.uid, 4, "2024-03-01T00:14:59Z"),
        (4, tag.uid, 8, "2024-03-01T00:15:00+00:00"),
        (5, tag.uid, 16, "2024-03-01T05:44:00+05:30"),
    )
    return tag


def test_taps_land_in_their_15_minute_buckets(stored: Tag) -> None:
    buckets = dict(TeamRollup.objects.values_list("bucket", "taps"))

    assert buckets == {
        datetime(2024, 2, 29, 23, 45, tzinfo=UTC): 1,
        datetime(2024, 3, 1, 0, 0, tzinfo=UTC): 2 + 4 + 16,
        datetime(2024, 3, 1, 0, 15, tzinfo=UTC): 8,
    }


def test_storing_the_same_ids_again_counts_nothing(stored: Tag) -> None:
    add_taps(
        (1, stored.uid, 1, "2024-02-29T23:59:59.999Z"), (6, stored.uid, 32, "2024-03-02T00:00:00Z")
    )

    assert sum(TeamRollup.objects.values_list("taps", flat=True)) == 1 + 2 + 4 + 8 + 16 + 32
    assert Tap.objects.count() == 6


def test_verify_rollup_is_clean_after_the_write_path(stored: Tag) -> None:
    assert "rollups match the raw taps for every team" in verify()


def test_verify_rollup_reports_a_drifted_bucket_and_rebuild_mends_it(
    stored: Tag, team: Team
) -> None:
    TeamRollup.objects.filter(bucket=datetime(2024, 3, 1, 0, 15, tzinfo=UTC)).update(taps=9)
    TagDay.objects.filter(day=date(2024, 2, 29)).delete()

    with pytest.raises(CommandError) as failure:
        verify("--team", str(team.id))

    assert failure.value.returncode == 1
    # the drifted 15-minute row also disagrees with its day level; the tag day is missing
    assert "3 rollup buckets differ" in str(failure.value)
    call_command("rebuild_rollup", "--team", str(team.id), stdout=io.StringIO())
    total, _ = find_rollup_differences()
    assert total == 0


def test_the_day_level_holds_each_utc_day_by_quarter_hour(stored: Tag) -> None:
    days = {
        day: (taps, unpack_quarters(quarters))
        for day, taps, quarters in TeamDay.objects.values_list("day", "taps", "quarters")
    }

    assert days.keys() == {date(2024, 2, 29), date(2024, 3, 1)}
    assert days[date(2024, 2, 29)][0] == 1
    assert days[date(2024, 2, 29)][1][95] == 1
    assert days[date(2024, 3, 1)][0] == 2 + 4 + 16 + 8
    assert days[date(2024, 3, 1)][1][:3] == (2 + 4 + 16, 8, 0)


def test_the_tag_day_level_holds_each_tags_quarter_hours(stored: Tag, team: Team) -> None:
    Tag.objects.create(uid=9, team=team)
    add_taps((6, 9, 64, "2024-03-01T23:59:00Z"))
    day = TagDay.objects.get(day=date(2024, 3, 1))
    tags, taps, quarters = unpack_tag_cells(bytes(day.tags) + bytes(day.cells))

    # Ordered by tag, then quarter hour.
    assert list(zip(tags.tolist(), quarters.tolist(), taps.tolist(), strict=True)) == [
        (9, 95, 64),
        (stored.uid, 0, 2 + 4 + 16),
        (stored.uid, 1, 8),
    ]
    # Each tag's taps over the day, and the end of its cells.
    directory = [column.tolist() for column in unpack_tag_directory(day.tags)]
    assert directory == [[9, stored.uid], [64, 2 + 4 + 16 + 8], [1, 3]]
    assert len(day.cells) == 3 * (8 + 1)


def test_the_minute_day_level_holds_each_utc_minute_with_taps(stored: Tag) -> None:
    days = {
        day: [tuple(column.tolist()) for column in unpack_minutes(minutes)] + [taps]
        for day, taps, minutes in MinuteDay.objects.values_list("day", "taps", "minutes")
    }

    # (minutes, taps per minute, the day's taps); 05:44+05:30 is 00:14 UTC.
    assert days == {
        date(2024, 2, 29): [(1439,), (1,), 1],
        date(2024, 3, 1): [(0, 14, 15), (2, 4 + 16, 8), 30],
    }


def test_postgresql_compresses_a_busy_days_cells_with_lz4(team: Team) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SQLite does not compress values")
    # 400 taps on 400 tags and minutes: both packed days are past PostgreSQL's 2 kB
    # threshold for compressing a value.
    uids = range(10_000, 10_400)
    Tag.objects.bulk_create(Tag(uid=uid, team=team) for uid in uids)
    add_taps(
        *(
            (n, uid, 1, f"2024-03-01T{n // 60:02d}:{n % 60:02d}:00Z")
            for n, uid in enumerate(uids, 1)
        )
    )

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_column_compression(t.tags), pg_column_compression(t.cells), "
            "pg_column_compression(m.minutes) "
            "FROM analytics_tagday t JOIN analytics_minuteday m USING (team_id, day)"
        )
        assert cursor.fetchall() == [("lz4", "lz4", "lz4")]


def test_a_day_packed_without_its_directory_is_rebuilt(stored: Tag, team: Team) -> None:
    Tag.objects.create(uid=9, team=team)
    add_taps((6, 9, 64, "2024-03-01T23:59:00Z"))
    day = TagDay.objects.filter(day=date(2024, 3, 1))
    day.update(
        tags=bytes(4), cells=_cells_as_packed_before_0012([(9, 95, 64), (stored.uid, 0, 22)])
    )
    assert find_rollup_differences()[0] == 1

    refresh_all_day_levels()

    assert find_rollup_differences() == (0, [])
    assert unpack_tag_directory(day.get().tags)[0].tolist() == [9, stored.uid]


@pytest.mark.django_db(transaction=True)
def test_migration_0012_repacks_every_tag_day(tag: Tag) -> None:
    add_taps((1, tag.uid, 2, "2024-03-01T00:00:00Z"))
    try:
        call_command("migrate", "analytics", "0011", verbosity=0)
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE analytics_tagday SET cells = %s",
                [_cells_as_packed_before_0012([(tag.uid, 0, 2)])],
            )
            # A day whose taps are gone keeps empty rows.
            cursor.execute(
                "INSERT INTO analytics_teamday (team_id, day, taps, quarters) "
                "VALUES (%s, %s, 0, %s)",
                [tag.team_id, date(2024, 3, 2), bytes(768)],
            )
            cursor.execute(
                "INSERT INTO analytics_tagday (team_id, day, taps, cells) VALUES (%s, %s, 0, %s)",
                [tag.team_id, date(2024, 3, 2), b""],
            )
    finally:
        call_command("migrate", "analytics", verbosity=0)

    assert find_rollup_differences() == (0, [])
    repacked = TagDay.objects.get(day=date(2024, 3, 1))
    assert unpack_tag_directory(repacked.tags)[1].tolist() == [2]
    emptied = TagDay.objects.get(day=date(2024, 3, 2))
    assert (emptied.taps, bytes(emptied.tags), bytes(emptied.cells)) == (0, bytes(4), b"")


def _cells_as_packed_before_0012(cells: list[tuple[int, int, int]]) -> bytes:
    """(tag, quarter, taps) cells packed in the given order as releases before the
    directory wrote them: every cell's tag, taps, then quarter."""
    tags, quarters, taps = zip(*cells, strict=True)
    return (
        b"".join(tag.to_bytes(8, "big") for tag in tags)
        + b"".join(count.to_bytes(8, "big") for count in taps)
        + bytes(quarters)
    )


def test_verify_rollup_reports_a_drifted_day_and_rebuild_mends_it(stored: Tag, team: Team) -> None:
    TeamDay.objects.filter(day=date(2024, 3, 1)).update(quarters=pack_quarters([30] + [0] * 95))
    TeamDay.objects.filter(day=date(2024, 2, 29)).delete()
    directory, cells = split_tag_day(pack_tag_cells([stored.uid], [30], [0]))
    TagDay.objects.filter(day=date(2024, 3, 1)).update(tags=directory, cells=cells)
    MinuteDay.objects.filter(day=date(2024, 3, 1)).update(minutes=pack_minutes([0], [30]))

    total, differences = find_rollup_differences()

    assert total == 4
    assert {(d.table, d.bucket.date()) for d in differences} == {
        ("day", date(2024, 2, 29)),
        ("day", date(2024, 3, 1)),
        ("tag day", date(2024, 3, 1)),
        ("minute day", date(2024, 3, 1)),
    }
    call_command("rebuild_rollup", "--team", str(team.id), stdout=io.StringIO())
    assert find_rollup_differences()[0] == 0
    assert TeamDay.objects.get(day=date(2024, 2, 29)).taps == 1


@pytest.mark.django_db
def test_verify_rollup_names_an_unknown_team() -> None:
    with pytest.raises(CommandError, match="no team with id 424242"):
        verify("--team", "424242")


def test_rebuild_touches_only_the_named_team(stored: Tag, other_team: Team) -> None:
    Tag.objects.create(uid=5, team=other_team)
    add_taps((1, 5, 3, "2024-01-01T00:00:00Z"))
    TeamRollup.objects.filter(team=other_team).update(taps=99)

    call_command("rebuild_rollup", "--team", str(stored.team_id), stdout=io.StringIO())

    assert TeamRollup.objects.get(team=other_team).taps == 99

import io
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from analytics.management.commands import load_taps as load_taps_command
from analytics.models import TagDay, Tap, TeamRollup
from analytics.rollup import find_rollup_differences
from teams.models import Tag, Team
from teams.tags import move_tag
from tests.conftest import add_taps

TAGS_HEADER = "tag_uid,team_id,created_at"
TAPS_HEADER = "id,tag_uid,count,created_at"


def write_csv(path: Path, header: str, *lines: str) -> Path:
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


@pytest.fixture
def tags_csv(tmp_path: Path) -> Path:
    return write_csv(
        tmp_path / "tags.csv",
        TAGS_HEADER,
        "1000000001,1,2023-01-01 00:00:00+00",
        "1000000002,1,2023-01-01T00:00:00Z",
        "1000000003,2,2023-01-01T00:00:00.000Z",
    )


def load(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("load_taps", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def load_failing(*args: str) -> tuple[CommandError, str]:
    err = io.StringIO()
    with pytest.raises(CommandError) as failure:
        call_command("load_taps", *args, stdout=io.StringIO(), stderr=err)
    return failure.value, err.getvalue()


def team_totals() -> dict[int, int]:
    return {
        team.id: sum(Tap.objects.filter(team=team).values_list("count", flat=True))
        for team in Team.objects.all()
    }


def rollup_totals() -> dict[int, int]:
    totals: dict[int, int] = {}
    for row in TeamRollup.objects.all():
        totals[row.team_id] = totals.get(row.team_id, 0) + row.taps
    return totals


def tag_days() -> list[tuple[int, date, int, bytes]]:
    days = TagDay.objects.order_by("team_id", "day").values_list("team_id", "day", "taps", "cells")
    return [(team_id, day, taps, bytes(cells)) for team_id, day, taps, cells in days]


def assert_rollups_exact() -> None:
    differences, sample = find_rollup_differences()
    assert differences == 0, sample


@pytest.mark.django_db
def test_good_rows_are_loaded_with_teams_created(tags_csv: Path, tmp_path: Path) -> None:
    taps = write_csv(
        tmp_path / "taps.csv",
        TAPS_HEADER,
        "1,1000000001,1,2023-10-20T14:22:01.123Z",
        "2,1000000002,3,2023-10-20 14:29:59.999+00",
        "3,1000000003,2,2023-10-20T16:30:00+02:00",
    )

    out, err = load("--tags", str(tags_csv), "--taps", str(taps))

    assert err == ""
    assert set(Team.objects.values_list("id", flat=True)) == {1, 2}
    assert Tag.objects.get(uid=1000000003).team_id == 2
    assert team_totals() == {1: 4, 2: 2}
    assert rollup_totals() == {1: 4, 2: 2}
    assert "teams: 2 (2 new), tags: 3 (3 new), taps loaded: 3, skipped: 0, duplicates: 0" in out
    assert_rollups_exact()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-10-20T14:22:01.123Z", datetime(2023, 10, 20, 14, 22, 1, 123000, UTC)),
        ("2023-10-20 14:22:01.123+00", datetime(2023, 10, 20, 14, 22, 1, 123000, UTC)),
        ("2023-10-20 16:22:01+02:00", datetime(2023, 10, 20, 14, 22, 1, tzinfo=UTC)),
        ("2023-10-20T09:52:01.5-04:30", datetime(2023, 10, 20, 14, 22, 1, 500000, UTC)),
        ("2023-10-20 14:22:01", datetime(2023, 10, 20, 14, 22, 1, tzinfo=UTC)),
    ],
)
def test_both_timestamp_forms_are_read_and_no_offset_means_utc(
    tags_csv: Path, tmp_path: Path, text: str, expected: datetime
) -> None:
    taps = write_csv(tmp_path / "taps.csv", TAPS_HEADER, f"1,1000000001,1,{text}")

    load("--tags", str(tags_csv), "--taps", str(taps))

    assert Tap.objects.get().created_at == expected


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("x,1000000001,1,2023-10-20T14:22:01Z", "bad number for id: 'x'"),
        ("-5,1000000001,1,2023-10-20T14:22:01Z", "bad number for id: '-5'"),
        ("0,1000000001,1,2023-10-20T14:22:01Z", "bad number for id: 0 is outside"),
        ("99999999999999999999,1000000001,1,2023-10-20T14:22:01Z", "bad number for id"),
        ("7,abc,1,2023-10-20T14:22:01Z", "bad number for tag_uid: 'abc'"),
        ("7,1000000001,1.5,2023-10-20T14:22:01Z", "bad number for count: '1.5'"),
        ("7,1000000001,0,2023-10-20T14:22:01Z", "count must be at least 1, not 0"),
        ("7,1000000001,-3,2023-10-20T14:22:01Z", "count must be at least 1, not -3"),
        ("7,1000000001,1,2023-02-30T14:22:01Z", "bad timestamp '2023-02-30T14:22:01Z'"),
        ("7,1000000001,1,yesterday", "bad timestamp 'yesterday'"),
        ("7,1000000001,1,2023-10-20", "bad timestamp '2023-10-20'"),
        ("7,1000000001,1,1899-12-31T23:59:59Z", "outside the years 1900 to 2999"),
        ("7,1000000001,1,3000-01-01 00:00:00+00", "outside the years 1900 to 2999"),
        ("7,1000000001,1", "expected 4 fields"),
        ("7,1000000099,1,2023-10-20T14:22:01Z", "unknown tag 1000000099"),
        ("1,1000000002,1,2023-10-20T15:00:00Z", "duplicate id 1: line 2 has the same id"),
    ],
)
def test_each_bad_row_is_reported_with_its_line_and_the_rest_is_loaded(
    tags_csv: Path, tmp_path: Path, row: str, reason: str
) -> None:
    taps = write_csv(
        tmp_path / "taps.csv",
        TAPS_HEADER,
        "1,1000000001,1,2023-10-20T14:22:01Z",
        row,
        "2,1000000003,1,2023-10-20T14:23:01Z",
    )

    out, err = load("--tags", str(tags_csv), "--taps", str(taps))

    assert err.startswith("taps.csv: line 3: ")
    assert reason in err
    assert len(err.splitlines()) == 1
    assert team_totals() == {1: 1, 2: 1}
    assert "taps loaded: 2, skipped: 1" in out
    assert_rollups_exact()


@pytest.mark.django_db
def test_line_numbers_are_physical_lines_in_file_order(tags_csv: Path, tmp_path: Path) -> None:
    taps = write_csv(
        tmp_path / "taps.csv",
        TAPS_HEADER,
        "1,1000000099,1,2023-10-20T14:22:01Z",
        "",
        "2,1000000001,0,2023-10-20T14:22:01Z",
        "3,1000000001,1,2023-10-20T14:22:01Z",
        "3,1000000002,1,2023-10-20T14:22:01Z",
    )

    _, err = load("--tags", str(tags_csv), "--taps", str(taps), "--batch-size", "2")

    assert [line.split(":")[1].strip() for line in err.splitlines()] == [
        "line 2",
        "line 4",
        "line 6",
    ]


@pytest.mark.django_db
def test_an_id_repeated_in_a_later_batch_is_reported_not_stored(
    tags_csv: Path, tmp_path: Path
) -> None:
    taps = write_csv(
        tmp_path / "taps.csv",
        TAPS_HEADER,
        "10,1000000001,1,2023-10-20T14:22:01Z",
        "11,1000000001,1,2023-10-20T14:22:01Z",
        "10,1000000002,5,2023-10-21T14:22:01Z",
    )

    _, err = load("--tags", str(tags_csv), "--taps", str(taps), "--batch-size", "1")

    assert err == "taps.csv: line 4: duplicate id 10: line 2 has the same id\n"
    assert team_totals() == {1: 2, 2: 0}


@pytest.mark.django_db
def test_the_same_id_in_two_teams_is_two_taps(tags_csv: Path, tmp_path: Path) -> None:
    taps = write_csv(
        tmp_path / "taps.csv",
        TAPS_HEADER,
        "10,1000000001,1,2023-10-20T14:22:01Z",
        "10,1000000003,1,2023-10-20T14:22:01Z",
    )

    _, err = load("--tags", str(tags_csv), "--taps", str(taps))

    assert err == ""
    assert team_totals() == {1: 1, 2: 1}


@pytest.mark.django_db
def test_strict_loads_nothing_when_any_row_is_bad(tags_csv: Path, tmp_path: Path) -> None:
    taps = write_csv(
        tmp_path / "taps.csv",
        TAPS_HEADER,
        "1,1000000001,1,2023-10-20T14:22:01Z",
        "2,1000000001,0,2023-10-20T14:22:01Z",
    )

    error, err = load_failing("--tags", str(tags_csv), "--taps", str(taps), "--strict")

    assert "--strict: 1 bad rows, nothing was loaded" in str(error)
    assert "line 3: count must be at least 1" in err
    assert Team.objects.count() == 0
    assert Tag.objects.count() == 0
    assert Tap.objects.count() == 0
    assert TeamRollup.objects.count() == 0


@pytest.mark.django_db
def test_strict_loads_everything_when_every_row_is_good(tags_csv: Path, tmp_path: Path) -> None:
    taps = write_csv(tmp_path / "taps.csv", TAPS_HEADER, "1,1000000001,1,2023-10-20T14:22:01Z")

    load("--tags", str(tags_csv), "--taps", str(taps), "--strict")

    assert team_totals() == {1: 1, 2: 0}


@pytest.mark.django_db
def test_loading_twice_changes_nothing(tags_csv: Path, tmp_path: Path) -> None:
    taps = write_csv(
        tmp_path / "taps.csv",
        TAPS_HEADER,
        "1,1000000001,1,2023-10-20T14:22:01Z",
        "2,1000000002,4,2023-10-20T14:52:01Z",
        "3,1000000003,2,2023-10-21T14:22:01Z",
    )
    load("--tags", str(tags_csv), "--taps", str(taps))
    before = (team_totals(), tag_days())

    out, err = load("--tags", str(tags_csv), "--taps", str(taps), "--strict")

    assert err == ""
    assert "(0 new)" in out
    assert "taps loaded: 0, skipped: 0, duplicates: 3" in out
    after = (team_totals(), tag_days())
    assert after == before
    assert_rollups_exact()


@pytest.mark.django_db
def test_numbers_of_thousands_of_digits_are_bad_rows_quoted_short(
    tags_csv: Path, tmp_path: Path
) -> None:
    # Python reads no integer of over 4,300 digits: a ValueError, not a bad row.
    taps = write_csv(
        tmp_path / "taps.csv",
        TAPS_HEADER,
        f"{'9' * 5000},1000000001,1,2023-10-20T14:22:01Z",
        f"2,1000000001,{'9' * 5000},2023-10-20T14:22:01Z",
        f"3,1000000001,1,2023-10-20T14:22:01Z{'9' * 5000}",
        "4,1000000001,1,2023-10-20T14:22:01Z",
    )

    out, err = load("--tags", str(tags_csv), "--taps", str(taps))

    assert [line.split(":")[1].strip() for line in err.splitlines()] == [
        "line 2",
        "line 3",
        "line 4",
    ]
    assert all(len(line) < 200 for line in err.splitlines())
    assert "taps loaded: 1, skipped: 3" in out


@pytest.mark.django_db
def test_a_tags_file_cannot_move_a_tag(tags_csv: Path, tmp_path: Path) -> None:
    load("--tags", str(tags_csv), "--no-taps")
    moved = write_csv(tmp_path / "moved.csv", TAGS_HEADER, "1000000003,1,2023-01-01T00:00:00Z")

    _, err = load("--tags", str(moved), "--no-taps")

    assert "line 2: tag 1000000003 belongs to team 2, not 1" in err
    assert Tag.objects.get(uid=1000000003).team_id == 2


@pytest.mark.django_db
def test_a_refused_tags_row_creates_no_team(tags_csv: Path, tmp_path: Path) -> None:
    load("--tags", str(tags_csv), "--no-taps")
    rows = write_csv(
        tmp_path / "more.csv",
        TAGS_HEADER,
        "1000000003,300,2023-01-01T00:00:00Z",  # a known tag, given to a new team
        "1000000009,400,2023-01-01T00:00:00Z",  # a new tag of a new team
        "1000000009,401,2023-01-01T00:00:00Z",  # the same tag, given to another new team
    )

    out, err = load("--tags", str(rows), "--no-taps")

    assert err.splitlines() == [
        "more.csv: line 2: tag 1000000003 belongs to team 2, not 300; "
        "move tags in the admin, not by reloading",
        "more.csv: line 4: tag 1000000009 belongs to team 400, not 401; "
        "move tags in the admin, not by reloading",
    ]
    assert sorted(Team.objects.values_list("id", flat=True)) == [1, 2, 400]
    assert "teams: 3 (1 new)" in out


@pytest.mark.django_db
def test_a_moved_tag_keeps_its_earlier_taps_with_the_first_team(
    tags_csv: Path, tmp_path: Path
) -> None:
    taps = write_csv(tmp_path / "taps.csv", TAPS_HEADER, "1,1000000003,2,2023-10-20T14:22:01Z")
    load("--tags", str(tags_csv), "--taps", str(taps))
    tag = Tag.objects.get(uid=1000000003)

    move_tag(tag, Team.objects.get(id=1), now=datetime(2024, 1, 1, tzinfo=UTC))
    add_taps((1, 1000000003, 5, "2024-02-01T10:00:00Z"))
    _, err = load("--tags", str(tags_csv), "--taps", str(taps))

    assert team_totals() == {1: 5, 2: 2}
    assert rollup_totals() == {1: 5, 2: 2}
    assert "tap predates its tag's owner: tag 1000000003 belongs to team 1 only since" in err
    assert_rollups_exact()


def _save_with_team(tag: Tag, team: Team) -> None:
    tag.team = team
    tag.save()


def _save_team_only(tag: Tag, team: Team) -> None:
    tag.team = team
    tag.save(update_fields=["team"])


def _save_anew(tag: Tag, team: Team) -> None:
    Tag(uid=tag.uid, team=team, created_at=tag.created_at).save()


@pytest.mark.django_db
@pytest.mark.parametrize("move", [_save_with_team, _save_team_only, _save_anew])
def test_a_tag_cannot_be_given_another_team_by_a_plain_save(
    tags_csv: Path, tmp_path: Path, move: Callable[[Tag, Team], None]
) -> None:
    taps = write_csv(tmp_path / "taps.csv", TAPS_HEADER, "1,1000000003,2,2023-10-20T14:22:01Z")
    load("--tags", str(tags_csv), "--taps", str(taps))

    with pytest.raises(ValidationError, match="move it with teams.tags.move_tag"):
        move(Tag.objects.get(uid=1000000003), Team.objects.get(id=1))

    tag = Tag.objects.get(uid=1000000003)
    assert (tag.team_id, tag.owner_since) == (2, None)
    load("--tags", str(tags_csv), "--taps", str(taps))
    assert team_totals() == {1: 0, 2: 2}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty"),
        ("id,tag,count,created_at\n1,1000000001,1,2023-10-20T14:22:01Z\n", "missing tag_uid"),
    ],
)
def test_an_unreadable_file_is_a_clear_error(
    tags_csv: Path, tmp_path: Path, content: str, message: str
) -> None:
    taps = tmp_path / "taps.csv"
    taps.write_text(content)

    error, _ = load_failing("--tags", str(tags_csv), "--taps", str(taps))

    assert message in str(error)
    assert Tap.objects.count() == 0


@pytest.mark.django_db
def test_bytes_that_are_not_utf8_make_a_bad_row_not_a_failed_load(
    tags_csv: Path, tmp_path: Path
) -> None:
    taps = tmp_path / "taps.csv"
    taps.write_bytes(
        b"id,tag_uid,count,created_at\n1,1000000001,1,2023-10-20T14:22:01Z\n"
        b"2,1000000001,1,2023-10-20T14:22:\xe901Z\n3,1000000001,1,2023-10-20T14:22:01Z\n"
    )

    _, err = load("--tags", str(tags_csv), "--taps", str(taps))

    assert err.startswith("taps.csv: line 3: bad timestamp '2023-10-20T14:22:\ufffd01Z'")
    assert team_totals()[1] == 2


@pytest.mark.django_db
def test_a_byte_order_mark_before_the_header_is_ignored(tags_csv: Path, tmp_path: Path) -> None:
    taps = tmp_path / "taps.csv"
    taps.write_bytes(
        "\ufeffid,tag_uid,count,created_at\n1,1000000001,4,2023-10-20T14:22:01Z\n".encode()
    )

    _, err = load("--tags", str(tags_csv), "--taps", str(taps))

    assert err == ""
    assert team_totals()[1] == 4


@pytest.mark.django_db
def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    error, _ = load_failing("--taps", str(tmp_path / "nope.csv"), "--no-tags")

    assert "nope.csv: no such file" in str(error)


def unreadable_file(tmp_path: Path) -> Path:
    """A file this process may not read: one without permissions, or for root, whom
    permissions do not stop, a write-only setting of the kernel's."""
    if os.geteuid() != 0:
        path = write_csv(tmp_path / "secret.csv", TAPS_HEADER)
        path.chmod(0)
        return path
    path = Path("/proc/sys/vm/compact_memory")
    try:
        path.open("rb").close()
    except PermissionError:
        return path
    except OSError:
        pass
    pytest.skip("no file here that root may not read")


@pytest.mark.django_db
def test_a_directory_or_an_unreadable_file_is_a_clear_error_before_anything_loads(
    tags_csv: Path, tmp_path: Path
) -> None:
    directory, _ = load_failing("--tags", str(tags_csv), "--taps", str(tmp_path))
    unreadable, _ = load_failing("--tags", str(tags_csv), "--taps", str(unreadable_file(tmp_path)))

    assert f"{tmp_path}: is a directory; give the path of the CSV file" in str(directory)
    assert "cannot be read: Permission denied" in str(unreadable)
    assert Tag.objects.count() == 0


@pytest.mark.django_db
def test_columns_may_come_in_any_order(tags_csv: Path, tmp_path: Path) -> None:
    taps = write_csv(
        tmp_path / "taps.csv",
        "created_at,count,tag_uid,id,note",
        "2023-10-20T14:22:01Z,3,1000000001,1,hello",
    )

    load("--tags", str(tags_csv), "--taps", str(taps))

    assert team_totals() == {1: 3, 2: 0}


def test_an_unreachable_database_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        DATABASE_URL="postgres://postgres@127.0.0.1:1/taps",
        SECRET_KEY="only-for-this-test-" + "x" * 40,
    )

    result = subprocess.run(
        [sys.executable, "manage.py", "load_taps"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert "the database did not answer" in result.stderr
    assert "Traceback" not in result.stderr


def good_rows(count: int, first_id: int = 1) -> list[str]:
    return [
        f"{tap_id},{1000000001 + tap_id % 3},1,2023-10-20T{tap_id // 3600 % 24:02d}:"
        f"{tap_id // 60 % 60:02d}:{tap_id % 60:02d}.{tap_id % 1000:03d}Z"
        for tap_id in range(first_id, first_id + count)
    ]


@pytest.mark.django_db
def test_bad_rows_amid_a_large_batch_are_reported_with_their_lines(
    tags_csv: Path, tmp_path: Path
) -> None:
    lines = good_rows(6000)
    bad = {
        1500: ("1500,1000000001,1,2023-10-20T25:00:00Z", "bad timestamp"),
        2000: ("2ooo,1000000001,1,2023-10-20T10:00:00Z", "bad number for id: '2ooo'"),
        2500: ("2500,1000000001,1", "expected 4 fields"),
        3000: ("9223372036854775808,1000000001,1,2023-10-20T10:00:00Z", "outside 1.."),
        3500: ("3500,1000000001,2147483648,2023-10-20T10:00:00Z", "larger than 2147483647"),
        4000: ("4000,1000000001,1,2023-02-29T10:00:00Z", "bad timestamp"),
        4500: ("4500,1000000077,1,2023-10-20T10:00:00Z", "unknown tag 1000000077"),
        5000: ("17,1000000003,1,2023-10-20T10:00:00Z", "duplicate id 17: line 18 has"),
    }
    for index, (row, _) in bad.items():
        lines[index] = row
    taps = write_csv(tmp_path / "taps.csv", TAPS_HEADER, *lines)

    out, err = load("--tags", str(tags_csv), "--taps", str(taps))

    reported = err.splitlines()
    assert [line.split(":")[1].strip() for line in reported] == [
        f"line {index + 2}" for index in bad
    ]
    for line, (_, reason) in zip(reported, bad.values(), strict=True):
        assert reason in line
    assert f"taps loaded: {6000 - len(bad)}, skipped: {len(bad)}, duplicates: 0" in out
    assert_rollups_exact()


@pytest.mark.django_db
def test_a_leap_day_and_other_forms_take_the_long_way_and_load(
    tags_csv: Path, tmp_path: Path
) -> None:
    taps = write_csv(
        tmp_path / "taps.csv",
        TAPS_HEADER,
        *good_rows(100),
        "101,1000000001,1,2024-02-29T10:00:00Z",
        "102,1000000001,1,2024-03-01T10:00:00.1234567+0530",
        "00103,1000000001,007,2024-03-01T10:00",
        *good_rows(100, first_id=200),
    )

    _, err = load("--tags", str(tags_csv), "--taps", str(taps))

    assert err == ""
    assert Tap.objects.get(tap_id=101).created_at == datetime(2024, 2, 29, 10, tzinfo=UTC)
    assert Tap.objects.get(tap_id=102).created_at == datetime(2024, 3, 1, 4, 30, 0, 123456, UTC)
    assert Tap.objects.get(tap_id=103).count == 7
    assert Tap.objects.count() == 203


@pytest.mark.django_db
@pytest.mark.parametrize("line_end", ["\r\n", "\r"], ids=["windows", "old-mac"])
def test_lines_are_counted_with_any_line_end(tags_csv: Path, tmp_path: Path, line_end: str) -> None:
    lines = [TAPS_HEADER, *good_rows(3000)]
    lines[1000] = "1000,1000000001,0,2023-10-20T10:00:00Z"
    lines[2000] = ""
    lines[2500] = "2500,1000000001,1,yesterday"
    taps = tmp_path / "taps.csv"
    taps.write_bytes(line_end.join(lines).encode())  # no line end after the last row

    out, err = load("--tags", str(tags_csv), "--taps", str(taps), "--batch-size", "700")

    assert [line.split(":")[1].strip() for line in err.splitlines()] == ["line 1001", "line 2501"]
    assert "taps loaded: 2997, skipped: 2" in out
    assert Tap.objects.filter(tap_id=3000).exists()


@pytest.mark.django_db
def test_quoted_fields_follow_the_csv_rules_and_keep_line_numbers(
    tags_csv: Path, tmp_path: Path
) -> None:
    taps = write_csv(
        tmp_path / "taps.csv",
        "id,tag_uid,count,created_at,note",
        "1,1000000001,1,2023-10-20T10:00:00Z,plain",
        '"2","1000000001","3","2023-10-20T10:00:00Z","a, b"',
        '3,1000000001,1,2023-10-20T10:00:00Z,"two',
        'lines"',
        "4,1000000001,0,2023-10-20T10:00:00Z,",
        "5,1000000001,1,2023-10-20T10:00:00Z",
    )

    out, err = load("--tags", str(tags_csv), "--taps", str(taps))

    assert err == "taps.csv: line 6: count must be at least 1, not 0\n"
    assert team_totals() == {1: 6, 2: 0}


@pytest.mark.django_db
@pytest.mark.parametrize("rows", [3_000, 10_000])
def test_a_quote_left_open_costs_its_own_line_only(
    tags_csv: Path, tmp_path: Path, rows: int
) -> None:
    # Read on to the next quote, the open one swallowed every later row (3,000 rows) or
    # ran past the csv module's field limit and stopped the load (10,000 rows).
    lines = [f"{n},1000000001,1,2023-10-20T10:00:00Z" for n in range(1, rows + 1)]
    lines[99] = '"' + lines[99]
    taps = write_csv(tmp_path / "taps.csv", TAPS_HEADER, *lines)

    out, err = load("--tags", str(tags_csv), "--taps", str(taps), "--batch-size", "700")

    assert err.startswith("taps.csv: line 101: a quote on this line is not closed on it (")
    assert len(err.splitlines()) == 1
    assert f"taps loaded: {rows - 1}, skipped: 1" in out
    assert not Tap.objects.filter(tap_id=100).exists()


@pytest.mark.django_db
def test_a_quote_left_open_in_the_tags_file_costs_its_own_line_only(tmp_path: Path) -> None:
    tags = write_csv(
        tmp_path / "tags.csv",
        TAGS_HEADER,
        "1000000001,1,2023-01-01T00:00:00Z",
        '"1000000002,1,2023-01-01T00:00:00Z',
        "1000000003,2,2023-01-01T00:00:00Z",
        "1000000004,2,2023-01-01T00:00:00Z",
    )

    _, err = load("--tags", str(tags), "--no-taps")

    assert err.startswith("tags.csv: line 3: a quote on this line is not closed on it (")
    assert sorted(Tag.objects.values_list("uid", flat=True)) == [1000000001, 1000000003, 1000000004]


@pytest.mark.django_db
def test_an_id_given_three_times_names_the_line_that_stored_it(
    tags_csv: Path, tmp_path: Path
) -> None:
    taps = write_csv(
        tmp_path / "taps.csv",
        TAPS_HEADER,
        "10,1000000001,1,2023-10-20T14:22:01Z",
        "11,1000000001,1,2023-10-20T14:22:01Z",
        "10,1000000002,5,2023-10-21T14:22:01Z",
        "10,1000000001,7,2023-10-21T14:22:01Z",
    )

    _, err = load("--tags", str(tags_csv), "--taps", str(taps), "--batch-size", "2")

    assert err.splitlines() == [
        "taps.csv: line 4: duplicate id 10: line 2 has the same id",
        "taps.csv: line 5: duplicate id 10: line 2 has the same id",
    ]
    assert team_totals() == {1: 2, 2: 0}


@pytest.mark.django_db
def test_a_rerun_counts_an_id_repeated_in_the_file_as_a_duplicate(
    tags_csv: Path, tmp_path: Path
) -> None:
    # A repeat is reported when this run stored its id from an earlier line; on a rerun the
    # id was stored before, and every line giving it is a duplicate.
    taps = write_csv(
        tmp_path / "taps.csv",
        TAPS_HEADER,
        "10,1000000001,1,2023-10-20T14:22:01Z",
        "10,1000000002,5,2023-10-21T14:22:01Z",
    )
    _, first = load("--tags", str(tags_csv), "--taps", str(taps))

    out, again = load("--tags", str(tags_csv), "--taps", str(taps))

    assert first == "taps.csv: line 3: duplicate id 10: line 2 has the same id\n"
    assert again == ""
    assert "taps loaded: 0, skipped: 0, duplicates: 2" in out
    assert team_totals() == {1: 1, 2: 0}


@pytest.mark.django_db
def test_a_files_taps_are_numbered_in_line_order_per_team(tags_csv: Path, tmp_path: Path) -> None:
    # Teams 1 and 2 alternate in the file (tags ...01 and ...02 are team 1's).
    taps = write_csv(tmp_path / "taps.csv", TAPS_HEADER, *good_rows(500))

    load("--tags", str(tags_csv), "--taps", str(taps), "--batch-size", "64")

    for team in Team.objects.all():
        stored = Tap.objects.filter(team=team).order_by("seq").values_list("tap_id", "seq")
        ids = [tap_id for tap_id, _ in stored]
        assert ids == sorted(ids)
        # Dense: the other team's lines leave no gaps, which would tell this team how
        # many taps the other stored between two of its own (SPEC 1).
        assert [seq for _, seq in stored] == list(range(1, len(ids) + 1))
        assert len(ids) > 0


@pytest.mark.django_db
def test_only_a_teams_own_repeats_leave_gaps_in_its_numbers(tags_csv: Path, tmp_path: Path) -> None:
    taps = write_csv(
        tmp_path / "taps.csv",
        TAPS_HEADER,
        "1,1000000001,1,2023-10-20T14:00:00Z",
        "2,1000000003,1,2023-10-20T14:00:01Z",
        "1,1000000002,1,2023-10-20T14:00:02Z",  # team 1 repeats id 1
        "3,1000000003,1,2023-10-20T14:00:02Z",
        "4,1000000003,1,2023-10-20T14:00:03Z",
        "5,1000000001,1,2023-10-20T14:00:04Z",
    )

    _, errors = load("--tags", str(tags_csv), "--taps", str(taps))

    assert "line 4: duplicate id 1: line 2 has the same id" in errors
    seqs = {
        team: list(Tap.objects.filter(team_id=team).order_by("seq").values_list("seq", flat=True))
        for team in (1, 2)
    }
    assert seqs == {1: [1, 3], 2: [1, 2, 3]}


@pytest.mark.django_db
def test_progress_goes_to_a_log_as_lines_when_stderr_is_no_terminal(
    tags_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        load_taps_command, "ProgressLines", partial(load_taps_command.ProgressLines, every=0)
    )
    rows = [f"{n},1000000001,1,2023-10-20T14:22:01Z" for n in range(1, 3001)]
    taps = write_csv(tmp_path / "taps.csv", TAPS_HEADER, *rows)

    out, _ = load("--tags", str(tags_csv), "--taps", str(taps), "--batch-size", "1000")

    lines = [line for line in out.splitlines() if line.startswith("taps.csv: ")]
    assert len(lines) == 3  # one a batch here; every 10 seconds by default
    assert lines[-1].startswith("taps.csv: 100% read (0 of 0 MB) after ")

"""The taps reader's short way (rows checked a block at a time and copied as they are)
against the long way (each field parsed in Python): same rows accepted, same values."""

import io
from datetime import UTC, datetime

import pytest
from django.db import connection
from hypothesis import example, given, settings
from hypothesis import strategies as st

from analytics.loader import (
    RowError,
    TapBatch,
    parse_count,
    parse_id,
    parse_instant,
    read_tap_batches,
)

HEADER = "id,tag_uid,count,created_at\n"


def read(text: str, batch_size: int = 1000) -> list[TapBatch]:
    return list(read_tap_batches(io.StringIO(text, newline=""), batch_size))


def rows_of(text: str) -> list[str]:
    return [row for batch in read(text) for row in batch.rows]


def by_the_long_way(fields: list[str]) -> tuple[int, int, int, datetime] | None:
    tap_id, tag_uid, count, created_at = (text.strip() for text in fields)
    try:
        return (
            parse_id(tap_id, "id"),
            parse_id(tag_uid, "tag_uid"),
            parse_count(count),
            parse_instant(created_at),
        )
    except RowError:
        return None


digits = st.text("0123456789", min_size=1, max_size=20)
numbers = digits | st.sampled_from(["-1", "+1", "1.5", " 1", "0", "x"])
timestamps = st.builds(
    "{}-{}-{}{}{}:{}:{}{}{}".format,
    st.sampled_from(
        ["2024", "2023", "1900", "1901", "2998", "2999", "3000", "1000", "0999", "9999", "20x4"]
    ),
    st.sampled_from(["01", "02", "04", "12", "13", "00", "1"]),
    st.sampled_from(["01", "28", "29", "30", "31", "32", "00"]),
    st.sampled_from(["T", " ", "t", "_"]),
    st.sampled_from(["00", "09", "23", "24"]),
    st.sampled_from(["00", "59", "60"]),
    st.sampled_from(["00", "59", "60"]),
    st.sampled_from(["", ".1", ".123", ".123456", ".1234567", "."]),
    st.sampled_from(["", "Z", "z", "+00", "-00:00", "+05:30", "+0530", "+15:59", "-16:00", "+5"]),
)


@settings(max_examples=400, deadline=None)
@given(tap_id=numbers, tag_uid=numbers, count=numbers, created_at=timestamps)
@example(
    tap_id="9223372036854775807", tag_uid="1", count="2147483647", created_at="2024-02-29T00:00:00Z"
)
@example(tap_id="1", tag_uid="1", count="1", created_at="1900-01-01T00:30:00+01:00")
@example(tap_id="1", tag_uid="1", count="1", created_at="2999-12-31T23:30:00-01:00")
def test_a_row_is_read_as_the_long_way_reads_it(
    tap_id: str, tag_uid: str, count: str, created_at: str
) -> None:
    expected = by_the_long_way([tap_id, tag_uid, count, created_at])

    rows = rows_of(f"{HEADER}{tap_id},{tag_uid},{count},{created_at}\n")

    if expected is None:
        assert rows == []
    else:
        assert len(rows) == 1
        line, *fields = rows[0].rstrip("\n").split(",")
        assert line == "2"
        assert by_the_long_way(fields) == expected


@pytest.mark.django_db
@settings(max_examples=200, deadline=None)
@given(created_at=timestamps)
def test_postgresql_reads_a_copied_timestamp_as_python_does(created_at: str) -> None:
    # Rows in the common form reach COPY as they are, so PostgreSQL reads their timestamps.
    if connection.vendor != "postgresql":
        pytest.skip("SQLite is given the timestamps Python read")
    rows = rows_of(f"{HEADER}1,1,1,{created_at}\n")
    if not rows:
        return
    copied = rows[0].rstrip("\n").split(",")[4]

    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::timestamptz", [copied])
        (read,) = cursor.fetchone()

    assert read == parse_instant(created_at)


def test_rows_in_the_common_form_are_copied_as_they_are() -> None:
    text = HEADER + "".join(f"{n},1000000001,1,2024-03-01T10:00:{n:02d}.5Z\n" for n in range(1, 60))

    rows = rows_of(text)

    assert rows[0] == "2,1,1000000001,1,2024-03-01T10:00:01.5Z\n"
    assert len(rows) == 59


def test_batches_hold_the_requested_number_of_rows() -> None:
    text = HEADER + "".join(f"{n},1000000001,1,2024-03-01T10:00:00Z\n" for n in range(1, 11))

    batches = read(text, batch_size=4)

    assert [len(batch.rows) for batch in batches] == [4, 4, 2]
    assert sum(batch.chars for batch in batches) == len(text)


def test_a_bad_row_belongs_to_the_batch_its_line_falls_in() -> None:
    lines = [f"{n},1000000001,1,2024-03-01T10:00:00Z" for n in range(1, 9)]
    lines[4] = "5,1000000001,0,2024-03-01T10:00:00Z"  # line 6
    text = HEADER + "\n".join(lines) + "\n"

    batches = read(text, batch_size=3)

    assert [[row.split(",")[0] for row in batch.rows] for batch in batches] == [
        ["2", "3", "4"],
        ["5", "7", "8"],
        ["9"],
    ]
    assert [[problem.line for problem in batch.problems] for batch in batches] == [[], [6], []]


def test_an_instant_without_offset_is_utc_on_both_ways() -> None:
    assert parse_instant("2024-03-01 10:00:00") == datetime(2024, 3, 1, 10, tzinfo=UTC)
    assert rows_of(f"{HEADER}1,2,3,2024-03-01 10:00:00\n") == ["2,1,2,3,2024-03-01 10:00:00\n"]

"""Bucket labels: ``boundaries`` writes minute and hour labels from the clock, without a
zone lookup per bucket; they must read exactly as ``isoformat`` of each bucket's start in
the zone, whatever the zone's offsets (seconds in them, half hours, skipped days)."""

import zoneinfo
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from analytics.periods import EARLIEST, Interval, boundaries

ZONES = sorted(zoneinfo.available_timezones())


def iso_labels(bounds: list[datetime], zone: ZoneInfo) -> list[str]:
    return [instant.astimezone(zone).isoformat() for instant in bounds[:-1]]


@settings(max_examples=300, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    start=st.datetimes(
        min_value=datetime(1901, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
    ),
    length=st.timedeltas(min_value=timedelta(minutes=1), max_value=timedelta(days=40)),
    interval=st.sampled_from([Interval.MINUTE, Interval.HOUR]),
)
# Monrovia's offset had seconds (-00:44:30); Samoa skipped 30 December 2011; Lord Howe
# moves by half an hour; Kathmandu is +05:45.
@example(
    zone="Africa/Monrovia",
    start=datetime(1971, 12, 31, tzinfo=UTC),
    length=timedelta(days=2),
    interval=Interval.HOUR,
)
@example(
    zone="Pacific/Apia",
    start=datetime(2011, 12, 29, tzinfo=UTC),
    length=timedelta(days=3),
    interval=Interval.HOUR,
)
@example(
    zone="Australia/Lord_Howe",
    start=datetime(2024, 10, 5, 14, tzinfo=UTC),
    length=timedelta(hours=3),
    interval=Interval.MINUTE,
)
@example(
    zone="Asia/Kathmandu",
    start=datetime(1985, 12, 31, 18, tzinfo=UTC),
    length=timedelta(days=1),
    interval=Interval.MINUTE,
)
def test_minute_and_hour_labels_read_as_isoformat_in_the_zone(
    zone: str, start: datetime, length: timedelta, interval: Interval
) -> None:
    if interval == Interval.MINUTE:
        length = min(length, timedelta(days=2))
    tz = ZoneInfo(zone)
    bounds, labels = boundaries(start, start + length, interval, tz, cap=100_000)
    assert labels == iso_labels(bounds, tz)


def test_day_labels_read_as_isoformat_in_the_zone() -> None:
    paris = ZoneInfo("Europe/Paris")
    start = datetime(2024, 3, 1, tzinfo=UTC)
    bounds, labels = boundaries(start, start + timedelta(days=60), Interval.DAY, paris, cap=400)
    assert labels == iso_labels(bounds, paris)
    assert "2024-03-31T00:00:00+01:00" in labels and "2024-04-01T00:00:00+02:00" in labels


def test_labels_of_the_earliest_range_allowed() -> None:
    zone = ZoneInfo("Asia/Kolkata")  # +05:21:10 (Madras time) then
    bounds, labels = boundaries(
        EARLIEST, EARLIEST + timedelta(hours=5), Interval.MINUTE, zone, cap=1000
    )
    assert labels == iso_labels(bounds, zone)
    assert labels[0].endswith("+05:21:10")


@pytest.mark.parametrize(
    ("zone", "first", "skipped"),
    [
        ("Pacific/Apia", date(2011, 12, 29), "2011-12-30"),
        ("Pacific/Kiritimati", date(1994, 12, 30), "1994-12-31"),
    ],
)
@pytest.mark.parametrize("interval", [Interval.DAY, Interval.WEEK, Interval.MONTH])
def test_a_date_the_zone_skipped_has_no_bucket(
    zone: str, first: date, skipped: str, interval: Interval
) -> None:
    tz = ZoneInfo(zone)
    start = datetime.combine(first, datetime.min.time(), tz).astimezone(UTC)

    bounds, labels = boundaries(start, start + timedelta(days=3), interval, tz, cap=400)

    assert bounds == sorted(set(bounds))
    assert len(set(labels)) == len(labels)
    assert not any(label.startswith(skipped) for label in labels)

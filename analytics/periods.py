"""Bucket boundaries on a time zone's clock and calendar (SPEC 6.1).

Everything here is plain Python over ``zoneinfo``: it decides where buckets start, and
the query module only sums stored rows into them. Instants are aware UTC datetimes;
"walls" are naive local clock readings.

- Day, week, month, quarter and year buckets start at the first instant of a local
  calendar period, so a local day may be 23 or 25 hours long.
- Minute and hour buckets start at every instant where the local clock shows a whole
  minute or hour: the hour repeated when clocks go back is two buckets, the hour skipped
  when they go forward is none, and a half-hour shift (Lord Howe) makes a bucket of 30 or
  90 minutes.
"""

import enum
from bisect import bisect_right
from datetime import UTC, date, datetime, timedelta, timezone
from functools import cache, lru_cache
from zoneinfo import ZoneInfo

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Interval(enum.StrEnum):
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"

    @property
    def is_elapsed(self) -> bool:
        return self in (Interval.MINUTE, Interval.HOUR)


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

# The earliest and latest instants a range may touch: buckets of a year, and the
# search margins below, stay inside what ``datetime`` can represent.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)

_UNITS = {Interval.MINUTE: timedelta(minutes=1), Interval.HOUR: timedelta(hours=1)}
# Walls looked at beyond each end of the range for minute and hour buckets: more than
# the largest clock change in use (a whole day, Samoa 2011, is handled by the retry).
_MARGINS = (timedelta(hours=3), timedelta(hours=27))


class TooManyBuckets(Exception):
    """More than ``limit`` buckets: in the range asked for, or with ``compared`` in the
    range it is compared with (a year earlier may hold a 29 February more)."""

    def __init__(self, limit: int, *, compared: bool = False) -> None:
        super().__init__(limit)
        self.limit = limit
        self.compared = compared


def local_wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def first_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first instant at which the local clock shows ``wall`` or later.

    For a wall time that exists this is its first occurrence; for one skipped by a clock
    change (a midnight that never happens) it is the instant of the change.
    """
    earlier = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if local_wall(earlier, zone) == wall:
        return earlier
    # In a gap, fold=1 reads the wall with the offset after the change, which gives an
    # instant before the change; the change lies between the two readings.
    low = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = earlier
    if local_wall(low, zone) >= wall:
        return low
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        middle = middle.replace(microsecond=0)
        if local_wall(middle, zone) >= wall:
            high = middle
        else:
            low = middle
    return high


def instants_showing(wall: datetime, zone: ZoneInfo) -> list[datetime]:
    """Every instant at which the local clock shows ``wall``: none, one, or two."""
    found: list[datetime] = []
    for fold in (0, 1):
        instant = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if local_wall(instant, zone) == wall and instant not in found:
            found.append(instant)
    return sorted(found)


def calendar_floor(day: date, interval: Interval, week_start: int) -> date:
    """The first day of the calendar period holding ``day``."""
    if interval == Interval.DAY:
        return day
    if interval == Interval.WEEK:
        return day - timedelta(days=(day.weekday() - week_start) % 7)
    if interval == Interval.MONTH:
        return day.replace(day=1)
    if interval == Interval.QUARTER:
        return date(day.year, (day.month - 1) // 3 * 3 + 1, 1)
    return date(day.year, 1, 1)


def next_calendar_start(day: date, interval: Interval) -> date:
    if interval == Interval.DAY:
        return day + timedelta(days=1)
    if interval == Interval.WEEK:
        return day + timedelta(days=7)
    months = {Interval.MONTH: 1, Interval.QUARTER: 3, Interval.YEAR: 12}[interval]
    month_index = day.year * 12 + day.month - 1 + months
    return date(month_index // 12, month_index % 12 + 1, 1)


def _calendar_boundaries(
    start: datetime, end: datetime, interval: Interval, zone: ZoneInfo, week_start: int, cap: int
) -> list[datetime]:
    day = calendar_floor(local_wall(start, zone).date(), interval, week_start)
    boundaries = [day_start(day, zone)]
    while boundaries[-1] < end:
        if len(boundaries) > cap:
            raise TooManyBuckets(cap)
        day = next_calendar_start(day, interval)
        instant = day_start(day, zone)
        # A date the zone's clocks skipped whole (Samoa's 30 December 2011) starts when
        # the next one does: it has no instant, so no bucket.
        if instant > boundaries[-1]:
            boundaries.append(instant)
    return boundaries


def _elapsed_candidates(
    start: datetime, end: datetime, zone: ZoneInfo, unit: timedelta, margin: timedelta
) -> tuple[list[datetime], list[timedelta]]:
    """Every instant in ``[start - margin, end + margin]`` at which the local clock shows a
    whole ``unit``, and the offset in force at each: while the offset stays the same they
    are ``unit`` apart, so each candidate costs one offset lookup, and a change of offset
    is found by bisection."""
    low, high = start - margin, end + margin
    found: list[datetime] = []
    offsets: list[timedelta] = []
    offset = _offset_at(low, zone)
    candidate = _next_whole(low, offset, unit)
    previous = low
    while candidate <= high:
        # Inlined ``_offset_at``: a day by minute checks 1,500 candidates.
        if candidate.astimezone(zone).utcoffset() == offset:
            found.append(candidate)
            offsets.append(offset)
            previous, candidate = candidate, candidate + unit
            continue
        change = _offset_change(previous, candidate, zone)
        offset = _offset_at(change, zone)
        previous, candidate = change, _next_whole(change, offset, unit)
    return found, offsets


def _offset_at(instant: datetime, zone: ZoneInfo) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None
    return offset


def _next_whole(instant: datetime, offset: timedelta, unit: timedelta) -> datetime:
    """The first instant from ``instant`` on at which a clock ``offset`` from UTC shows a
    whole ``unit``."""
    late = (instant + offset - EPOCH) % unit
    return instant if not late else instant + (unit - late)


def _offset_change(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """The instant in ``(before, after]`` at which the offset in force at ``before`` ends
    (offsets change on whole seconds)."""
    offset = _offset_at(before, zone)
    low, high = before, after
    while high - low > timedelta(seconds=1):
        middle = (low + (high - low) / 2).replace(microsecond=0)
        if middle <= low:
            middle = low + timedelta(seconds=1)
        if _offset_at(middle, zone) == offset:
            low = middle
        else:
            high = middle
    return high


def _elapsed_boundaries(
    start: datetime, end: datetime, interval: Interval, zone: ZoneInfo, cap: int
) -> tuple[list[datetime], list[str]]:
    unit = _UNITS[interval]
    # Offsets change by at most a day, so this bound is close; the exact count follows.
    if (end - start) / unit > cap + 48:
        raise TooManyBuckets(cap)
    for margin in _MARGINS:
        candidates, offsets = _elapsed_candidates(start, end, zone, unit, margin)
        first = bisect_right(candidates, start) - 1
        last = bisect_right(candidates, end - timedelta(microseconds=1))
        if first >= 0 and last < len(candidates):
            if last - first > cap:
                raise TooManyBuckets(cap)
            starts = candidates[first:last]
            return candidates[first : last + 1], _clock_labels(starts, offsets[first:last], unit)
    raise TooManyBuckets(cap)  # pragma: no cover - no zone skips more than a day


# "THH:MM:00" for every minute of a day.
_CLOCK = [f"T{minute // 60:02d}:{minute % 60:02d}:00" for minute in range(24 * 60)]


@cache
def _offset_text(offset: timedelta) -> str:
    """An offset as ``isoformat`` writes it: +05:30, -03:00, +00:00, +05:53:28."""
    return datetime(2000, 1, 1, tzinfo=timezone(offset)).isoformat()[19:]


def _clock_labels(starts: list[datetime], offsets: list[timedelta], unit: timedelta) -> list[str]:
    """``starts[i].astimezone(zone).isoformat()`` for whole local minutes or hours, given
    the offset in force at each: while it holds and the starts are ``unit`` apart, the
    clock moves on by ``unit``, and the text is put together from a table. A quarter by
    hour's 2,200 labels took 5 ms through ``astimezone`` and ``isoformat``."""
    step = unit // timedelta(minutes=1)
    labels: list[str] = []
    offset: timedelta | None = None
    previous = EPOCH
    day = date.min
    day_text = offset_text = ""
    minute = 0
    for instant, instant_offset in zip(starts, offsets, strict=True):
        if instant_offset != offset or instant - previous != unit:
            offset = instant_offset
            wall = instant + offset  # still marked UTC, but its fields are the local clock
            day, minute = wall.date(), wall.hour * 60 + wall.minute
            day_text, offset_text = day.isoformat(), _offset_text(offset)
        else:
            minute += step
            if minute >= len(_CLOCK):
                minute -= len(_CLOCK)
                day += timedelta(days=1)
                day_text = day.isoformat()
        labels.append(day_text + _CLOCK[minute] + offset_text)
        previous = instant
    return labels


def boundaries(
    start: datetime,
    end: datetime,
    interval: Interval,
    zone: ZoneInfo,
    *,
    week_start: int = 0,
    cap: int,
) -> tuple[list[datetime], list[str]]:
    """The UTC starts of every bucket meeting ``[start, end)``, then the end of the last;
    and each bucket's label: its start in ISO 8601 as the zone's clocks showed it, with
    the offset in force.

    The first bucket starts at or before ``start``; the last ends at or after ``end``.
    Raises ``TooManyBuckets`` when there would be more than ``cap`` buckets.
    """
    if interval.is_elapsed:
        return _elapsed_boundaries(start, end, interval, zone, cap)
    instants = _calendar_boundaries(start, end, interval, zone, week_start, cap)
    return instants, [_calendar_label(instant, zone) for instant in instants[:-1]]


# A year by day asks for 366 labels, the same from one query to the next; 20,000 entries
# take about 3 MB.
@lru_cache(maxsize=20_000)
def _calendar_label(instant: datetime, zone: ZoneInfo) -> str:
    return instant.astimezone(zone).isoformat()


# Each costs four zone conversions and a year by day needs 366; 20,000 entries (about
# 5 MB) hold every day of half a century in a zone.
@lru_cache(maxsize=20_000)
def day_start(day: date, zone: ZoneInfo) -> datetime:
    """The first instant of a local date."""
    return first_instant(datetime.combine(day, datetime.min.time()), zone)


def shift_years(day: date, years: int) -> date:
    """The same date ``years`` later (earlier if negative); 29 February becomes the 28th."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)

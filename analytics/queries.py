"""Counting taps: the one read path behind every analytics endpoint (SPEC 6.1, 6.2, 11).

``count_taps`` answers a ``TapQuery`` with plain data. Bucket boundaries come from
``analytics.periods``; the counts come from the day levels (a row per team and UTC day
holding its quarter hours, and its tags' quarter hours), so a year by day reads one row
per day however many taps there are. Raw taps are read where a quarter hour would
straddle the range's edge (a datetime that is not on one: at most 15 minutes at each
end), for minute buckets, for historic zones whose offsets were not whole quarter hours,
and for the ``tag`` filter, by the index that leads with the tag, grouped in SQL by the
coarsest ``Trunc`` that no bucket boundary cuts. Results are identical on PostgreSQL and
SQLite.
"""

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import cache, cached_property
from typing import Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
from django.conf import settings
from django.db import connection
from django.db.models import F, Sum
from django.db.models.functions import Trunc
from django.utils import timezone as django_timezone

from analytics.models import ROLLUP_STEP, MinuteDay, TagDay, Tap, TeamDay
from analytics.periods import (
    Interval,
    boundaries,
    day_start,
    local_wall,
    shift_years,
)
from analytics.rollup import (
    QUARTERS_PER_DAY,
    TAG_CELL_SIZE,
    sum_by,
    taps_before_quarter,
    unpack_minutes,
    unpack_tag_cells,
    unpack_tag_directory,
)
from taps_project import sql
from teams.models import Team

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NONE = np.zeros(0, dtype=np.int64)
# Tags are summed by id, in an array as long as their ids' span, when that span is at
# most four times their count plus this many (half a megabyte of int64s beyond that).
_DENSE_SPAN = 65_536

Compare = Literal["previous", "year"]


@dataclass(frozen=True)
class Endpoint:
    """One end of a range as the client gave it: a local date or an exact instant."""

    day: date | None = None
    instant: datetime | None = None

    def resolve(self, zone: ZoneInfo, *, is_end: bool) -> datetime:
        if self.instant is not None:
            return self.instant.astimezone(UTC)
        assert self.day is not None
        # An end date is inclusive: the range runs to the start of the next day.
        return day_start(self.day + timedelta(days=1) if is_end else self.day, zone)


@dataclass(frozen=True)
class TapQuery:
    start: Endpoint
    end: Endpoint
    zone: ZoneInfo
    interval: Interval = Interval.DAY
    week_start: int = 0
    tags: tuple[int, ...] = ()
    group_by_tag: bool = False
    fill: bool = True
    limit: int = 50

    def range(self) -> tuple[datetime, datetime]:
        return self.start.resolve(self.zone, is_end=False), self.end.resolve(self.zone, is_end=True)


@dataclass(frozen=True)
class Period:
    start: datetime  # local, with the offset in force at that instant
    taps: int
    partial: bool
    label: str = field(default="", compare=False)  # ``start`` in ISO 8601


@dataclass(frozen=True)
class Buckets:
    """Each bucket's label and ``partial`` flag, worked out once for every series."""

    labels: list[str]
    partial: list[bool]

    @classmethod
    def of(
        cls,
        bounds: Sequence[datetime],
        labels: list[str],
        start: datetime,
        end: datetime,
        as_of: datetime,
    ) -> "Buckets":
        # Only the first and last buckets can stick out of the range, and only buckets
        # ending after as_of are unfinished: no comparison per bucket.
        size = len(bounds) - 1
        partial = [False] * size
        partial[0] = bounds[0] < start
        partial[-1] = partial[-1] or bounds[-1] > end
        for index in range(max(bisect_right(bounds, as_of, lo=1) - 1, 0), size):
            partial[index] = True
        return cls(labels, partial)

    def periods(self, sums: Sequence[int], fill: bool) -> list[Period]:
        return [
            Period(datetime.fromisoformat(label), taps, partial, label)
            for label, taps, partial in zip(self.labels, sums, self.partial, strict=True)
            if taps or fill
        ]

    @cached_property
    def json_items(self) -> list[tuple[str, str]]:
        """Each bucket's JSON object before and after its number of taps: a series is
        written by joining strings, with no object per bucket (building ``Period``s
        was a third of a day by minute and most of a month by tag)."""
        ends = (',"partial":false}', ',"partial":true}')
        return [
            (f'{{"period":"{label}","taps":', ends[partial])
            for label, partial in zip(self.labels, self.partial, strict=True)
        ]


@dataclass(frozen=True)
class BucketSums:
    """Taps per bucket (``fill``: empty buckets are listed too)."""

    buckets: Buckets
    sums: list[int]
    fill: bool

    @property
    def periods(self) -> list[Period]:
        return self.buckets.periods(self.sums, self.fill)


@dataclass(frozen=True)
class Series:
    tag: int
    total: int
    results: BucketSums

    @property
    def periods(self) -> list[Period]:
        return self.results.periods


@dataclass
class TapCounts:
    start: datetime
    end: datetime
    total: int
    results: BucketSums | None = None  # None when grouped by tag
    series: list[Series] | None = None
    # When the first bucket not ended at ``as_of`` ends (its ``partial`` changes then).
    valid_until: datetime | None = None

    @property
    def periods(self) -> list[Period]:
        return [] if self.results is None else self.results.periods


def _on_rollup_grid(instant: datetime) -> bool:
    if instant.tzinfo is UTC:  # bucket boundaries are; fields are cheaper than arithmetic
        return not (instant.minute % 15 or instant.second or instant.microsecond)
    return (instant - EPOCH) % ROLLUP_STEP == timedelta(0)


def _ceil_to_grid(instant: datetime, step: timedelta = ROLLUP_STEP) -> datetime:
    remainder = (instant - EPOCH) % step
    return instant if not remainder else instant + (step - remainder)


def _floor_to_grid(instant: datetime, step: timedelta = ROLLUP_STEP) -> datetime:
    return instant - (instant - EPOCH) % step


def _all_whole(instants: Sequence[datetime], unit: timedelta) -> bool:
    if all(instant.tzinfo is UTC for instant in instants):  # as bucket boundaries are
        if unit == timedelta(minutes=1):
            return not any(instant.second or instant.microsecond for instant in instants)
        if unit == timedelta(hours=1):
            return not any(i.minute or i.second or i.microsecond for i in instants)
    return all((instant - EPOCH) % unit == timedelta(0) for instant in instants)


@dataclass(frozen=True)
class _Source:
    """Where to read ``[low, high)``: on the quarter-hour grid ("rollup": the day levels,
    or the chosen tags' taps grouped by ``trunc``) or not ("raw": the taps, grouped by
    ``trunc`` or not at all)."""

    table: Literal["rollup", "raw"]
    low: datetime
    high: datetime
    trunc: str | None
    trunc_zone: tzinfo | None = None


def _sources(
    start: datetime, end: datetime, inner: Sequence[datetime], query: TapQuery
) -> list[_Source]:
    """Where to read ``[start, end)`` from, given the bucket boundaries inside it."""
    # Each check is a pass over up to 2,200 boundaries (a quarter by hour): whole UTC
    # hours are also whole minutes and on the quarter-hour grid.
    whole_hours = query.interval == Interval.HOUR and _all_whole(inner, timedelta(hours=1))
    whole_minutes = whole_hours or _all_whole(inner, timedelta(minutes=1))
    raw_trunc = "minute" if whole_minutes else None
    if query.interval == Interval.MINUTE or not (whole_hours or all(map(_on_rollup_grid, inner))):
        return [_Source("raw", start, end, raw_trunc, UTC)]
    low, high = _ceil_to_grid(start), _floor_to_grid(end)
    if low >= high:
        return [_Source("raw", start, end, raw_trunc, UTC)]
    if query.interval == Interval.HOUR:
        # A UTC hour of rollup rows fits in one bucket when no boundary cuts it.
        rollup = _Source("rollup", low, high, "hour" if whole_hours else None, UTC)
    else:
        # Weeks starting on Monday are what Trunc('week') gives; other weeks gather days.
        kind = str(query.interval)
        if query.interval == Interval.WEEK and query.week_start != 0:
            kind = "day"
        rollup = _Source("rollup", low, high, kind, query.zone)
    sources = [rollup]
    if start < low:
        sources.append(_Source("raw", start, low, raw_trunc, UTC))
    if high < end:
        sources.append(_Source("raw", high, end, raw_trunc, UTC))
    return sources


def _grouped_rows(
    team: Team, source: _Source, tags: Sequence[int], by_tag: bool
) -> Iterable[tuple[Any, ...]]:
    """``(instant, taps)`` or ``(instant, tag, taps)`` rows of the team's raw taps in the
    source's range (of ``tags`` if any), summed in the database."""
    queryset = Tap.objects.filter(team=team, created_at__gte=source.low, created_at__lt=source.high)
    if tags:
        queryset = queryset.filter(tag_id__in=tags)
    trunc = source.trunc
    if trunc is None and source.table == "rollup":
        # Its boundaries are quarter hours, so no minute straddles one.
        trunc = "minute"
    period = Trunc("created_at", trunc, tzinfo=source.trunc_zone) if trunc else F("created_at")
    fields = ["period", "tag_id"] if by_tag else ["period"]
    rows = (
        queryset.annotate(period=period)
        .values(*fields)
        .annotate(taps=Sum("count"))
        .order_by()
        .values_list(*fields, "taps")
    )
    if source.trunc_zone is not UTC:
        return rows
    # Read past the ORM's per-row converters (a busy day by minute is 1,440 rows); a
    # period truncated in UTC comes back naive on PostgreSQL.
    return [
        (period.replace(tzinfo=UTC) if period.tzinfo is None else period, *rest)
        for period, *rest in _binary_rows(rows)
    ]


def _add_day_level(
    team: Team, low: datetime, high: datetime, bounds: Sequence[datetime], sums: list[int]
) -> None:
    """Add the team's taps in ``[low, high)`` (on the quarter-hour grid) to ``sums``, read
    from the day level: one row per UTC day, whatever the zone and the interval.

    The taps of a piece between two bucket boundaries are the difference of the taps
    before each end; the taps before an instant are the whole days before its day plus the
    running total of its day's quarters up to it.
    """
    first, last = low.date(), (high - ROLLUP_STEP).date()
    cuts = [low, *(bound for bound in bounds if low < bound < high), high]
    # Each cut as (UTC day from ``first``, quarter hour of that day), worked out in NumPy:
    # a quarter by hour has 2,200 cuts, which one by one took 6 ms.
    first_start = datetime.combine(first, time(), tzinfo=UTC)
    quarters_in = np.array([(cut - first_start) // ROLLUP_STEP for cut in cuts], dtype=np.int64)
    day_of_cut, quarter_of_cut = np.divmod(quarters_in, QUARTERS_PER_DAY)
    # Read only the running totals the cuts need: none when they fall on UTC midnights,
    # one per day when they share a quarter hour (a fixed offset such as +05:30).
    needed = set(np.unique(quarter_of_cut).tolist()) - {0}
    only = needed.pop() if len(needed) == 1 else None
    what = "slice" if only is not None else "all" if needed else "none"
    params: list[Any] = [8 * (only - 1) + 1] if only is not None else []
    params += [team.pk, connection.ops.adapt_datefield_value(first)]
    params.append(connection.ops.adapt_datefield_value(last))
    days = (last - first).days + 1
    day_taps = np.zeros(days, dtype=np.int64)
    # The taps of each day before each of its quarter hours; the row after the last day
    # is for a cut at its end.
    within_day = np.zeros((days + 1, QUARTERS_PER_DAY), dtype=np.int64)
    with connection.cursor() as cursor:
        cursor.execute(_team_days_sql(what), params)
        for day, taps, *quarters in cursor.fetchall():
            index = (day - first).days
            day_taps[index] = taps
            if only is not None:
                within_day[index, only] = taps_before_quarter(quarters[0], 1)
            elif quarters:
                within_day[index, 1:] = np.frombuffer(quarters[0], dtype=">i8")[:-1]
    before_day = np.concatenate(([0], np.cumsum(day_taps)))
    taps_before_cut = before_day[day_of_cut] + within_day[day_of_cut, quarter_of_cut]
    # Every cut after the first is the next bucket boundary.
    bucket = _bucket_index(bounds, low)
    for offset, taps in enumerate(np.diff(taps_before_cut).tolist()):
        sums[bucket + offset] += taps


def _add_minutes(team: Team, source: _Source, bounds: Sequence[datetime], sums: list[int]) -> None:
    """Add the team's taps in the source's range to ``sums``, summed by UTC minute and
    placed in their buckets with NumPy. The whole minutes of a range of an hour or more
    come from the minute day level; the rest (the seconds before the first whole minute
    and after the last, or all of a shorter range) from the raw taps, summed by minute in
    the database. Minutes placed one by one as datetimes took 2-3 µs each."""
    low, high = _ceil_to_grid(source.low, _MINUTE), _floor_to_grid(source.high, _MINUTE)
    if high - low < _MINUTE_LEVEL_SPAN:
        parts = [_raw_minutes(team, source.low, source.high)]
    else:
        parts = [_minute_day_cells(team, low, high)]
        if source.low < low:
            parts.append(_raw_minutes(team, source.low, low))
        if high < source.high:
            parts.append(_raw_minutes(team, high, source.high))
    seconds = np.concatenate([part[0] for part in parts])
    if not seconds.size:
        return
    taps = np.concatenate([part[1] for part in parts])
    bound_seconds = np.array([(bound - EPOCH) // _SECOND for bound in bounds], dtype=np.int64)
    # As ``_bucket_index``: a minute before the first boundary is in the first bucket.
    buckets = np.searchsorted(bound_seconds, seconds, side="right") - 1
    np.clip(buckets, 0, len(bounds) - 2, out=buckets)
    for bucket, bucket_taps in enumerate(sum_by(buckets, taps, len(bounds) - 1).tolist()):
        if bucket_taps:
            sums[bucket] += bucket_taps


# Below an hour, the few raw taps cost less than a day's packed minutes.
_MINUTE_LEVEL_SPAN = timedelta(hours=1)
_MINUTE = timedelta(minutes=1)


def _raw_minutes(team: Team, low: datetime, high: datetime) -> tuple[Any, Any]:
    """The first second of each UTC minute with taps of the team in ``[low, high)``,
    and its taps, as NumPy columns."""
    with connection.cursor() as cursor:
        adapt = connection.ops.adapt_datetimefield_value
        cursor.execute(_raw_minutes_sql(), [team.pk, adapt(low), adapt(high)])
        rows = cursor.fetchall()
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    seconds, taps = np.array(rows, dtype=np.int64).T
    return seconds, taps


def _minute_day_cells(team: Team, low: datetime, high: datetime) -> tuple[Any, Any]:
    """As ``_raw_minutes``, from the minute day level, for ``[low, high)`` on whole
    minutes: the rows of the UTC days it meets, cut to the range."""
    first, last = low.astimezone(UTC).date(), (high - _MINUTE).astimezone(UTC).date()
    rows = MinuteDay.objects.filter(team=team, day__gte=first, day__lte=last)
    seconds, taps = [], []
    for day, packed in _binary_rows(rows.values_list("day", "minutes")):
        minutes, day_taps = unpack_minutes(packed)
        day_seconds = (day - EPOCH.date()).days * 86_400
        seconds.append(minutes.astype(np.int64) * 60 + day_seconds)
        taps.append(day_taps.astype(np.int64))
    if not seconds:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    all_seconds, all_taps = np.concatenate(seconds), np.concatenate(taps)
    kept = (all_seconds >= (low - EPOCH) // _SECOND) & (all_seconds < (high - EPOCH) // _SECOND)
    return all_seconds[kept], all_taps[kept]


_SECOND = timedelta(seconds=1)


@cache
def _raw_minutes_sql() -> str:
    """A team's raw taps from one instant to another by UTC minute: the minute's first
    second since the epoch, and its taps. Read from the ``(team, created_at)`` index
    alone (``count`` is in it)."""
    created = sql.column(Tap, "created_at")
    if connection.vendor == "postgresql":
        # date_bin is arithmetic on the instant; date_trunc of the instant at UTC converted
        # it to a wall-clock time first (a busy day at bench-10M: 1.4 -> 1.0 ms in psql).
        minute = f"date_bin('1 minute', {created}, TIMESTAMPTZ '1970-01-01 00:00:00+00')"
        first_second = f"date_part('epoch', {minute})::bigint"
    else:
        # Instants are UTC text; strftime('%s') reads the whole seconds of the wall.
        minute = f"substr({created}, 1, 16)"
        first_second = f"CAST(strftime('%%s', {minute} || ':00') AS INTEGER)"
    return (
        f"SELECT {first_second}, sum({sql.column(Tap, 'count')}) FROM {sql.table(Tap)} "
        f"WHERE {sql.column(Tap, 'team')} = %s AND {created} >= %s AND {created} < %s "
        f"GROUP BY {minute}"
    )


@cache
def _team_days_sql(quarters: Literal["none", "slice", "all"]) -> str:
    """A team's day-level rows from one day to another, with no running totals, one
    8-byte slice of them (its start the first parameter) or all of them. Composed once:
    the ORM compiled the same query on every request, a tenth of a cold month's CPU."""
    packed = sql.column(TeamDay, "quarters")
    extra = {"none": "", "slice": f", substr({packed}, %s, 8)", "all": f", {packed}"}[quarters]
    day = sql.column(TeamDay, "day")
    return (
        f"SELECT {day}, {sql.column(TeamDay, 'taps')}{extra} FROM {sql.table(TeamDay)} "
        f"WHERE {sql.column(TeamDay, 'team')} = %s AND {day} >= %s AND {day} <= %s"
    )


def _bucket_index(bounds: Sequence[datetime], instant: datetime) -> int:
    # A group's key may fall before the first boundary (a UTC hour or minute that the
    # range starts in the middle of): its rows are all inside the range, so bucket 0.
    return min(max(bisect_right(bounds, instant) - 1, 0), len(bounds) - 2)


def count_taps(
    team: Team,
    query: TapQuery,
    *,
    as_of: datetime | None = None,
    series_tags: Sequence[int] | None = None,
) -> TapCounts:
    """Count the team's taps in the query's range, by bucket (and by tag if grouped).

    ``as_of`` is the instant the caller reports; taps stored before it are counted.
    ``series_tags`` fixes the series of a grouped query (a comparison uses the series of
    the answer it is compared with). Raises ``periods.TooManyBuckets``.
    """
    as_of = as_of or django_timezone.now()
    start, end = query.range()
    bounds, labels = boundaries(
        start,
        end,
        query.interval,
        query.zone,
        week_start=query.week_start,
        cap=settings.TAPS_MAX_BUCKETS,
    )
    inner = bounds[1:-1]
    by_tag = query.group_by_tag
    sources = _sources(start, end, inner, query)
    size = len(bounds) - 1
    tags = series_tags if series_tags is not None else query.tags
    series_sums: dict[int, list[int]] | None = None
    if not by_tag and not tags:
        team_sums = [0] * size
        for source in sources:
            if source.table == "rollup":
                _add_day_level(team, source.low, source.high, bounds, team_sums)
                continue
            if source.trunc == "minute":
                _add_minutes(team, source, bounds, team_sums)
                continue
            for period, taps in _grouped_rows(team, source, (), by_tag=False):
                team_sums[_bucket_index(bounds, period)] += taps
        total = sum(team_sums)
    elif by_tag and series_tags is not None and not series_tags:
        team_sums, total, series_sums = [0] * size, 0, {}
    elif by_tag and not tags:
        total, tags, cells = _busiest_tags(team, sources, bounds, query.limit)
        series_sums = cells.sums_by_tag(tags, size)
    else:
        cells = _tag_cells(team, sources, bounds, tags)
        team_sums = sum_by(cells.buckets, cells.taps, size).tolist()
        total = sum(team_sums)
        if by_tag:
            if series_tags is None:
                tags = cells.busiest(query.limit, also=query.tags)
            series_sums = cells.sums_by_tag(tags, size)
    local_start, local_end = start.astimezone(query.zone), end.astimezone(query.zone)
    counts = TapCounts(local_start, local_end, total)
    ending = bisect_right(bounds, as_of, lo=1)
    counts.valid_until = bounds[ending] if ending < len(bounds) else None
    buckets = Buckets.of(bounds, labels, start, end, as_of)
    if series_sums is None:
        counts.results = BucketSums(buckets, team_sums, query.fill)
        return counts
    counts.series = [
        Series(tag, sum(sums), BucketSums(buckets, sums, query.fill))
        for tag, sums in series_sums.items()
    ]
    return counts


@dataclass(frozen=True)
class _TagCells:
    """Taps by tag and bucket index, as NumPy columns (a tag and bucket may repeat)."""

    tags: Any
    buckets: Any
    taps: Any

    @cached_property
    def _tag_index(self) -> tuple[Any, Any]:
        """The distinct tags, sorted, and each cell's position among them, for the
        series: one stable sort, which merges the sorted runs of tags that the day level
        stores (``np.unique`` and ``np.searchsorted`` took 9 ms for a busy month where
        this takes 6)."""
        order = np.argsort(self.tags, kind="stable")
        ordered = self.tags[order]
        first = np.empty(len(ordered), dtype=bool)
        first[:1] = True
        np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
        positions = np.empty(len(ordered), dtype=np.int64)
        positions[order] = np.cumsum(first) - 1
        return ordered[first], positions

    @cached_property
    def _tag_sums(self) -> tuple[Any, Any]:
        """The distinct tags, sorted, and each one's taps. Where the ids lie close
        together, summed by id; else after a sort, which need not be stable for a sum.
        Ranking the 70,000 directory entries of a UTC month of team 1 at bench-10M (5,211
        tags) took 0.8 ms by id and 1.8 ms after a sort, against 2.7 ms with the stable
        sort and each entry's position of ``_tag_index``."""
        if not self.tags.size:
            return _NONE, _NONE
        low = int(self.tags.min())
        span = int(self.tags.max()) - low + 1
        if span <= 4 * self.tags.size + _DENSE_SPAN:
            offsets = self.tags - low
            present = np.flatnonzero(np.bincount(offsets, minlength=span))
            return present + low, sum_by(offsets, self.taps, span)[present]
        order = np.argsort(self.tags)
        ordered = self.tags[order]
        starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
        return ordered[starts], np.add.reduceat(self.taps[order], starts)

    def busiest(self, limit: int, also: Sequence[int] = ()) -> list[int]:
        """The ``limit`` tags with the most taps, the most first, a tie to the lower
        tag; the tags in ``also`` are ranked too, with no taps if they have none. Ranked
        in NumPy: sorting a busy month's 5,000 tags with a Python key took 3 ms."""
        distinct, sums = self._tag_sums
        absent = np.setdiff1d(np.asarray(also, dtype=np.int64), distinct) if also else _NONE
        if absent.size:
            distinct = np.concatenate([distinct, absent])
            sums = np.concatenate([sums, np.zeros(absent.size, dtype=np.int64)])
        return distinct[np.lexsort((distinct, -sums))[:limit]].tolist()

    def sums_by_tag(self, tags: Sequence[int], size: int) -> dict[int, list[int]]:
        """Per-bucket sums of each of ``tags``, in their order."""
        if not tags:
            return {}
        distinct, positions = self._tag_index
        wanted = np.asarray(tags, dtype=np.int64)
        # Each distinct tag's series (its index in ``tags``), or -1 if it is not shown.
        series_of = np.full(len(distinct) + 1, -1, dtype=np.int64)
        found = np.searchsorted(distinct, wanted)
        present = np.zeros(len(wanted), dtype=bool)
        inside = found < len(distinct)
        present[inside] = distinct[found[inside]] == wanted[inside]
        series_of[found[present]] = np.flatnonzero(present)
        series = series_of[positions]
        shown = series >= 0
        keys = series[shown] * size + self.buckets[shown]
        sums = sum_by(keys, self.taps[shown], len(tags) * size)
        return {
            tag: row for tag, row in zip(tags, sums.reshape(len(tags), size).tolist(), strict=True)
        }


def _tag_cells(
    team: Team, sources: Sequence[_Source], bounds: Sequence[datetime], tags: Sequence[int]
) -> _TagCells:
    """The chosen tags' taps over the sources, by tag and bucket, from the raw taps by the
    index that leads with the tag: a tag's year is a few hundred index entries there,
    where the day level would be every cell of every tag (a year by day for one tag at
    bench-10M: 120-200 ms)."""
    return _joined_cells([_raw_tag_cells(team, source, bounds, tags) for source in sources])


def _raw_tag_cells(
    team: Team, source: _Source, bounds: Sequence[datetime], tags: Sequence[int]
) -> _TagCells:
    rows = list(_grouped_rows(team, source, tags, by_tag=True))
    return _TagCells(
        np.array([row[1] for row in rows], dtype=np.int64),
        np.array([_bucket_index(bounds, row[0]) for row in rows], dtype=np.int64),
        np.array([row[2] for row in rows], dtype=np.int64),
    )


def _joined_cells(parts: Sequence[_TagCells]) -> _TagCells:
    parts = [part for part in parts if len(part.tags)]
    if not parts:
        return _TagCells(_NONE, _NONE, _NONE)
    if len(parts) == 1:
        return parts[0]
    return _TagCells(
        np.concatenate([part.tags for part in parts]),
        np.concatenate([part.buckets for part in parts]),
        np.concatenate([part.taps for part in parts]),
    )


def _busiest_tags(
    team: Team, sources: Sequence[_Source], bounds: Sequence[datetime], limit: int
) -> tuple[int, list[int], _TagCells]:
    """The team's taps over the sources, its ``limit`` busiest tags (as
    ``_TagCells.busiest``) and their taps by bucket.

    The tags are ranked from the tag day level's directories (each tag's taps over each
    whole UTC day) and from the cells of the UTC days the range cuts; then only the
    shown tags' cells are placed in buckets, and only on the days a bucket boundary
    cuts: elsewhere a tag's day is its directory entry. A UTC month of team 1 at
    bench-10M ranks 70,000 entries (1.4 MB) where it ranked 186,000 cells (3.2 MB).
    """
    raw = [_raw_tag_cells(team, source, bounds, ()) for source in sources if source.table == "raw"]
    rollup = [source for source in sources if source.table == "rollup"]
    days = _TagDays(rollup[0].low, rollup[0].high, bounds) if rollup else None
    if days:
        days.read(team)
    ranked = _joined_cells([*raw, *([days.ranked] if days else [])])
    shown = ranked.busiest(limit)
    parts = [days.cells_of(shown)] if days else []
    wanted = np.asarray(shown, dtype=np.int64)
    for part in raw:
        kept = np.isin(part.tags, wanted)
        parts.append(_TagCells(part.tags[kept], part.buckets[kept], part.taps[kept]))
    return int(ranked.taps.sum()), shown, _joined_cells(parts)


class _TagDays:
    """The tag day level over ``[low, high)`` (on the quarter-hour grid), as read for a
    ranking: ``ranked`` holds each tag's taps of each whole UTC day in the range (in no
    particular bucket) and the cells of the days the range cuts, in their buckets."""

    def __init__(self, low: datetime, high: datetime, bounds: Sequence[datetime]) -> None:
        self.first, self.last = low.date(), (high - ROLLUP_STEP).date()
        day_zero = datetime.combine(self.first, time(), tzinfo=UTC)
        self.low_quarter = (low - day_zero) // ROLLUP_STEP
        self.high_quarter = (high - day_zero) // ROLLUP_STEP
        # A bucket holds the quarters from the first one at or after its start; a table
        # of every quarter's bucket, then one lookup per cell (a search per cell cost
        # more).
        starts = np.array([-((day_zero - bound) // ROLLUP_STEP) for bound in bounds[:-1]])
        self.bucket_of = np.clip(
            np.searchsorted(starts, np.arange(self.high_quarter + 1), side="right") - 1,
            0,
            len(starts) - 1,
        )
        # The days whose cells are read whole: the range cuts them, so their directory
        # does not rank them.
        self.edges = []
        if self.low_quarter % QUARTERS_PER_DAY:
            self.edges.append(self.first)
        if self.high_quarter % QUARTERS_PER_DAY:
            self.edges.append(self.last)
        # The days a bucket boundary cuts: the shown tags' cells are placed one by one.
        inside = starts[(starts > self.low_quarter) & (starts < self.high_quarter)]
        self.cut_day = np.zeros(self.last.toordinal() - self.first.toordinal() + 1, dtype=bool)
        self.cut_day[inside[inside % QUARTERS_PER_DAY != 0] // QUARTERS_PER_DAY] = True

    def read(self, team: Team) -> None:
        """Read the days' directories, and the cells of the days that need them. Where a
        bucket boundary cuts days, every day's cells come in the same statement: cutting
        out the shown tags' cells in SQL sent a tenth of the bytes but took longer (a
        month of team 1 at bench-10M in Asia/Kolkata: 38-42 ms in all against 28)."""
        with_cells = self.edges if not self.cut_day.any() else None
        adapt = connection.ops.adapt_datefield_value
        params: list[Any] = [adapt(day) for day in with_cells or ()]
        params += [team.pk, adapt(self.first), adapt(self.last)]
        found = _fetched(_tag_days_sql(len(with_cells) if with_cells is not None else None), params)
        # Every directory entry of the days inside the range, with its day and its
        # cells' range; and the cells read, joined, with the place of each day's first.
        indexes, tags, taps, ends, edges, cell_taps, cell_quarters = [], [], [], [], [], [], []
        cells_before = np.zeros(len(self.cut_day), dtype=np.int64)
        read = 0
        for day, directory, cells in found:
            index = (day - self.first).days
            if day in self.edges:
                packed = bytes(directory) + bytes(cells)
                edges.append(self._placed(index, unpack_tag_cells(packed)))
                continue
            day_tags, day_taps, day_ends = unpack_tag_directory(directory)
            indexes.append(np.full(len(day_tags), index, dtype=np.int64))
            tags.append(day_tags)
            taps.append(day_taps)
            ends.append(day_ends)
            if cells is not None:
                size = len(cells) // TAG_CELL_SIZE
                cell_taps.append(np.frombuffer(cells, dtype=">i8", count=size))
                cell_quarters.append(np.frombuffer(cells, dtype="u1", count=size, offset=8 * size))
                cells_before[index] = read
                read += size
        self.index = np.concatenate(indexes or [_NONE])
        self.tags = np.concatenate(tags or [_NONE]).astype(np.int64)
        self.taps = np.concatenate(taps or [_NONE]).astype(np.int64)
        self.ends = np.concatenate(ends or [_NONE]).astype(np.int64)
        # A day's first entry starts at its first cell.
        first_of_day = np.ones(len(self.index), dtype=bool)
        first_of_day[1:] = self.index[1:] != self.index[:-1]
        self.starts = np.where(first_of_day, 0, np.roll(self.ends, 1))
        self.cells_before = cells_before
        self.cell_taps = np.concatenate(cell_taps or [_NONE.astype(">i8")])
        self.cell_quarters = np.concatenate(cell_quarters or [_NONE.astype("u1")])
        self.edge_cells = _joined_cells(edges)
        self.ranked = _joined_cells(
            [
                _TagCells(self.tags, np.zeros(len(self.tags), dtype=np.int64), self.taps),
                self.edge_cells,
            ]
        )

    def _placed(self, index: Any, cells: tuple[Any, Any, Any]) -> _TagCells:
        tags, taps, quarters = cells
        quarters = quarters + index * QUARTERS_PER_DAY
        kept = (quarters >= self.low_quarter) & (quarters < self.high_quarter)
        return _TagCells(tags[kept], self.bucket_of[quarters[kept]], taps[kept])

    def cells_of(self, shown: Sequence[int]) -> _TagCells:
        """The shown tags' taps by bucket."""
        wanted = np.asarray(shown, dtype=np.int64)
        edges = self.edge_cells
        kept = np.isin(edges.tags, wanted)
        parts = [_TagCells(edges.tags[kept], edges.buckets[kept], edges.taps[kept])]
        chosen = np.isin(self.tags, wanted)
        # A day no bucket boundary cuts is in the bucket of its first quarter hour.
        cut = self.cut_day[self.index]
        whole = chosen & ~cut
        parts.append(
            _TagCells(
                self.tags[whole],
                self.bucket_of[self.index[whole] * QUARTERS_PER_DAY],
                self.taps[whole],
            )
        )
        sliced = chosen & cut
        if sliced.any():
            index, starts, ends = self.index[sliced], self.starts[sliced], self.ends[sliced]
            lengths = ends - starts
            # Each chosen cell's place among the cells read.
            at = _positions(starts + self.cells_before[index], lengths)
            cells = (
                np.repeat(self.tags[sliced], lengths),
                self.cell_taps[at].astype(np.int64),
                self.cell_quarters[at].astype(np.int64),
            )
            parts.append(self._placed(np.repeat(index, lengths), cells))
        return _joined_cells(parts)


def _positions(starts: Any, lengths: Any) -> Any:
    """Every index of the ranges of ``lengths`` from ``starts``, in order."""
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return np.arange(int(lengths.sum())) + offsets


def _binary_rows(rows: Any) -> Any:
    """The rows of a ``values_list`` query; on PostgreSQL in binary, which spares encoding
    and decoding a busy month's cells as hexadecimal text (3 MB at bench-10M)."""
    if connection.vendor != "postgresql":
        return rows
    return _fetched(*rows.query.sql_with_params())


def _fetched(statement: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """The rows of a statement; on PostgreSQL in binary (as ``_binary_rows``)."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall()
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(statement, params, binary=True)
        return cursor.fetchall()


@cache
def _tag_days_sql(days_with_cells: int | None) -> str:
    """A team's tag days from one day to another, in order: each day's directory, and
    the cells of the ``days_with_cells`` days given before the team (every day's if
    None). Composed once: the ORM compiled it on every request, a tenth of a month's
    time by tag."""
    day, cells = sql.column(TagDay, "day"), sql.column(TagDay, "cells")
    if days_with_cells is None:
        which = "1 = 1"
    elif days_with_cells:
        which = f"{day} IN ({', '.join(['%s'] * days_with_cells)})"
    else:
        which = "1 = 0"
    return (
        f"SELECT {day}, {sql.column(TagDay, 'tags')}, CASE WHEN {which} THEN {cells} END "
        f"FROM {sql.table(TagDay)} WHERE {sql.column(TagDay, 'team')} = %s "
        f"AND {day} >= %s AND {day} <= %s ORDER BY {day}"
    )


def compared_query(query: TapQuery, compare: Compare) -> TapQuery:
    """The range to compare with: the same length just before, or a year earlier.

    A range given in dates moves by whole local days (a month of 31 days is compared with
    the 31 days before it); one given as instants moves by elapsed time, or by a year on
    the local calendar.
    """
    if compare == "year":
        return replace(
            query,
            start=_years_earlier(query.start, query.zone),
            end=_years_earlier(query.end, query.zone),
        )
    if query.start.day is not None and query.end.day is not None:
        days = (query.end.day - query.start.day).days + 1
        return replace(
            query,
            start=Endpoint(day=query.start.day - timedelta(days=days)),
            end=Endpoint(day=query.start.day - timedelta(days=1)),
        )
    start, end = query.range()
    return replace(
        query, start=Endpoint(instant=start - (end - start)), end=Endpoint(instant=start)
    )


def _years_earlier(endpoint: Endpoint, zone: ZoneInfo) -> Endpoint:
    if endpoint.day is not None:
        return Endpoint(day=shift_years(endpoint.day, -1))
    assert endpoint.instant is not None
    wall = local_wall(endpoint.instant, zone)
    earlier = datetime.combine(shift_years(wall.date(), -1), wall.time())
    return Endpoint(instant=earlier.replace(tzinfo=zone).astimezone(UTC))

"""The rollups: the 15-minute bucket expression, the day levels built from the team's
15-minute rows and from the raw taps, and the operators' check and rebuild.

The write path (``analytics.ingest``) keeps the rollups in step with the raw taps. These
functions recompute them from the raw taps, which is what ``verify_rollup`` and
``rebuild_rollup`` expose.
"""

import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import reduce
from itertools import accumulate, groupby
from operator import or_
from typing import Any

import numpy as np
from django.db import connection, transaction
from django.db.models import DateTimeField, Q, QuerySet, Sum
from django.db.models.expressions import RawSQL
from django.db.models.functions import Trunc
from django.utils.dateparse import parse_datetime

from analytics.models import MinuteDay, TagDay, Tap, TeamDay, TeamRollup

QUARTERS_PER_DAY = 96
_QUARTERS = struct.Struct(f">{QUARTERS_PER_DAY}q")
_EMPTY_DAY = bytes(_QUARTERS.size)
_TAPS = struct.Struct(">q")


def pack_quarters(counts: Sequence[int]) -> bytes:
    """A day's 96 quarter-hour counts as ``TeamDay.quarters`` stores them: running totals
    (the taps up to the end of each quarter) as big-endian 64-bit integers, so the taps
    before any quarter hour are one 8-byte read."""
    return _QUARTERS.pack(*accumulate(counts))


def unpack_quarters(quarters: bytes | memoryview) -> tuple[int, ...]:
    """The 96 quarter-hour counts of a packed day."""
    totals = _QUARTERS.unpack(quarters)
    return tuple(total - before for total, before in zip(totals, (0, *totals[:-1]), strict=True))


def taps_before_quarter(quarters: bytes | memoryview, quarter: int) -> int:
    """The taps of a packed day before its ``quarter``-th quarter hour (0 to 96)."""
    return _TAPS.unpack_from(quarters, 8 * (quarter - 1))[0] if quarter else 0


# A tag day is stored in two columns. ``tags``, the day's directory: the number of tags,
# then, ordered by tag, each tag, its taps over the day and where its cells end (the
# index after its last cell). ``cells``: every (tag, quarter hour) with taps, ordered by
# tag and quarter, as the taps (big-endian 64-bit integers, as PostgreSQL's ``int8send``
# writes them) then the quarters (bytes); a cell's tag is the directory's.
_TAG_COUNT = struct.Struct(">i")
TAG_ENTRY_SIZE = 20
TAG_CELL_SIZE = 9


def pack_tag_cells(tags: Sequence[int], counts: Sequence[int], quarters: Sequence[int]) -> bytes:
    """A day's (tag, quarter hour, taps) cells, each (tag, quarter) once, as ``TagDay``
    stores them: its ``tags`` column followed by its ``cells`` column.

    The directory lets a month with ``group_by=tag`` rank the tags from each tag's taps
    over each day, and place only the cells of the tags it shows; ordered by tag, a
    month's directories are a few dozen sorted runs, which a stable sort merges
    (``analytics.queries._TagCells``).
    """
    tag_array = np.asarray(tags, dtype=np.int64)
    quarter_array = np.asarray(quarters, dtype=np.int64)
    order = np.lexsort((quarter_array, tag_array))
    groups = np.zeros(len(order), dtype=np.int64)
    count_array = np.asarray(counts, dtype=np.int64)[order]
    return pack_tag_days(groups, tag_array[order], quarter_array[order], count_array, 1)[1][0]


def pack_tag_days(
    groups: Any, tags: Any, quarters: Any, counts: Any, size: int
) -> tuple[list[int], list[bytes]]:
    """Each of ``size`` days' taps and packed tags (as ``pack_tag_cells``), from int64
    cells sorted by day (``groups``, 0 to ``size - 1``), tag and quarter, each (day,
    tag, quarter) once; a day without cells is packed as an empty directory."""
    cells = len(groups)
    first_of_tag = np.empty(cells, dtype=bool)
    first_of_tag[:1] = True
    first_of_tag[1:] = (groups[1:] != groups[:-1]) | (tags[1:] != tags[:-1])
    tag_starts = np.flatnonzero(first_of_tag)
    tag_groups = groups[tag_starts]
    cell_bounds = np.searchsorted(groups, np.arange(size + 1))
    tag_bounds = np.searchsorted(tag_groups, np.arange(size + 1)).tolist()
    ends = np.append(tag_starts[1:], cells) - cell_bounds[tag_groups]
    tag_totals = np.add.reduceat(counts, tag_starts) if cells else counts
    directory = (
        tags[tag_starts].astype(">i8"),
        tag_totals.astype(">i8"),
        ends.astype(">i4"),
    )
    cell_columns = (counts.astype(">i8"), quarters.astype("u1"))
    cell_bounds = cell_bounds.tolist()
    values = [
        _TAG_COUNT.pack(tag_end - tag_start)
        + b"".join(column[tag_start:tag_end].tobytes() for column in directory)
        + b"".join(column[cell_start:cell_end].tobytes() for column in cell_columns)
        for tag_start, tag_end, cell_start, cell_end in zip(
            tag_bounds[:-1], tag_bounds[1:], cell_bounds[:-1], cell_bounds[1:], strict=True
        )
    ]
    return sum_by(groups, counts, size).tolist(), values


def tag_directory_size(packed: bytes | memoryview) -> int:
    """The length of the ``tags`` column at the start of ``packed``."""
    return _TAG_COUNT.size + TAG_ENTRY_SIZE * _TAG_COUNT.unpack_from(packed)[0]


# ``split_tag_day`` in SQL: the directory's length from its first four bytes.
_TAG_DIRECTORY_SIZE_SQL = (
    f"({_TAG_COUNT.size} + {TAG_ENTRY_SIZE} * ((get_byte({{value}}, 0) << 24) "
    "| (get_byte({value}, 1) << 16) | (get_byte({value}, 2) << 8) | get_byte({value}, 3)))"
)
_SPLIT_TAG_DAY_SQL = (
    f"substring({{value}} FROM 1 FOR {_TAG_DIRECTORY_SIZE_SQL}), "
    f"substring({{value}} FROM {_TAG_DIRECTORY_SIZE_SQL} + 1)"
)


def split_tag_day(packed: bytes) -> tuple[bytes, bytes]:
    """A packed tag day as its ``tags`` and ``cells`` columns."""
    size = tag_directory_size(packed)
    return packed[:size], packed[size:]


def unpack_tag_directory(directory: bytes | memoryview) -> tuple[Any, Any, Any]:
    """The ``(tags, taps, cell ends)`` arrays of a day's directory (a ``tags`` column, or
    a packed day, which starts with it)."""
    size = _TAG_COUNT.unpack_from(directory)[0]
    start = _TAG_COUNT.size
    return (
        np.frombuffer(directory, dtype=">i8", count=size, offset=start),
        np.frombuffer(directory, dtype=">i8", count=size, offset=start + 8 * size),
        np.frombuffer(directory, dtype=">i4", count=size, offset=start + 16 * size),
    )


def unpack_tag_cells(packed: bytes | memoryview) -> tuple[Any, Any, Any]:
    """The ``(tags, taps, quarters)`` int64 arrays of a packed day's cells."""
    tags, _, ends = unpack_tag_directory(packed)
    cells = memoryview(packed)[tag_directory_size(packed) :]
    size = len(cells) // TAG_CELL_SIZE
    return (
        np.repeat(tags.astype(np.int64), np.diff(ends, prepend=0)),
        np.frombuffer(cells, dtype=">i8", count=size).astype(np.int64),
        np.frombuffer(cells, dtype="u1", count=size, offset=8 * size).astype(np.int64),
    )


# A float64 sum is exact below 2**53; bincount sums in float64, and is 10 times faster
# than the exact integer np.add.at.
_EXACT_IN_FLOAT = 2**53


def sum_by(keys: Any, taps: Any, size: int) -> Any:
    """``taps`` summed by ``keys`` (integers below ``size``), exactly, as int64."""
    if not taps.size:
        return np.zeros(size, dtype=np.int64)
    if int(taps.max()) * taps.size < _EXACT_IN_FLOAT:
        return np.bincount(keys, weights=taps, minlength=size).astype(np.int64)
    sums = np.zeros(size, dtype=np.int64)
    np.add.at(sums, keys, taps)
    return sums


def pack_minutes(minutes: Sequence[int], counts: Sequence[int]) -> bytes:
    """A day's (minute of the UTC day, taps) cells as ``MinuteDay.minutes`` stores them,
    ordered by minute: the minutes as big-endian 16-bit integers (PostgreSQL's
    ``int2send``), then the taps as 64-bit ones."""
    minute_array = np.asarray(minutes, dtype=np.int64)
    order = np.argsort(minute_array, kind="stable")
    return (
        minute_array[order].astype(">i2").tobytes()
        + np.asarray(counts, dtype=np.int64)[order].astype(">i8").tobytes()
    )


def unpack_minutes(cells: bytes | memoryview) -> tuple[Any, Any]:
    """The ``(minutes, taps)`` arrays of a packed day."""
    size = len(cells) // 10
    return (
        np.frombuffer(cells, dtype=">i2", count=size),
        np.frombuffer(cells, dtype=">i8", count=size, offset=2 * size),
    )


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def quarter_of(instant: datetime) -> int:
    """The index in its UTC day of the quarter hour starting at ``instant``."""
    return (instant.hour * 60 + instant.minute) // 15


def _team_and_day(row: tuple[Any, ...]) -> tuple[int, date]:
    return row[0], row[-2].astimezone(UTC).date()


def team_day_levels(
    fine_rows: Iterable[tuple[int, datetime, int]],
) -> Iterator[tuple[int, date, int, bytes]]:
    """``(team, day, taps, quarters)`` from team rollup rows ``(team, bucket, taps)``
    sorted by team and bucket."""
    for (team_id, day), rows in groupby(fine_rows, key=_team_and_day):
        counts = [0] * QUARTERS_PER_DAY
        for _, bucket, taps in rows:
            counts[quarter_of(bucket.astimezone(UTC))] += taps
        yield team_id, day, sum(counts), pack_quarters(counts)


def tag_day_levels(
    fine_rows: Iterable[tuple[int, int, datetime, int]],
) -> Iterator[tuple[int, date, int, bytes]]:
    """``(team, day, taps, cells)`` from rows ``(team, tag, bucket, taps)`` of the taps
    summed by tag and 15-minute bucket, sorted by team, bucket and tag."""
    for (team_id, day), rows in groupby(fine_rows, key=_team_and_day):
        tags, counts, quarters = [], [], []
        for _, tag, bucket, taps in rows:
            tags.append(tag)
            counts.append(taps)
            quarters.append(quarter_of(bucket.astimezone(UTC)))
        yield team_id, day, sum(counts), pack_tag_cells(tags, counts, quarters)


def minute_day_levels(
    fine_rows: Iterable[tuple[int, datetime, int]],
) -> Iterator[tuple[int, date, int, bytes]]:
    """``(team, day, taps, minutes)`` from rows ``(team, minute, taps)`` of the taps
    summed by minute, sorted by team and minute."""
    for (team_id, day), rows in groupby(fine_rows, key=_team_and_day):
        minutes, counts = [], []
        for _, minute, taps in rows:
            at = minute.astimezone(UTC)
            minutes.append(at.hour * 60 + at.minute)
            counts.append(taps)
        yield team_id, day, sum(counts), pack_minutes(minutes, counts)


def _team_quarters() -> QuerySet[Any]:
    return TeamRollup.objects.order_by("team_id", "bucket").values_list("team_id", "bucket", "taps")


def _tag_quarters() -> QuerySet[Any]:
    bucket = RawSQL(bucket_sql("created_at"), [], output_field=DateTimeField())
    return (
        Tap.objects.annotate(bucket=bucket)
        .values("team_id", "bucket", "tag_id")
        .annotate(taps=Sum("count"))
        .order_by("team_id", "bucket", "tag_id")
        .values_list("team_id", "tag_id", "bucket", "taps")
    )


def _team_minutes() -> QuerySet[Any]:
    return (
        Tap.objects.annotate(minute=Trunc("created_at", "minute", tzinfo=UTC))
        .values("team_id", "minute")
        .annotate(taps=Sum("count"))
        .order_by("team_id", "minute")
        .values_list("team_id", "minute", "taps")
    )


@dataclass(frozen=True)
class _DayLevel:
    """A day level and the 15-minute rows it is built from: ``quarters`` gives them for
    every team, with their instants in ``time_field``."""

    name: str
    model: Any
    columns: tuple[str, ...]
    quarters: Callable[[], QuerySet[Any]]
    time_field: str
    build: Callable[[Iterable[Any]], Iterator[tuple[int, date, int, bytes]]]
    empty: bytes
    # A packed day is its columns' values one after the other; these cut it apart, in
    # Python and in PostgreSQL's SQL (from the packed value ``{value}``).
    split: Callable[[bytes], tuple[bytes, ...]] = lambda packed: (packed,)
    split_sql: str = "{value}"

    @property
    def stored_sql(self) -> str:
        """A stored row's packed day, on PostgreSQL, from its row ``l``."""
        return " || ".join(f"l.{column}" for column in self.columns)

    def joined(self, values: Sequence[bytes | memoryview]) -> bytes:
        """A packed day from its columns' values, as the ORM reads them."""
        return b"".join(bytes(value) for value in values)

    def fine_rows(
        self,
        runs: Sequence[tuple[int, date, date]] | None = None,
        team_ids: Sequence[int] | None = None,
    ) -> Any:
        """The 15-minute rows of the ``(team, first day, last day)`` runs (all days if
        None) of the given teams (all if None)."""
        rows = self.quarters()
        if runs is not None:
            field = self.time_field
            rows = rows.filter(
                reduce(
                    or_,
                    (
                        Q(
                            team_id=team_id,
                            **{
                                f"{field}__gte": day_start(first),
                                f"{field}__lt": day_start(last) + timedelta(days=1),
                            },
                        )
                        for team_id, first, last in runs
                    ),
                )
            )
        if team_ids is not None:
            rows = rows.filter(team_id__in=team_ids)
        return rows.iterator()

    def write(self, days: Iterable[tuple[int, date, int, bytes]]) -> int:
        updates = ", ".join(f"{column} = excluded.{column}" for column in self.columns)
        sql = f"""INSERT INTO {self.model._meta.db_table} (team_id, day, taps, {
            ", ".join(self.columns)
        })
                  VALUES (%s, %s, %s, {", ".join(["%s"] * len(self.columns))})
                  ON CONFLICT (team_id, day) DO UPDATE
                  SET taps = excluded.taps, {updates}"""
        adapt = connection.ops.adapt_datefield_value
        rows = [
            (team_id, adapt(day), taps, *self.split(packed)) for team_id, day, taps, packed in days
        ]
        with connection.cursor() as cursor:
            for chunk_start in range(0, len(rows), 1000):
                cursor.executemany(sql, rows[chunk_start : chunk_start + 1000])
        return len(rows)


TEAM_DAY_LEVEL = _DayLevel(
    "day", TeamDay, ("quarters",), _team_quarters, "bucket", team_day_levels, _EMPTY_DAY
)
TAG_DAY_LEVEL = _DayLevel(
    "tag day",
    TagDay,
    ("tags", "cells"),
    _tag_quarters,
    "created_at",
    tag_day_levels,
    _TAG_COUNT.pack(0),
    split_tag_day,
    _SPLIT_TAG_DAY_SQL,
)
MINUTE_DAY_LEVEL = _DayLevel(
    "minute day", MinuteDay, ("minutes",), _team_minutes, "created_at", minute_day_levels, b""
)
DAY_LEVELS = (TEAM_DAY_LEVEL, TAG_DAY_LEVEL, MINUTE_DAY_LEVEL)


def _day_runs(pairs: Iterable[tuple[int, date]]) -> Iterator[tuple[int, date, date]]:
    """``(team, first, last)`` runs of consecutive days among the (team, day) pairs."""
    ordered = sorted(set(pairs))
    run: list[tuple[int, date]] = []
    for team_id, day in ordered:
        if run and (run[-1][0] != team_id or run[-1][1] + timedelta(days=1) != day):
            yield run[0][0], run[0][1], run[-1][1]
            run = []
        run.append((team_id, day))
    if run:
        yield run[0][0], run[0][1], run[-1][1]


# The day levels of the (team_id, day) pairs that ``touched`` selects, rebuilt in SQL
# with the same bytes as ``team_day_levels`` and ``tag_day_levels``. The team rollup rows
# and the raw taps of each pair are read by a LATERAL index range scan: with a plain join
# the planner could scan a team's whole (tag, quarter hour) rollup, as it was then (2 s a
# batch at 10M). ``OFFSET 0`` keeps the planner from pulling the LATERAL subquery up into
# such a join, which it did when its estimates changed mid-load: a two-connection
# bench-10M load spent 195 s in the tag-day rebuilds instead of 33 s.
_REFRESH_TEAM_DAYS_SQL = """
    WITH touched AS ({touched}), spans AS (
        SELECT team_id, day, day::timestamp AT TIME ZONE 'UTC' AS since FROM touched
    ), fine AS (
        SELECT d.team_id, d.day,
               (extract(epoch FROM r.bucket - d.since) / 900)::int AS quarter, r.taps
        FROM spans d CROSS JOIN LATERAL (
            SELECT bucket, taps FROM analytics_teamrollup
            WHERE team_id = d.team_id
                AND bucket >= d.since AND bucket < d.since + interval '1 day'
            OFFSET 0
        ) r
    ), running AS (
        SELECT d.team_id, d.day, q.quarter,
               (sum(coalesce(f.taps, 0)) OVER (
                   PARTITION BY d.team_id, d.day ORDER BY q.quarter))::bigint AS total
        FROM spans d CROSS JOIN generate_series(0, 95) AS q(quarter)
        LEFT JOIN fine f ON f.team_id = d.team_id AND f.day = d.day AND f.quarter = q.quarter
    )
    INSERT INTO analytics_teamday AS l (team_id, day, taps, quarters)
    SELECT team_id, day, max(total), string_agg(int8send(total), ''::bytea ORDER BY quarter)
    FROM running GROUP BY team_id, day
    ON CONFLICT (team_id, day) DO UPDATE SET taps = EXCLUDED.taps, quarters = EXCLUDED.quarters
"""
# The quarter hour of its UTC day that the instant ``{0}`` falls in (``date_part`` is
# double precision; ``extract`` computes in numeric, several times slower).
_QUARTER_SQL = """(date_part('hour', {0} AT TIME ZONE 'UTC') * 4
                  + floor(date_part('minute', {0} AT TIME ZONE 'UTC') / 15))::int"""


# Each day's (tag_id, quarter, taps) cells of ``fine`` packed as ``pack_tag_cells``
# packs them: a day without taps keeps an empty directory.
_PACKED_TAG_DAYS_SQL = """
    SELECT team_id, day, coalesce(sum(taps), 0),
           int4send(count(tag_id)::int)
               || coalesce(string_agg(int8send(tag_id), ''::bytea ORDER BY tag_id)
                           || string_agg(int8send(taps::bigint), ''::bytea ORDER BY tag_id)
                           || string_agg(int4send(cells_end::int), ''::bytea ORDER BY tag_id),
                           ''::bytea),
           coalesce(string_agg(cell_taps, ''::bytea ORDER BY tag_id)
                    || string_agg(cell_quarters, ''::bytea ORDER BY tag_id), ''::bytea)
    FROM (
        SELECT *, sum(cells) OVER (PARTITION BY team_id, day ORDER BY tag_id) AS cells_end
        FROM (
            SELECT team_id, day, tag_id, sum(taps) AS taps, count(taps) AS cells,
                   string_agg(int8send(taps), ''::bytea ORDER BY quarter) AS cell_taps,
                   string_agg(set_byte('\\x00'::bytea, 0, quarter), ''::bytea ORDER BY quarter)
                       AS cell_quarters
            FROM fine GROUP BY team_id, day, tag_id
        ) AS by_tag
    ) AS ended
    GROUP BY team_id, day"""

# The minute of its UTC day that the instant ``{0}`` falls in, and a day's (minute, taps)
# rows packed as ``pack_minutes`` packs them.
_MINUTE_SQL = """(date_part('hour', {0} AT TIME ZONE 'UTC') * 60
                 + date_part('minute', {0} AT TIME ZONE 'UTC'))::int"""
_PACKED_MINUTES_SQL = """string_agg(int2send(minute::smallint), ''::bytea ORDER BY minute)
           || string_agg(int8send(taps), ''::bytea ORDER BY minute)"""


@dataclass(frozen=True)
class _CellLevel:
    """A day level of packed cells built from raw taps: its table, the cell's key
    columns with their SQL over a tap ``t``, and a SELECT of each (team_id, day) of the
    cells ``fine`` with its taps and its packed columns."""

    table: str
    keys: dict[str, str]
    columns: tuple[str, ...]
    packed: str

    def rebuild_sql(self) -> str:
        """The level of the (team_id, day) pairs of the SELECT ``{touched}``, rebuilt
        from their raw taps."""
        keys = ", ".join(self.keys)
        return f"""
    WITH touched AS ({{touched}}), spans AS (
        SELECT team_id, day, day::timestamp AT TIME ZONE 'UTC' AS since FROM touched
    ), fine AS (
        SELECT d.team_id, d.day, {", ".join(f"r.{key}" for key in self.keys)}, r.taps
        FROM spans d LEFT JOIN LATERAL (
            SELECT {self._key_sql()}, sum(count) AS taps FROM analytics_tap t
            WHERE team_id = d.team_id
                AND created_at >= d.since AND created_at < d.since + interval '1 day'
            GROUP BY {keys}
            OFFSET 0
        ) r ON true
    )
    INSERT INTO {self.table} AS l (team_id, day, taps, {", ".join(self.columns)})
    {self.packed}
    ON CONFLICT (team_id, day) DO UPDATE
    SET taps = EXCLUDED.taps, {", ".join(f"{c} = EXCLUDED.{c}" for c in self.columns)}
"""

    def _key_sql(self, *, named: bool = True) -> str:
        return ", ".join(f"{sql} AS {key}" if named else sql for key, sql in self.keys.items())


_TAG_CELLS = _CellLevel(
    "analytics_tagday",
    {"tag_id": "t.tag_id", "quarter": _QUARTER_SQL.format("t.created_at")},
    ("tags", "cells"),
    _PACKED_TAG_DAYS_SQL,
)
_MINUTE_CELLS = _CellLevel(
    "analytics_minuteday",
    {"minute": _MINUTE_SQL.format("t.created_at")},
    ("minutes",),
    f"""SELECT team_id, day, coalesce(sum(taps), 0), coalesce({_PACKED_MINUTES_SQL}, ''::bytea)
    FROM fine GROUP BY team_id, day""",
)
_REFRESH_TAG_DAYS_SQL = _TAG_CELLS.rebuild_sql()
_REFRESH_MINUTE_DAYS_SQL = _MINUTE_CELLS.rebuild_sql()


def refresh_team_days_in_sql(cursor: Any, touched: str, params: Sequence[Any] = ()) -> None:
    """Rebuild the team day level, on PostgreSQL, of the (team_id, day) pairs the SELECT
    ``touched`` gives, from the team rollup."""
    cursor.execute(_REFRESH_TEAM_DAYS_SQL.format(touched=touched), params)


def refresh_minute_days_in_sql(cursor: Any, touched: str, params: Sequence[Any] = ()) -> None:
    """Rebuild the minute day level, on PostgreSQL, of the (team_id, day) pairs the
    SELECT ``touched`` gives, from the raw taps."""
    cursor.execute(_REFRESH_MINUTE_DAYS_SQL.format(touched=touched), params)


def refresh_tag_days_in_sql(cursor: Any, touched: str, params: Sequence[Any] = ()) -> None:
    """Rebuild the tag day level, on PostgreSQL, of the (team_id, day) pairs the SELECT
    ``touched`` gives, from the raw taps."""
    cursor.execute(_REFRESH_TAG_DAYS_SQL.format(touched=touched), params)


_REFRESH_IN_SQL = {
    TEAM_DAY_LEVEL.name: refresh_team_days_in_sql,
    TAG_DAY_LEVEL.name: refresh_tag_days_in_sql,
    MINUTE_DAY_LEVEL.name: refresh_minute_days_in_sql,
}


def refresh_day_levels(
    pairs: Iterable[tuple[int, date]], levels: Sequence[_DayLevel] = DAY_LEVELS
) -> None:
    """Rebuild the day levels of the given (team, UTC day) pairs from the team rollup
    and the raw taps; a day that has lost all its rows keeps an empty row."""
    runs = list(_day_runs(pairs))
    if not runs:
        return
    for level in levels:
        found = {
            (team_id, day): (taps, packed)
            for team_id, day, taps, packed in level.build(level.fine_rows(runs))
        }
        days = []
        for team_id, first, last in runs:
            day = first
            while day <= last:
                taps, packed = found.get((team_id, day), (0, level.empty))
                days.append((team_id, day, taps, packed))
                day += timedelta(days=1)
        level.write(days)


def refresh_all_day_levels(levels: Sequence[_DayLevel] = DAY_LEVELS) -> None:
    """Rebuild every stored row of the given day levels from the team rollup and the raw
    taps, as the write path would now write it (after a change to how a day is packed).
    A migration names the levels that existed when it was written."""
    stored_days = " UNION ".join(
        f"SELECT team_id, day FROM {level.model._meta.db_table}" for level in levels
    )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            for level in levels:
                _REFRESH_IN_SQL[level.name](cursor, stored_days)
            return
        cursor.execute(stored_days)
        pairs = [(team_id, date.fromisoformat(str(day))) for team_id, day in cursor.fetchall()]
    refresh_day_levels(pairs, levels)


def bucket_sql(column: str) -> str:
    """SQL for the UTC start of the 15-minute bucket holding the instant in ``column``."""
    if connection.vendor == "postgresql":
        return f"date_bin('15 minutes', {column}, TIMESTAMPTZ '1970-01-01 00:00:00+00')"
    # SQLite keeps instants as UTC text 'YYYY-MM-DD HH:MM:SS[.ffffff]', as Django writes
    # them; a bucket is written the way Django writes a whole minute.
    return (
        f"(substr({column}, 1, 14) || "
        f"printf('%%02d', CAST(substr({column}, 15, 2) AS INTEGER) / 15 * 15) || ':00')"
    )


@dataclass(frozen=True)
class RollupDifference:
    table: str
    team_id: int
    bucket: datetime
    raw_taps: int
    rollup_taps: int


def _team_filter(team_ids: Sequence[int] | None) -> tuple[str, list[int]]:
    if team_ids is None:
        return "", []
    if not team_ids:
        return "WHERE false", []
    placeholders = ", ".join(["%s"] * len(team_ids))
    return f"WHERE team_id IN ({placeholders})", list(team_ids)


def _as_datetime(value: datetime | str) -> datetime:
    if isinstance(value, str):  # SQLite
        parsed = parse_datetime(value + "+00:00")
        assert parsed is not None
        return parsed
    return value


def find_rollup_differences(
    team_ids: Sequence[int] | None = None, *, limit: int = 1000
) -> tuple[int, list[RollupDifference]]:
    """Compare the team rollup and both day levels with sums recomputed from the raw taps.

    Returns the number of differing buckets and up to ``limit`` of them.
    ``team_ids=None`` checks every team.
    """
    where, params = _team_filter(team_ids)
    bucket = bucket_sql("created_at")
    sql = f"""
        SELECT team_id, bucket, sum(raw), sum(rolled) FROM (
            SELECT team_id, {bucket} AS bucket, count AS raw, 0 AS rolled
            FROM analytics_tap {where}
            UNION ALL
            SELECT team_id, bucket, 0, taps FROM analytics_teamrollup {where}
        ) AS sums
        GROUP BY team_id, bucket HAVING sum(raw) <> sum(rolled)
        ORDER BY team_id, bucket
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, params + params)
        differences = [
            RollupDifference("team", team_id, _as_datetime(bucket_start), raw, rolled)
            for team_id, bucket_start, raw, rolled in cursor
        ]
    differences += _day_level_differences(team_ids)
    return len(differences), differences[:limit]


def _day_level_differences(team_ids: Sequence[int] | None) -> list[RollupDifference]:
    """Days whose day-level row disagrees with the rows it is built from (a day without
    taps may keep an empty row)."""
    differences = []
    for level in DAY_LEVELS:
        expected = {
            (team_id, day): (taps, packed)
            for team_id, day, taps, packed in level.build(level.fine_rows(team_ids=team_ids))
        }
        stored = level.model.objects.all()
        if team_ids is not None:
            stored = stored.filter(team_id__in=team_ids)
        for team_id, day, taps, *columns in stored.values_list(
            "team_id", "day", "taps", *level.columns
        ):
            want_taps, want_packed = expected.pop((team_id, day), (0, level.empty))
            if (taps, level.joined(columns)) != (want_taps, want_packed):
                differences.append(
                    RollupDifference(level.name, team_id, day_start(day), want_taps, taps)
                )
        differences += [
            RollupDifference(level.name, team_id, day_start(day), taps, 0)
            for (team_id, day), (taps, _) in expected.items()
        ]
    return sorted(differences, key=lambda d: (d.team_id, d.bucket, d.table))


def rebuild_rollups(team_ids: Sequence[int] | None = None) -> int:
    """Recompute the team rollup and both day levels of the given teams (all if None)
    from the raw taps.

    Writers wait while it runs (the raw table is locked against inserts on PostgreSQL;
    SQLite's write lock does the same), so no tap can slip between delete and insert.
    Returns the number of team-level buckets written.
    """
    where, params = _team_filter(team_ids)
    bucket = bucket_sql("created_at")
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("LOCK TABLE analytics_tap IN SHARE MODE")
        cursor.execute(f"DELETE FROM analytics_teamrollup {where}", params)
        cursor.execute(
            f"""INSERT INTO analytics_teamrollup (team_id, bucket, taps)
                SELECT team_id, {bucket}, sum(count) FROM analytics_tap {where}
                GROUP BY 1, 2""",
            params,
        )
        written = cursor.rowcount
        for level in DAY_LEVELS:
            cursor.execute(f"DELETE FROM {level.model._meta.db_table} {where}", params)
            level.write(level.build(level.fine_rows(team_ids=team_ids)))
    return written

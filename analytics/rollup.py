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


def pack_tag_cells(tags: Sequence[int], counts: Sequence[int], quarters: Sequence[int]) -> bytes:
    """A day's (tag, quarter hour, taps) cells as ``TagDay.cells`` stores them, ordered by
    tag and quarter: the tags, then the taps (big-endian 64-bit integers, as PostgreSQL's
    ``int8send`` writes them), then the quarters (bytes).

    Ordered by tag, a month of days is a few dozen sorted runs, which a stable sort
    merges (``analytics.queries._TagCells``): a busy month's tags were indexed in 16 ms
    when the cells were ordered by quarter, in 6 ms ordered by tag.
    """
    tag_array = np.asarray(tags, dtype=np.int64)
    quarter_array = np.asarray(quarters, dtype=np.int64)
    order = np.lexsort((quarter_array, tag_array))
    return (
        tag_array[order].astype(">i8").tobytes()
        + np.asarray(counts, dtype=np.int64)[order].astype(">i8").tobytes()
        + quarter_array[order].astype("u1").tobytes()
    )


def unpack_tag_cells(cells: bytes | memoryview) -> tuple[Any, Any, Any]:
    """The ``(tags, taps, quarters)`` arrays of a packed day."""
    size = len(cells) // 17
    return (
        np.frombuffer(cells, dtype=">i8", count=size),
        np.frombuffer(cells, dtype=">i8", count=size, offset=8 * size),
        np.frombuffer(cells, dtype="u1", count=size, offset=16 * size),
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
    column: str
    quarters: Callable[[], QuerySet[Any]]
    time_field: str
    build: Callable[[Iterable[Any]], Iterator[tuple[int, date, int, bytes]]]
    empty: bytes

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
        sql = f"""INSERT INTO {self.model._meta.db_table} (team_id, day, taps, {self.column})
                  VALUES (%s, %s, %s, %s)
                  ON CONFLICT (team_id, day) DO UPDATE
                  SET taps = excluded.taps, {self.column} = excluded.{self.column}"""
        adapt = connection.ops.adapt_datefield_value
        rows = [(team_id, adapt(day), taps, packed) for team_id, day, taps, packed in days]
        with connection.cursor() as cursor:
            for chunk_start in range(0, len(rows), 1000):
                cursor.executemany(sql, rows[chunk_start : chunk_start + 1000])
        return len(rows)


TEAM_DAY_LEVEL = _DayLevel(
    "day", TeamDay, "quarters", _team_quarters, "bucket", team_day_levels, _EMPTY_DAY
)
TAG_DAY_LEVEL = _DayLevel(
    "tag day", TagDay, "cells", _tag_quarters, "created_at", tag_day_levels, b""
)
MINUTE_DAY_LEVEL = _DayLevel(
    "minute day", MinuteDay, "minutes", _team_minutes, "created_at", minute_day_levels, b""
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

# A day's (tag_id, quarter, taps) rows packed as ``pack_tag_cells`` packs them.
_PACKED_CELLS_SQL = """string_agg(int8send(tag_id), ''::bytea ORDER BY tag_id, quarter)
           || string_agg(int8send(taps), ''::bytea ORDER BY tag_id, quarter)
           || string_agg(set_byte('\\x00'::bytea, 0, quarter), ''::bytea
                         ORDER BY tag_id, quarter)"""

# The minute of its UTC day that the instant ``{0}`` falls in, and a day's (minute, taps)
# rows packed as ``pack_minutes`` packs them.
_MINUTE_SQL = """(date_part('hour', {0} AT TIME ZONE 'UTC') * 60
                 + date_part('minute', {0} AT TIME ZONE 'UTC'))::int"""
_PACKED_MINUTES_SQL = """string_agg(int2send(minute::smallint), ''::bytea ORDER BY minute)
           || string_agg(int8send(taps), ''::bytea ORDER BY minute)"""


@dataclass(frozen=True)
class _CellLevel:
    """A day level of packed cells built from raw taps: its table and column, the cell's
    key columns with their SQL over a tap ``t``, and the packing."""

    table: str
    column: str
    keys: dict[str, str]
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
    INSERT INTO {self.table} AS l (team_id, day, taps, {self.column})
    SELECT team_id, day, coalesce(sum(taps), 0), coalesce({self.packed}, ''::bytea)
    FROM fine GROUP BY team_id, day
    ON CONFLICT (team_id, day) DO UPDATE
    SET taps = EXCLUDED.taps, {self.column} = EXCLUDED.{self.column}
"""

    def _key_sql(self, *, named: bool = True) -> str:
        return ", ".join(f"{sql} AS {key}" if named else sql for key, sql in self.keys.items())


_TAG_CELLS = _CellLevel(
    "analytics_tagday",
    "cells",
    {"tag_id": "t.tag_id", "quarter": _QUARTER_SQL.format("t.created_at")},
    _PACKED_CELLS_SQL,
)
_MINUTE_CELLS = _CellLevel(
    "analytics_minuteday",
    "minutes",
    {"minute": _MINUTE_SQL.format("t.created_at")},
    _PACKED_MINUTES_SQL,
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
        for team_id, day, taps, packed in stored.values_list(
            "team_id", "day", "taps", level.column
        ):
            want_taps, want_packed = expected.pop((team_id, day), (0, level.empty))
            if (taps, bytes(packed)) != (want_taps, want_packed):
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

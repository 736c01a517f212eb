"""The write path's additions to the day levels: the taps a batch stored, added to the
stored rows of the days they fall on, in NumPy.

PostgreSQL did this in SQL, unpacking each stored cell with ``substring`` and packing
the day again with ordered ``string_agg``s: the three day levels were 37 % of a bench-1M
load's statement time (team days 4.3 s, tag days 4.0 s, minute days 2.8 s, against 14.6 s
for storing the taps). Here each level costs one read of the touched days' rows and one
write of them; the unpacking, summing and packing is NumPy's, on whole columns.

``add_to_day_levels`` must run in the transaction that stored the taps, after their
team's counter row was locked (``analytics.ingest``): each day is then read as the
team's previous writer committed it. On PostgreSQL the days' rows of the three levels
are read in one statement and written in another.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import accumulate
from typing import Any

import numpy as np
import psycopg
from django.db import connection

from analytics.rollup import (
    MINUTE_DAY_LEVEL,
    QUARTERS_PER_DAY,
    TAG_DAY_LEVEL,
    TEAM_DAY_LEVEL,
    pack_tag_days,
    sum_by,
    unpack_minutes,
    unpack_tag_cells,
)
from taps_project.sql import array_literal

MINUTES_PER_DAY = 1440
EPOCH = date(1970, 1, 1)
# A tap as PostgreSQL's store statement returns it, packed by ``NEW_TAPS_SQL``.
NEW_TAP = np.dtype([("tag", ">i8"), ("minute", ">i4"), ("count", ">i4")])
# The new taps of a data-modifying CTE ``new`` (with ``tag_id``, ``created_at``,
# ``count``), one team's in one value: 16 bytes a tap for ``NewTaps.of_packed``.
# The minute is binned before it is divided: a double holds the epoch of year 2999 to
# about 4 microseconds, which would put 23:59:59.999999 in the next minute.
NEW_TAPS_SQL = """string_agg(int8send(tag_id)
                   || int4send((date_part('epoch', date_bin('1 minute', created_at,
                                TIMESTAMPTZ '1970-01-01 00:00:00+00')) / 60)::int)
                   || int4send(count), ''::bytea)"""


@dataclass(frozen=True)
class NewTaps:
    """Taps just stored, as NumPy columns: team, tag, the minute since the epoch they fall
    in (UTC), count."""

    teams: Any
    tags: Any
    minutes: Any
    counts: Any

    @classmethod
    def of_packed(cls, packed: Iterable[tuple[int, bytes | memoryview]]) -> "NewTaps":
        """From ``(team, value of NEW_TAPS_SQL)`` pairs."""
        parts = [(team, np.frombuffer(value, dtype=NEW_TAP)) for team, value in packed]
        taps = np.concatenate([part for _, part in parts]) if parts else np.zeros(0, NEW_TAP)
        return cls(
            np.repeat(
                np.array([team for team, _ in parts], dtype=np.int64),
                [len(part) for _, part in parts],
            ),
            taps["tag"].astype(np.int64),
            taps["minute"].astype(np.int64),
            taps["count"].astype(np.int64),
        )

    @classmethod
    def of_rows(cls, rows: Sequence[tuple[int, int, int, int]]) -> "NewTaps":
        """From ``(team, tag, minute, count)`` rows."""
        columns = np.array(rows, dtype=np.int64).reshape(-1, 4)
        return cls(columns[:, 0], columns[:, 1], columns[:, 2], columns[:, 3])


def _distinct_sums(groups: Any, columns: Sequence[Any], counts: Any) -> tuple[Any, list[Any], Any]:
    """Each distinct ``(group, *columns)`` once, sorted, with the sum of its counts."""
    if not len(groups):
        return groups, list(columns), counts
    order = np.lexsort((*reversed(columns), groups))
    groups, counts = groups[order], counts[order]
    columns = [column[order] for column in columns]
    starts = np.empty(len(groups), dtype=bool)
    starts[0] = True
    np.not_equal(groups[1:], groups[:-1], out=starts[1:])
    for column in columns:
        starts[1:] |= column[1:] != column[:-1]
    first = np.flatnonzero(starts)
    return groups[first], [column[first] for column in columns], np.add.reduceat(counts, first)


def _with_stored(
    groups: Any, columns: list[Any], counts: Any, stored: list[tuple[int, list[Any], Any]]
) -> tuple[Any, list[Any], Any]:
    """The new cells, then the stored ``(group, columns, counts)`` ones, as int64 columns."""
    if not stored:
        return groups, columns, counts
    sizes = [len(taps) for _, _, taps in stored]
    return (
        np.concatenate([groups, np.repeat([group for group, _, _ in stored], sizes)]),
        [
            np.concatenate([column, *(keys[n].astype(np.int64) for _, keys, _ in stored)])
            for n, column in enumerate(columns)
        ],
        np.concatenate([counts, *(taps.astype(np.int64) for _, _, taps in stored)]),
    )


def _packed_by_group(
    groups: Any, parts: Sequence[Any], counts: Any, size: int
) -> tuple[list[int], list[bytes]]:
    """Each of ``size`` groups' taps, and its cells packed: the ``parts`` (big-endian
    columns, sorted by group) one after the other."""
    bounds = np.searchsorted(groups, np.arange(size + 1)).tolist()
    # Every group has taps of the batch: none is empty, which reduceat would get wrong.
    totals = np.add.reduceat(counts, bounds[:-1])
    values = [
        b"".join(part[start:end].tobytes() for part in parts)
        for start, end in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    return totals.tolist(), values


LEVELS = (TEAM_DAY_LEVEL, TAG_DAY_LEVEL, MINUTE_DAY_LEVEL)
_STORED_SQL = " UNION ALL ".join(
    f"SELECT {number}, l.team_id, l.day, {level.stored_sql} FROM {level.model._meta.db_table} l "
    "JOIN touched USING (team_id, day)"
    for number, level in enumerate(LEVELS)
)
_WRITE_SQL = (
    """WITH written AS (
        SELECT r.level, r.team_id, r.day, r.taps, substring(%s FROM r.start + 1 FOR r.size) AS value
        FROM unnest(%s::smallint[], %s::bigint[], %s::date[], %s::bigint[], %s::int[], %s::int[])
            AS r(level, team_id, day, taps, start, size)
    ), """
    + ", ".join(
        f"""written_{number} AS (
        INSERT INTO {level.model._meta.db_table} AS l (team_id, day, taps, {
            ", ".join(level.columns)
        })
        SELECT team_id, day, taps, {level.split_sql.format(value="value")}
        FROM written WHERE level = {number}
        ON CONFLICT (team_id, day) DO UPDATE
        SET taps = EXCLUDED.taps, {
            ", ".join(f"{column} = EXCLUDED.{column}" for column in level.columns)
        })"""
        for number, level in enumerate(LEVELS)
    )
    + " SELECT 1"
)


class _Days:
    """The (team, UTC day) pairs a batch's taps fall on, numbered 0.. in order."""

    def __init__(self, teams: Any, days: Any) -> None:
        self.teams: list[int] = teams.tolist()
        self.days = [EPOCH + timedelta(days=day) for day in days.tolist()]
        self.number = {key: n for n, key in enumerate(zip(self.teams, self.days, strict=True))}

    def __len__(self) -> int:
        return len(self.teams)

    def stored(self) -> list[list[tuple[int, bytes | memoryview]]]:
        """For each level, ``(day number, packed value)`` of its stored rows of these days."""
        if connection.vendor == "postgresql":
            connection.ensure_connection()
            with psycopg.Cursor(connection.connection) as cursor:
                cursor.execute(
                    f"""WITH touched AS (
                            SELECT * FROM unnest(%s::bigint[], %s::date[]) AS k(team_id, day)
                        ) {_STORED_SQL}""",
                    [array_literal(self.teams), array_literal(self.days)],
                    binary=True,
                )
                rows = cursor.fetchall()
        else:
            rows = []
            for number, level in enumerate(LEVELS):
                for team in sorted(set(self.teams)):
                    days = [day for t, day in zip(self.teams, self.days, strict=True) if t == team]
                    found = level.model.objects.filter(team_id=team, day__in=days)
                    rows += [
                        (number, team, day, level.joined(columns))
                        for day, *columns in found.values_list("day", *level.columns)
                    ]
        by_level: list[list[tuple[int, bytes | memoryview]]] = [[] for _ in LEVELS]
        for number, team, day, value in rows:
            by_level[number].append((self.number[team, day], value))
        return by_level

    def write(self, written: Sequence[tuple[list[int], list[bytes]]]) -> None:
        """Each level's ``(taps, packed values)`` of these days, in their order. On
        PostgreSQL the values go as one parameter, cut apart in SQL: a value cut there is
        new, so each level compresses it its own way (lz4), where one read from a stage
        table would keep the stage's compression."""
        if connection.vendor != "postgresql":
            for level, (taps, values) in zip(LEVELS, written, strict=True):
                level.write(zip(self.teams, self.days, taps, values, strict=True))
            return
        sizes = [len(value) for _, values in written for value in values]
        starts = [0, *accumulate(sizes)][:-1]
        connection.ensure_connection()
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(
                _WRITE_SQL,
                [
                    b"".join(value for _, values in written for value in values),
                    array_literal(number for number in range(len(LEVELS)) for _ in self.teams),
                    array_literal(self.teams * len(LEVELS)),
                    array_literal(self.days * len(LEVELS)),
                    array_literal(total for taps, _ in written for total in taps),
                    array_literal(starts),
                    array_literal(sizes),
                ],
            )


def add_to_day_levels(new: NewTaps) -> None:
    """Add the taps to the team, tag and minute day levels of the days they fall on."""
    if not len(new.counts):
        return
    days = new.minutes // MINUTES_PER_DAY
    minutes = new.minutes - days * MINUTES_PER_DAY
    order = np.lexsort((days, new.teams))
    teams, days, minutes = new.teams[order], days[order], minutes[order]
    tags, counts = new.tags[order], new.counts[order]
    starts = np.empty(len(teams), dtype=bool)
    starts[0] = True
    starts[1:] = (teams[1:] != teams[:-1]) | (days[1:] != days[:-1])
    groups = np.cumsum(starts) - 1
    touched = _Days(teams[starts], days[starts])
    team_stored, tag_stored, minute_stored = touched.stored()
    touched.write(
        [
            _team_days(len(touched), groups, minutes // 15, counts, team_stored),
            _tag_days(len(touched), groups, tags, minutes // 15, counts, tag_stored),
            _minute_days(len(touched), groups, minutes, counts, minute_stored),
        ]
    )


def _team_days(
    size: int, groups: Any, quarters: Any, counts: Any, stored: list[tuple[int, Any]]
) -> tuple[list[int], list[bytes]]:
    by_quarter = sum_by(groups * QUARTERS_PER_DAY + quarters, counts, size * QUARTERS_PER_DAY)
    by_quarter = by_quarter.reshape(size, QUARTERS_PER_DAY)
    for group, value in stored:
        by_quarter[group] += np.diff(np.frombuffer(value, dtype=">i8"), prepend=0)
    running = np.cumsum(by_quarter, axis=1)
    return running[:, -1].tolist(), [row.tobytes() for row in running.astype(">i8")]


def _tag_days(
    size: int, groups: Any, tags: Any, quarters: Any, counts: Any, stored: list[tuple[int, Any]]
) -> tuple[list[int], list[bytes]]:
    unpacked = []
    for group, value in stored:
        stored_tags, stored_taps, stored_quarters = unpack_tag_cells(value)
        unpacked.append((group, [stored_tags, stored_quarters], stored_taps))
    groups, (tags, quarters), counts = _distinct_sums(
        *_with_stored(groups, [tags, quarters], counts, unpacked)
    )
    return pack_tag_days(groups, tags, quarters, counts, size)


def _minute_days(
    size: int, groups: Any, minutes: Any, counts: Any, stored: list[tuple[int, Any]]
) -> tuple[list[int], list[bytes]]:
    unpacked = []
    for group, value in stored:
        stored_minutes, stored_taps = unpack_minutes(value)
        unpacked.append((group, [stored_minutes], stored_taps))
    groups, (minutes,), counts = _distinct_sums(*_with_stored(groups, [minutes], counts, unpacked))
    return _packed_by_group(groups, [minutes.astype(">i2"), counts.astype(">i8")], counts, size)

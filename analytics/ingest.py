"""The one write path for taps: every tap enters the system through ``store_staged_taps``.

Callers put rows in the connection's staging table (``stage_taps``: COPY on PostgreSQL),
remove what they refuse, and call ``store_staged_taps`` inside a transaction. It inserts
the raw taps under their tag's current team, skips ids the team already has, and adds
exactly the inserted taps to both rollups, all in that transaction, so the rollups never
disagree with the raw taps and a duplicate never counts twice (SPEC 4, 11).
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper

from analytics.rollup import bucket_sql

STAGE_TABLE = "tap_stage"
STAGE_COLUMNS = ("line", "tap_id", "tag_uid", "count", "created_at")


@dataclass(frozen=True, slots=True)
class TapRow:
    """A tap to store. ``line`` says where it came from (file line or batch position)."""

    tap_id: int
    tag_uid: int
    count: int
    at: datetime
    line: int = 0


@dataclass
class StoreResult:
    accepted: int = 0
    duplicates: int = 0

    def add(self, other: "StoreResult") -> None:
        self.accepted += other.accepted
        self.duplicates += other.duplicates


def copy_rows(
    cursor: CursorWrapper, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """Append rows to a table: COPY on PostgreSQL, ``executemany`` in chunks elsewhere."""
    count = 0
    if connection.vendor == "postgresql":
        with cursor.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
        return count
    placeholders = ", ".join(["%s"] * len(columns))
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"
    batch: list[Sequence[Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == 1000:
            cursor.executemany(sql, batch)
            count += len(batch)
            batch.clear()
    if batch:
        cursor.executemany(sql, batch)
        count += len(batch)
    return count


def db_instant(at: datetime) -> datetime | str:
    """An aware datetime as this database's raw SQL wants it."""
    if connection.vendor == "postgresql":
        return at
    text = connection.ops.adapt_datetimefield_value(at)
    assert text is not None
    return text


def stage_taps(rows: Iterable[TapRow]) -> int:
    """Replace the content of this connection's staging table with ``rows``."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""CREATE TEMP TABLE IF NOT EXISTS {STAGE_TABLE} (
                line bigint NOT NULL, tap_id bigint NOT NULL, tag_uid bigint NOT NULL,
                count integer NOT NULL, created_at {instant_type()} NOT NULL)"""
        )
        cursor.execute(f"DELETE FROM {STAGE_TABLE}")
        values: Iterable[tuple[int, int, int, int, datetime | str]]
        if connection.vendor == "postgresql":
            values = ((r.line, r.tap_id, r.tag_uid, r.count, r.at) for r in rows)
        else:
            values = ((r.line, r.tap_id, r.tag_uid, r.count, db_instant(r.at)) for r in rows)
        return copy_rows(cursor, STAGE_TABLE, STAGE_COLUMNS, values)


def instant_type() -> str:
    """The column type of an instant in a temporary table."""
    return "timestamptz" if connection.vendor == "postgresql" else "datetime"


# A staged tap is stored under the team owning its tag now, and only if that team owned the
# tag at the tap's instant (SPEC 1: no team sees taps from before it owned the tag).
_OWNED = (
    "JOIN teams_tag t ON t.uid = s.tag_uid "
    "AND (t.owner_since IS NULL OR s.created_at >= t.owner_since)"
)


def store_staged_taps() -> StoreResult:
    """Store the staged taps and add them to the rollups; must run inside a transaction.

    Ids the tag's team already has are skipped and counted as duplicates, as are repeats of
    an id within the stage (the first wins). Staged taps whose tag is unknown, or which
    predate their tag's current owner, are not stored; callers refuse those beforehand.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("store_staged_taps must run inside transaction.atomic()")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {STAGE_TABLE}")
        (staged,) = cursor.fetchone()
        if connection.vendor == "postgresql":
            accepted = _store_postgresql(cursor)
        else:
            accepted = _store_sqlite(cursor)
    return StoreResult(accepted=accepted, duplicates=staged - accepted)


def _store_postgresql(cursor: CursorWrapper) -> int:
    # One statement: the rollups add up exactly the rows the INSERT reports as new, and a
    # concurrent writer of the same id waits on the unique index, then skips it.
    bucket = bucket_sql("created_at")
    cursor.execute(
        f"""
        WITH new AS (
            INSERT INTO analytics_tap (team_id, tap_id, tag_id, count, created_at)
            SELECT t.team_id, s.tap_id, s.tag_uid, s.count, s.created_at
            FROM {STAGE_TABLE} s {_OWNED}
            ON CONFLICT (team_id, tap_id) DO NOTHING
            RETURNING team_id, tag_id, count, {bucket} AS bucket
        ), team_sums AS (
            INSERT INTO analytics_teamrollup AS r (team_id, bucket, taps)
            SELECT team_id, bucket, sum(count) FROM new
            GROUP BY team_id, bucket ORDER BY team_id, bucket
            ON CONFLICT (team_id, bucket) DO UPDATE SET taps = r.taps + EXCLUDED.taps
        ), tag_sums AS (
            INSERT INTO analytics_tagrollup AS r (team_id, tag_id, bucket, taps)
            SELECT team_id, tag_id, bucket, sum(count) FROM new
            GROUP BY team_id, tag_id, bucket ORDER BY team_id, tag_id, bucket
            ON CONFLICT (team_id, tag_id, bucket) DO UPDATE SET taps = r.taps + EXCLUDED.taps
        )
        SELECT count(*) FROM new
        """,
        [],
    )
    return cursor.fetchone()[0]


def _store_sqlite(cursor: CursorWrapper) -> int:
    # SQLite has no data-modifying CTEs; the transaction holds the database's write lock
    # (transaction_mode IMMEDIATE), so these steps cannot interleave with another writer.
    cursor.execute(
        f"""DELETE FROM {STAGE_TABLE} WHERE rowid NOT IN (
                SELECT min(s.rowid) FROM {STAGE_TABLE} s {_OWNED}
                WHERE NOT EXISTS (
                    SELECT 1 FROM analytics_tap a
                    WHERE a.team_id = t.team_id AND a.tap_id = s.tap_id)
                GROUP BY t.team_id, s.tap_id)""",
        [],
    )
    cursor.execute(
        f"""INSERT INTO analytics_tap (team_id, tap_id, tag_id, count, created_at)
            SELECT t.team_id, s.tap_id, s.tag_uid, s.count, s.created_at
            FROM {STAGE_TABLE} s {_OWNED}""",
        [],
    )
    accepted = cursor.rowcount
    bucket = bucket_sql("s.created_at")
    cursor.execute(
        f"""INSERT INTO analytics_teamrollup (team_id, bucket, taps)
            SELECT t.team_id, {bucket}, sum(s.count) FROM {STAGE_TABLE} s {_OWNED}
            WHERE true GROUP BY 1, 2
            ON CONFLICT (team_id, bucket) DO UPDATE SET taps = taps + excluded.taps""",
        [],
    )
    cursor.execute(
        f"""INSERT INTO analytics_tagrollup (team_id, tag_id, bucket, taps)
            SELECT t.team_id, s.tag_uid, {bucket}, sum(s.count) FROM {STAGE_TABLE} s {_OWNED}
            WHERE true GROUP BY 1, 2, 3
            ON CONFLICT (team_id, tag_id, bucket) DO UPDATE SET taps = taps + excluded.taps""",
        [],
    )
    return accepted


def store_taps(rows: Sequence[TapRow]) -> StoreResult:
    """Store a batch of taps in one transaction (the ingest API's path)."""
    with transaction.atomic():
        stage_taps(rows)
        return store_staged_taps()

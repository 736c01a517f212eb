"""The 15-minute rollups: the bucket expression, and the operators' check and rebuild.

The write path (``analytics.ingest``) keeps the rollups in step with the raw taps. These
functions recompute them from the raw taps, which is what ``verify_rollup`` and
``rebuild_rollup`` expose.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.utils.dateparse import parse_datetime


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
    tag_id: int | None
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
    """Compare both rollups with sums recomputed from the raw taps.

    Returns the number of differing buckets and up to ``limit`` of them.
    ``team_ids=None`` checks every team.
    """
    where, params = _team_filter(team_ids)
    bucket = bucket_sql("created_at")
    checks = {
        "team": f"""
            SELECT team_id, NULL, bucket, sum(raw), sum(rolled) FROM (
                SELECT team_id, {bucket} AS bucket, count AS raw, 0 AS rolled
                FROM analytics_tap {where}
                UNION ALL
                SELECT team_id, bucket, 0, taps FROM analytics_teamrollup {where}
            ) AS sums
            GROUP BY team_id, bucket HAVING sum(raw) <> sum(rolled)
            ORDER BY team_id, bucket
        """,
        "tag": f"""
            SELECT team_id, tag_id, bucket, sum(raw), sum(rolled) FROM (
                SELECT team_id, tag_id, {bucket} AS bucket, count AS raw, 0 AS rolled
                FROM analytics_tap {where}
                UNION ALL
                SELECT team_id, tag_id, bucket, 0, taps FROM analytics_tagrollup {where}
            ) AS sums
            GROUP BY team_id, tag_id, bucket HAVING sum(raw) <> sum(rolled)
            ORDER BY team_id, tag_id, bucket
        """,
    }
    total = 0
    sample: list[RollupDifference] = []
    with connection.cursor() as cursor:
        for table, sql in checks.items():
            cursor.execute(sql, params + params)
            for team_id, tag_id, bucket_start, raw, rolled in cursor:
                total += 1
                if len(sample) < limit:
                    sample.append(
                        RollupDifference(
                            table, team_id, tag_id, _as_datetime(bucket_start), raw, rolled
                        )
                    )
    return total, sample


def rebuild_rollups(team_ids: Sequence[int] | None = None) -> int:
    """Recompute both rollups of the given teams (all if None) from the raw taps.

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
        cursor.execute(f"DELETE FROM analytics_tagrollup {where}", params)
        cursor.execute(
            f"""INSERT INTO analytics_teamrollup (team_id, bucket, taps)
                SELECT team_id, {bucket}, sum(count) FROM analytics_tap {where}
                GROUP BY 1, 2""",
            params,
        )
        written = cursor.rowcount
        cursor.execute(
            f"""INSERT INTO analytics_tagrollup (team_id, tag_id, bucket, taps)
                SELECT team_id, tag_id, {bucket}, sum(count) FROM analytics_tap {where}
                GROUP BY 1, 2, 3""",
            params,
        )
    return written

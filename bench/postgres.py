"""The benchmark's PostgreSQL databases, through psycopg (installed with the project)."""

import re
import time
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from bench.errors import BenchError

PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def database_url(server_url: str, name: str) -> str:
    """``postgres://user@host:5432`` and ``bench_1m`` -> the URL of that database."""
    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def _connect(url: str) -> psycopg.Connection:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        raise BenchError(
            f"PostgreSQL is not reachable at {urlsplit(url).netloc} ({str(error).strip()}); "
            "start it (see the README) or give --pg-url"
        ) from None


def server_version(server_url: str) -> str:
    with _connect(database_url(server_url, "postgres")) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


def sum_ms(server_url: str, rows: int, repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats`` sums over ``rows`` generated rows, on one
    connection, with JIT compiling off, which servers set differently."""
    with _connect(database_url(server_url, "postgres")) as connection:
        connection.execute("SET jit = off")
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            connection.execute("SELECT sum(i) FROM generate_series(1, %s) AS i", [rows])
            times.append((time.perf_counter() - started) * 1000)
    return times


def recreate_database(server_url: str, name: str) -> str:
    """Drop ``name`` if it exists, create it empty, and return its URL."""
    if not PLAIN_NAME.fullmatch(name):
        raise BenchError(f"{name!r} is not a plain database name (a-z, 0-9, _)")
    with _connect(database_url(server_url, "postgres")) as connection:
        identifier = sql.Identifier(name)
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(identifier))
        connection.execute(sql.SQL("CREATE DATABASE {}").format(identifier))
    return database_url(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    with _connect(database_url(server_url, "postgres")) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def vacuum_analyze(url: str) -> None:
    """What autovacuum would do after a bulk load, done now so every query sees the same
    statistics and visibility map rather than a vacuum starting mid-run; then what the
    checkpointer would do within minutes: write the gigabytes of pages the load left
    dirty. Ingest measured while that flush ran took 29,000 taps/s, and 55,000 once it
    had ended (bench-10M, the same code)."""
    with _connect(url) as connection:
        connection.execute("VACUUM (ANALYZE)")
        try:
            connection.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            pass  # needs superuser or pg_checkpoint: the checkpointer will do it, mid-run


def busiest_team(url: str) -> tuple[int, int, int]:
    """(team id, its taps, all taps): the team with the most taps, the worst case."""
    with _connect(url) as connection:
        row = connection.execute(
            "SELECT team_id, sum(count), sum(sum(count)) OVER () FROM analytics_tap "
            "GROUP BY team_id ORDER BY 2 DESC, 1 LIMIT 1"
        ).fetchone()
    if row is None:
        raise BenchError("the loaded database has no taps")
    return int(row[0]), int(row[1]), int(row[2])


def team_tags(url: str, team_id: int, *, limit: int) -> list[int]:
    with _connect(url) as connection:
        rows = connection.execute(
            "SELECT uid FROM teams_tag WHERE team_id = %s ORDER BY uid LIMIT %s", (team_id, limit)
        ).fetchall()
    return [int(row[0]) for row in rows]


def table_sizes(url: str) -> dict[str, dict[str, int]]:
    """Rows (estimated by the last ANALYZE) and bytes with indexes of the tap tables."""
    with _connect(url) as connection:
        rows = connection.execute(
            "SELECT relname, reltuples::bigint, pg_total_relation_size(oid) FROM pg_class "
            "WHERE relkind = 'r' AND relname LIKE 'analytics_%%' ORDER BY relname"
        ).fetchall()
    return {str(name): {"rows": int(tuples), "bytes": int(size)} for name, tuples, size in rows}

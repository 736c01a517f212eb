"""A first load into an empty tap table builds the time and tag indexes after the taps,
not with them.

The write path reads neither: the store probes the unique index, and the day levels get
the batch's taps from the store statement (``analytics.day_additions``). Yet each tap
cost both an entry. A tap's entry in ``tap_team_tag_time`` lands on a page chosen by its
tag, so with 20,000 tags nearly every tap dirtied another page of an index larger than
the server's cache (bench-10M loads alternating on one machine: 131.0 and 132.3 s with
it, 124.0 and 124.5 s without it and with the builds). Without ``tap_team_time`` too,
bench-10M loads took 86.9 and 99.3 s against 95.8 and 109.3 s, alternating, builds
included. Built in one pass, both covering indexes also come out with full pages: a tap
inserted in the middle of an index (every team but the last appends there) splits a full
page in half, and PostgreSQL keeps a page full on such splits only for entries of at most
two 8-byte columns. The covering indexes are wider, so a loaded ``tap_team_time`` was half
empty (853 MB against 473 MB built after), and every read of raw taps read twice the
pages.

Only a load into an empty table does this: on a table in use, queries that read raw
taps (a ``tag`` filter, a range's edges, short minute ranges) would lose their index for
the length of the load.

At the end of a first load, stopped or not, both are built at once, each on a
connection of its own, without ``CONCURRENTLY``: a build ``CONCURRENTLY`` reads the
table twice, and two of them on one table wait for each other (bench-10M: 10.2 s one
after the other that way, 6.1 s at once without it; 26-28 s and 17-18 s on a machine
three times slower). A plain build blocks the table's writers until it ends, so a live
ingest that arrives in those seconds waits for them; readers do not wait. An index a
killed load left missing or invalid is built ``CONCURRENTLY`` by the next load, since
the table is then in use.
"""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from django.db import connection
from django.db.backends.utils import CursorWrapper

from analytics.models import Tap

TAG_INDEX = "tap_team_tag_time"
TIME_INDEX = "tap_team_time"
BUILT_AFTER_FIRST_LOAD = (TIME_INDEX, TAG_INDEX)


def _index_valid(cursor: CursorWrapper, name: str) -> bool | None:
    """Whether the index is valid, or None if there is no such index (a concurrent build
    that was stopped leaves an invalid one)."""
    cursor.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [name])
    row = cursor.fetchone()
    return None if row is None else bool(row[0])


def build_missing_indexes() -> None:
    """Build each index a first load leaves to the end if it is missing or was left
    invalid, without blocking writers, and drop what a stopped rebuild of the time index
    left (earlier versions rebuilt it after a first load); on PostgreSQL, outside a
    transaction."""
    quote = connection.ops.quote_name
    for name in BUILT_AFTER_FIRST_LOAD:
        with connection.cursor() as cursor:
            if _index_valid(cursor, f"{name}_ccnew") is False:
                cursor.execute(f"DROP INDEX CONCURRENTLY {quote(name + '_ccnew')}")
            valid = _index_valid(cursor, name)
            if valid:
                continue
            if valid is False:
                cursor.execute(f"DROP INDEX CONCURRENTLY {quote(name)}")
        index = next(index for index in Tap._meta.indexes if index.name == name)
        with connection.schema_editor(atomic=False) as editor:
            editor.execute(index.create_sql(Tap, editor, concurrently=True))


def build_indexes_at_once() -> None:
    """Build the indexes a first load leaves to its end, each on a connection of its own
    and at the same time, blocking writers but not readers; then check them as
    ``build_missing_indexes`` does, which also builds any another process left missing
    or invalid meanwhile."""
    with ThreadPoolExecutor(
        max_workers=len(BUILT_AFTER_FIRST_LOAD), thread_name_prefix="load_taps index"
    ) as pool:
        builds = [pool.submit(_build_on_own_connection, name) for name in BUILT_AFTER_FIRST_LOAD]
    for build in builds:
        build.result()
    build_missing_indexes()


def _build_on_own_connection(name: str) -> None:
    index = next(index for index in Tap._meta.indexes if index.name == name)
    try:
        with connection.schema_editor(atomic=False) as editor:
            statement = str(index.create_sql(Tap, editor))
            # Another load may have started one meanwhile: build_missing_indexes checks it.
            editor.execute(statement.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS", 1))
    finally:
        connection.close()


@contextmanager
def indexes_after_first_load() -> Iterator[None]:
    """Around storing a taps file. Into an empty tap table on PostgreSQL (outside a
    transaction), the time and tag indexes are dropped first and built after, at once,
    even if the load stops. Otherwise an index that an earlier first load could not
    build is built first."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        yield
        return
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT EXISTS (SELECT FROM {quote(Tap._meta.db_table)})")
        first_load = not cursor.fetchone()[0]
        if first_load:
            for name in BUILT_AFTER_FIRST_LOAD:
                cursor.execute(f"DROP INDEX IF EXISTS {quote(name)}")
    if not first_load:
        build_missing_indexes()
        yield
        return
    try:
        yield
    except BaseException:
        # A stopped load may leave this connection unusable: a Ctrl-C that lands while
        # a query is being sent leaves it with a command in progress, and the build
        # failed with "another command is already in progress" (exit 1, not 130). So
        # the indexes are built on new connections.
        connection.close()
        build_indexes_at_once()
        raise
    build_indexes_at_once()

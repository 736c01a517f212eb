"""A first load into an empty tap table builds the tag index after the taps, not with them.

A tap's entry in ``tap_team_tag_time`` lands on a page chosen by its tag, so with 20,000
tags nearly every tap dirtied another page of an index larger than the server's cache
(bench-10M loads alternating on one machine: 131.0 and 132.3 s with it, 124.0 and 124.5 s
without it and with both builds below, which took 16.5 s). Built in one pass, both
covering indexes also come out with full pages: a tap inserted in the middle of the index
(every team but the last appends there) splits a full page in half, and PostgreSQL keeps
a page full on such splits only for entries of at most two 8-byte columns. The covering
indexes are wider, so a loaded ``tap_team_time`` was half empty (853 MB against 473 MB
rebuilt), and every read of raw taps read twice the pages.

Only a load into an empty table does this: on a table in use, queries filtered by tag
would lose their index for the length of the load.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection
from django.db.backends.utils import CursorWrapper

from analytics.models import Tap

TAG_INDEX = "tap_team_tag_time"
TIME_INDEX = "tap_team_time"


def _index_valid(cursor: CursorWrapper, name: str) -> bool | None:
    """Whether the index is valid, or None if there is no such index (a concurrent build
    that was stopped leaves an invalid one)."""
    cursor.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [name])
    row = cursor.fetchone()
    return None if row is None else bool(row[0])


def build_tag_index() -> None:
    """Build the tag index if it is missing or was left invalid, and drop what a stopped
    rebuild of the time index left, without blocking writers; on PostgreSQL, outside a
    transaction."""
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        if _index_valid(cursor, f"{TIME_INDEX}_ccnew") is False:
            cursor.execute(f"DROP INDEX CONCURRENTLY {quote(TIME_INDEX + '_ccnew')}")
        valid = _index_valid(cursor, TAG_INDEX)
        if valid:
            return
        if valid is False:
            cursor.execute(f"DROP INDEX CONCURRENTLY {quote(TAG_INDEX)}")
    index = next(index for index in Tap._meta.indexes if index.name == TAG_INDEX)
    with connection.schema_editor(atomic=False) as editor:
        editor.execute(index.create_sql(Tap, editor, concurrently=True))


@contextmanager
def tag_index_after_first_load() -> Iterator[None]:
    """Around storing a taps file. Into an empty tap table on PostgreSQL (outside a
    transaction), the tag index is dropped first and built after, even if the load
    stops, and the time index is rebuilt after a load that completes. Otherwise a tag
    index that an earlier first load could not build is built first."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        yield
        return
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT EXISTS (SELECT FROM {quote(Tap._meta.db_table)})")
        first_load = not cursor.fetchone()[0]
        if first_load:
            cursor.execute(f"DROP INDEX IF EXISTS {quote(TAG_INDEX)}")
    if not first_load:
        build_tag_index()
        yield
        return
    try:
        yield
    finally:
        build_tag_index()
    with connection.cursor() as cursor:
        cursor.execute(f"REINDEX INDEX CONCURRENTLY {quote(TIME_INDEX)}")

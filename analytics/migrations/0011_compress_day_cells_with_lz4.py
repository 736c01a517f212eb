"""Day levels' packed cells compressed with lz4 instead of pglz, on servers built with it.

PostgreSQL compresses a value over about 2 kB when it stores it, and decompresses it on
every read; a busy TagDay row is 100 kB. Every write of a day level rewrites the day's
value (and the addition path reads it first), so loads and ingest pay both on each
batch. At bench-10M, rewriting all 20,000 TagDay rows took 4.9-5.5 s with pglz and
1.1-1.2 s with lz4; lz4 stores 25 % more (34.6 -> 43.1 MB). Reads gain less: PostgreSQL
detoasts a month of team 1's cells in 1.4 ms instead of 3.8, but sending the 2.5 MB to
the service takes longer than either.

Only the column's method changes: values written before keep pglz until their day is
written again (``rebuild_rollup`` rewrites them all).
"""

from django.db import migrations

PACKED_COLUMNS = (("analytics_tagday", "cells"), ("analytics_minuteday", "minutes"))


def _set_compression(schema_editor, method: str) -> None:
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        # The methods this server was built with.
        cursor.execute(
            "SELECT %s = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'",
            [method],
        )
        if not cursor.fetchone()[0]:
            return
        for table, column in PACKED_COLUMNS:
            cursor.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION {method}")


def use_lz4(apps, schema_editor):
    _set_compression(schema_editor, "lz4")


def use_pglz(apps, schema_editor):
    _set_compression(schema_editor, "pglz")


class Migration(migrations.Migration):
    dependencies = [("analytics", "0010_minute_day_level")]

    operations = [migrations.RunPython(use_lz4, use_pglz)]

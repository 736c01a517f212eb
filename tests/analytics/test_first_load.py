"""A first load into an empty tap table builds the time and tag indexes after the taps
(``analytics.first_load``).

The indexes are dropped and built outside any transaction, so these tests commit for
real; SQLite keeps its indexes through every load.
"""

import threading
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from analytics.first_load import BUILT_AFTER_FIRST_LOAD, TAG_INDEX, TIME_INDEX
from analytics.loader import LoadReport, load_files
from analytics.models import Tap
from teams.models import Tag
from tests.analytics.test_load_taps import (
    TAPS_HEADER,
    assert_rollups_exact,
    good_rows,
    tags_csv,
    write_csv,
)

__all__ = ["tags_csv"]  # a fixture these tests use

pytestmark = pytest.mark.django_db(transaction=True)

COLUMNS = {
    TAG_INDEX: "USING btree (team_id, tag_id, created_at) INCLUDE (count)",
    TIME_INDEX: "USING btree (team_id, created_at) INCLUDE (count, tag_id)",
}
IndexState = tuple[str, bool] | None


@pytest.fixture(autouse=True)
def _postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("on SQLite the loader leaves the indexes alone")


def index_state(name: str) -> IndexState:
    """The index's definition and whether it is valid, or None if it does not exist."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_indexdef(indexrelid), indisvalid FROM pg_index "
            "WHERE indexrelid = to_regclass(%s)",
            [name],
        )
        row = cursor.fetchone()
    return None if row is None else (row[0], row[1])


def indexes_state() -> tuple[IndexState, ...]:
    return tuple(index_state(name) for name in BUILT_AFTER_FIRST_LOAD)


def load_watching_indexes(
    tags: Path | None,
    taps: Path,
    *,
    stop_after_batch: int | None = None,
    strict: bool = False,
    before_stop: Callable[[], None] = lambda: None,
    each_batch: Callable[[LoadReport], None] = lambda report: None,
) -> list[tuple[IndexState, ...]]:
    """Load with batches of 4 taps on two connections; the indexes' states after each."""
    seen = []

    def after_batch(report: LoadReport) -> None:
        seen.append(indexes_state())
        each_batch(report)
        if report.tap_batches == stop_after_batch:
            before_stop()
            raise KeyboardInterrupt

    load_files(
        tags_path=tags,
        taps_path=taps,
        strict=strict,
        batch_size=4,
        on_problem=lambda problem: None,
        on_batch=after_batch,
        lanes=2,
    )
    return seen


def assert_indexes_built() -> None:
    for name in BUILT_AFTER_FIRST_LOAD:
        state = index_state(name)
        assert state is not None, name
        definition, valid = state
        assert valid
        assert definition.endswith(COLUMNS[name])


def test_a_first_load_stores_the_taps_then_builds_the_indexes(
    tags_csv: Path, tmp_path: Path
) -> None:
    taps = write_csv(tmp_path / "taps.csv", TAPS_HEADER, *good_rows(10))

    seen = load_watching_indexes(tags_csv, taps)

    assert seen == [(None, None)] * 3
    assert_indexes_built()
    assert Tap.objects.filter(tag_id=1000000002).count() == 4  # the index answers
    assert_rollups_exact()


def test_the_builds_after_a_first_load_do_not_wait_for_a_reader(
    tags_csv: Path, tmp_path: Path
) -> None:
    # A transaction that has read the table keeps its snapshot to its end: a build
    # CONCURRENTLY would wait for it (until the timer ends it), a plain build does not.
    taps = write_csv(tmp_path / "taps.csv", TAPS_HEADER, *good_rows(10))
    reader = psycopg.connect(**connection.get_connection_params(), autocommit=True)
    timer = threading.Timer(10, reader.rollback)

    def start_reading(report: LoadReport) -> None:
        if report.tap_batches == 1:
            reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            reader.execute("SELECT count(*) FROM analytics_tap")
            timer.start()

    try:
        load_watching_indexes(tags_csv, taps, each_batch=start_reading)
        still_reading = reader.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    finally:
        timer.cancel()
        reader.rollback()
        reader.close()

    assert still_reading
    assert_indexes_built()
    assert Tap.objects.count() == 10


def test_a_load_into_a_table_with_taps_keeps_the_indexes(tags_csv: Path, tmp_path: Path) -> None:
    load_watching_indexes(tags_csv, write_csv(tmp_path / "a.csv", TAPS_HEADER, *good_rows(2)))
    built = indexes_state()

    seen = load_watching_indexes(
        None, write_csv(tmp_path / "b.csv", TAPS_HEADER, *good_rows(10, first_id=3))
    )

    assert seen == [built, built, built]
    assert Tap.objects.count() == 12
    assert_rollups_exact()


def test_a_strict_load_keeps_the_indexes(tags_csv: Path, tmp_path: Path) -> None:
    # One transaction: dropping an index would lock the table until the load commits.
    built = indexes_state()
    taps = write_csv(tmp_path / "taps.csv", TAPS_HEADER, *good_rows(10))

    seen = load_watching_indexes(tags_csv, taps, strict=True)

    assert seen == [built, built, built]
    assert Tap.objects.count() == 10


def test_a_first_load_that_stops_still_builds_the_indexes(tags_csv: Path, tmp_path: Path) -> None:
    taps = write_csv(tmp_path / "taps.csv", TAPS_HEADER, *good_rows(10))

    with pytest.raises(KeyboardInterrupt):
        load_watching_indexes(tags_csv, taps, stop_after_batch=1)

    assert Tap.objects.count() == 4
    assert_indexes_built()
    assert_rollups_exact()


@pytest.mark.parametrize("name", BUILT_AFTER_FIRST_LOAD)
def test_a_load_first_builds_an_index_a_killed_first_load_left_missing(
    name: str, tags_csv: Path, tmp_path: Path
) -> None:
    load_watching_indexes(tags_csv, write_csv(tmp_path / "a.csv", TAPS_HEADER, *good_rows(2)))
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX {name}")

    seen = load_watching_indexes(
        None, write_csv(tmp_path / "b.csv", TAPS_HEADER, *good_rows(4, first_id=3))
    )

    assert seen == [indexes_state()]
    assert_indexes_built()


@pytest.mark.parametrize("name", BUILT_AFTER_FIRST_LOAD)
def test_a_load_replaces_an_invalid_index(name: str, tags_csv: Path, tmp_path: Path) -> None:
    # A concurrent build that fails leaves an invalid index under the name, as one stopped
    # by a killed load would.
    load_watching_indexes(tags_csv, write_csv(tmp_path / "a.csv", TAPS_HEADER, *good_rows(3)))
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX {name}")
        with pytest.raises(Exception, match="could not create unique index"):
            cursor.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {name} ON analytics_tap (team_id)")
    assert index_state(name) == (
        f"CREATE UNIQUE INDEX {name} ON public.analytics_tap USING btree (team_id)",
        False,
    )

    load_watching_indexes(
        None, write_csv(tmp_path / "b.csv", TAPS_HEADER, *good_rows(4, first_id=4))
    )

    assert_indexes_built()
    assert Tag.objects.count() == 3


def test_a_first_load_stopped_with_its_connection_unusable_still_builds_the_indexes(
    tags_csv: Path, tmp_path: Path
) -> None:
    taps = write_csv(tmp_path / "taps.csv", TAPS_HEADER, *good_rows(10))

    def leave_a_command_in_progress() -> None:
        # As a Ctrl-C that lands while a query is being sent does.
        connection.ensure_connection()
        connection.connection.pgconn.send_query(b"SELECT 1")

    with pytest.raises(KeyboardInterrupt):
        load_watching_indexes(
            tags_csv, taps, stop_after_batch=1, before_stop=leave_a_command_in_progress
        )

    assert_indexes_built()
    assert Tap.objects.count() == 4

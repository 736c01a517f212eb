"""A first load into an empty tap table builds the tag index after the taps
(``analytics.first_load``).

The index is dropped and built outside any transaction, so these tests commit for real;
SQLite keeps its indexes through every load.
"""

from pathlib import Path

import pytest
from django.db import connection

from analytics.first_load import TAG_INDEX, TIME_INDEX
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

TAG_INDEX_COLUMNS = "USING btree (team_id, tag_id, created_at) INCLUDE (count)"


@pytest.fixture(autouse=True)
def _postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("on SQLite the loader leaves the indexes alone")


def index_state(name: str) -> tuple[str, bool] | None:
    """The index's definition and whether it is valid, or None if it does not exist."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_indexdef(indexrelid), indisvalid FROM pg_index "
            "WHERE indexrelid = to_regclass(%s)",
            [name],
        )
        row = cursor.fetchone()
    return None if row is None else (row[0], row[1])


def load_watching_tag_index(
    tags: Path | None, taps: Path, *, stop_after_batch: int | None = None, strict: bool = False
) -> list[tuple[str, bool] | None]:
    """Load with batches of 4 taps on two connections; the tag index's state after each."""
    seen = []

    def after_batch(report: LoadReport) -> None:
        seen.append(index_state(TAG_INDEX))
        if report.tap_batches == stop_after_batch:
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


def assert_tag_index_built() -> None:
    state = index_state(TAG_INDEX)
    assert state is not None
    definition, valid = state
    assert valid
    assert definition.endswith(TAG_INDEX_COLUMNS)


def test_a_first_load_stores_the_taps_then_builds_the_tag_index(
    tags_csv: Path, tmp_path: Path
) -> None:
    taps = write_csv(tmp_path / "taps.csv", TAPS_HEADER, *good_rows(10))
    time_index_before = index_state(TIME_INDEX)

    seen = load_watching_tag_index(tags_csv, taps)

    assert seen == [None, None, None]
    assert_tag_index_built()
    assert index_state(TIME_INDEX) == time_index_before  # rebuilt as it was
    assert Tap.objects.filter(tag_id=1000000002).count() == 4  # the index answers
    assert_rollups_exact()


def test_a_load_into_a_table_with_taps_keeps_the_tag_index(tags_csv: Path, tmp_path: Path) -> None:
    load_watching_tag_index(tags_csv, write_csv(tmp_path / "a.csv", TAPS_HEADER, *good_rows(2)))
    built = index_state(TAG_INDEX)

    seen = load_watching_tag_index(
        None, write_csv(tmp_path / "b.csv", TAPS_HEADER, *good_rows(10, first_id=3))
    )

    assert seen == [built, built, built]
    assert Tap.objects.count() == 12
    assert_rollups_exact()


def test_a_strict_load_keeps_the_tag_index(tags_csv: Path, tmp_path: Path) -> None:
    # One transaction: dropping the index would lock the table until the load commits.
    built = index_state(TAG_INDEX)
    taps = write_csv(tmp_path / "taps.csv", TAPS_HEADER, *good_rows(10))

    seen = load_watching_tag_index(tags_csv, taps, strict=True)

    assert seen == [built, built, built]
    assert Tap.objects.count() == 10


def test_a_first_load_that_stops_still_builds_the_tag_index(tags_csv: Path, tmp_path: Path) -> None:
    taps = write_csv(tmp_path / "taps.csv", TAPS_HEADER, *good_rows(10))

    with pytest.raises(KeyboardInterrupt):
        load_watching_tag_index(tags_csv, taps, stop_after_batch=1)

    assert Tap.objects.count() == 4
    assert_tag_index_built()
    assert_rollups_exact()


def test_a_load_first_builds_the_tag_index_a_killed_first_load_left_missing(
    tags_csv: Path, tmp_path: Path
) -> None:
    load_watching_tag_index(tags_csv, write_csv(tmp_path / "a.csv", TAPS_HEADER, *good_rows(2)))
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX {TAG_INDEX}")

    seen = load_watching_tag_index(
        None, write_csv(tmp_path / "b.csv", TAPS_HEADER, *good_rows(4, first_id=3))
    )

    assert seen == [index_state(TAG_INDEX)]
    assert_tag_index_built()


def test_a_load_replaces_an_invalid_tag_index(tags_csv: Path, tmp_path: Path) -> None:
    # A concurrent build that fails leaves an invalid index under the name, as one stopped
    # by a killed load would.
    load_watching_tag_index(tags_csv, write_csv(tmp_path / "a.csv", TAPS_HEADER, *good_rows(3)))
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX {TAG_INDEX}")
        with pytest.raises(Exception, match="could not create unique index"):
            cursor.execute(
                f"CREATE UNIQUE INDEX CONCURRENTLY {TAG_INDEX} ON analytics_tap (team_id)"
            )
    assert index_state(TAG_INDEX) == (
        f"CREATE UNIQUE INDEX {TAG_INDEX} ON public.analytics_tap USING btree (team_id)",
        False,
    )

    load_watching_tag_index(
        None, write_csv(tmp_path / "b.csv", TAPS_HEADER, *good_rows(4, first_id=4))
    )

    assert_tag_index_built()
    assert Tag.objects.count() == 3

"""The loader storing each batch on two PostgreSQL connections at once (``TapLanes``).

These tests commit for real (other connections must see the tags), so they run outside
the test's transaction; on SQLite the loader always uses one connection.
"""

from concurrent.futures import wait
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from analytics import loader
from analytics.loader import TapLanes
from analytics.models import Tap
from teams.models import Tag, Team
from teams.tags import move_tag
from tests.analytics.test_load_taps import (
    TAPS_HEADER,
    assert_rollups_exact,
    good_rows,
    load,
    load_failing,
    tags_csv,
    team_totals,
    write_csv,
)

__all__ = ["tags_csv"]  # a fixture these tests use

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer: the loader stores on one connection there")


def test_an_id_stored_on_one_connection_is_named_when_repeated_on_the_other(
    tags_csv: Path, tmp_path: Path
) -> None:
    # Batch 1: team 1 has more rows and goes to the first connection. Batch 2: team 2 has
    # more, so team 1 goes to the second, which must know the first one's ranges.
    taps = write_csv(
        tmp_path / "taps.csv",
        TAPS_HEADER,
        "10,1000000001,1,2023-10-20T14:22:01Z",
        "11,1000000002,1,2023-10-20T14:22:02Z",
        "12,1000000001,1,2023-10-20T14:22:03Z",
        "20,1000000003,1,2023-10-20T14:22:04Z",
        "21,1000000003,1,2023-10-21T14:22:01Z",
        "22,1000000003,1,2023-10-21T14:22:02Z",
        "23,1000000003,1,2023-10-21T14:22:03Z",
        "10,1000000002,5,2023-10-21T14:22:04Z",
    )

    out, err = load(
        "--tags", str(tags_csv), "--taps", str(taps), "--batch-size", "4", "--lanes", "2"
    )

    assert err == "taps.csv: line 9: duplicate id 10: line 2 has the same id\n"
    assert "taps loaded: 7, skipped: 1, duplicates: 0" in out
    assert team_totals() == {1: 3, 2: 4}
    assert_rollups_exact()


def good_rows_of_seven_teams(count: int) -> list[str]:
    return [
        f"{tap_id},{1000000001 + tap_id % 7},{tap_id % 5 + 1},2023-10-20T{tap_id // 3600 % 24:02d}:"
        f"{tap_id // 60 % 60:02d}:{tap_id % 60:02d}.{tap_id % 1000:03d}Z"
        for tap_id in range(1, count + 1)
    ]


@pytest.fixture
def eight_tags_csv(tmp_path: Path) -> Path:
    """Tags 1000000001-7 of teams 1-7, and 1000000008 of team 1."""
    return write_csv(
        tmp_path / "tags.csv",
        "tag_uid,team_id,created_at",
        *(f"{1000000001 + n},{n + 1},2023-01-01T00:00:00Z" for n in range(7)),
        "1000000008,1,2023-01-01T00:00:00Z",
    )


@pytest.mark.parametrize("lanes", ["1", "2", "3"])
def test_any_number_of_connections_stores_the_same_taps_with_the_same_numbers(
    eight_tags_csv: Path, tmp_path: Path, lanes: str
) -> None:
    load("--tags", str(eight_tags_csv), "--no-taps")
    move_tag(
        Tag.objects.get(uid=1000000008),
        Team.objects.get(id=2),
        now=datetime(2023, 10, 21, tzinfo=UTC),
    )
    rows = good_rows_of_seven_teams(3000)
    # Bad rows of every kind the database finds, spread over the batches.
    rows[100] = "101,1000000099,1,2023-10-20T00:01:41Z"
    rows[1500] = "1501,1000000008,1,2023-10-20T00:25:01Z"
    rows[2998] = "8,1000000002,1,2023-10-20T00:00:08Z"  # ids 8 and 1 are team 2's
    rows[2999] = "1,1000000002,1,2023-10-20T00:00:01Z"
    taps = write_csv(tmp_path / "taps.csv", TAPS_HEADER, *rows)

    out, err = load("--no-tags", "--taps", str(taps), "--batch-size", "256", "--lanes", lanes)

    assert err.splitlines() == [
        "taps.csv: line 102: unknown tag 1000000099: it is not in the tags file or the database",
        "taps.csv: line 1502: tap predates its tag's owner: tag 1000000008 belongs to team 2 "
        "only since 2023-10-21T00:00:00+00:00",
        "taps.csv: line 3000: duplicate id 8: line 9 has the same id",
        "taps.csv: line 3001: duplicate id 1: line 2 has the same id",
    ]
    assert "taps loaded: 2996, skipped: 4, duplicates: 0" in out
    for team_id in range(1, 8):
        ids = list(
            Tap.objects.filter(team_id=team_id).order_by("seq").values_list("tap_id", flat=True)
        )
        assert len(ids) > 400, team_id
        assert ids == sorted(ids), team_id
    assert_rollups_exact()


def test_a_batch_is_split_by_team_largest_team_first(eight_tags_csv: Path) -> None:
    load("--tags", str(eight_tags_csv), "--no-taps")
    teams = [3, 2, 1, 2, 1, 1, 3, 2, 1, 1, 99]
    uids = [1000000000 + team for team in teams]
    rows = [f"{line},{line},{uid},1,2023-10-20T00:00:00Z\n" for line, uid in enumerate(uids, 2)]
    lanes = TapLanes(2)
    try:
        parts = lanes._split(rows)
    finally:
        lanes.close()

    # Team 1 (5 rows) to the first connection; team 2 (3) and team 3 (2) to the second,
    # which then has as many; the unknown tag to the first. Teams go in id order, each
    # team's rows in line order, as the store statement numbers them.
    assert [[row.split(",")[2] for row in part] for part in parts] == [
        ["1000000001"] * 5 + ["1000000099"],
        ["1000000002"] * 3 + ["1000000003"] * 2,
    ]
    assert [int(row.split(",")[0]) for row in parts[1]] == [3, 5, 9, 2, 8]


@pytest.mark.parametrize("remembered", [loader.MAX_TAGS_REMEMBERED, 2])
def test_a_load_reads_each_tags_team_once_up_to_a_bound(
    eight_tags_csv: Path, monkeypatch: pytest.MonkeyPatch, remembered: int
) -> None:
    monkeypatch.setattr(loader, "MAX_TAGS_REMEMBERED", remembered)
    load("--tags", str(eight_tags_csv), "--no-taps")
    uids = [1000000001, 1000000002, 1000000003, 1000000099]
    rows = [f"{line},{line},{uid},1,2023-10-20T00:00:00Z\n" for line, uid in enumerate(uids, 2)]
    looked_up: list[set[str]] = []
    lookup = loader._teams_of_tags

    def counted(tags: set[str]) -> dict[str, int]:
        looked_up.append(tags)
        return lookup(tags)

    monkeypatch.setattr(loader, "_teams_of_tags", counted)
    lanes = TapLanes(2)
    try:
        splits = [lanes._split(rows) for _ in range(3)]
    finally:
        lanes.close()

    assert splits[0] == splits[1] == splits[2]
    assert [len(part) for part in splits[0]] == [2, 2]
    every = {str(uid) for uid in uids}
    if remembered == 2:
        # Two tags kept; the other known one and the unknown one are read every batch.
        assert looked_up[0] == every and len(looked_up) == 3
        assert looked_up[1] == looked_up[2] and len(looked_up[1]) == 2
    else:
        # Only the unknown tag, which has no team to remember, is read again.
        assert looked_up == [every, {"1000000099"}, {"1000000099"}]


def test_ctrl_c_while_the_connections_store_a_batch_finishes_and_counts_it(
    tags_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ctrl-C arrives while the main thread waits for the first batch (the second wait:
    # the first starts the connections). Their transactions commit regardless, so the
    # batch is finished, counted in the message, and the load stops before the next.
    waits = []

    def interrupted_second_wait(futures: Any) -> Any:
        waits.append(futures)
        if len(waits) == 2:
            raise KeyboardInterrupt
        return wait(futures)

    monkeypatch.setattr(loader, "wait", interrupted_second_wait)
    taps = write_csv(tmp_path / "taps.csv", TAPS_HEADER, *good_rows(10))

    error, _ = load_failing(
        "--tags", str(tags_csv), "--taps", str(taps), "--batch-size", "4", "--lanes", "2"
    )

    assert str(error).startswith("interrupted after 1 committed batches;")
    assert error.returncode == 130
    assert Tap.objects.count() == 4
    assert_rollups_exact()


def test_fewer_than_one_connection_is_a_clear_error(tags_csv: Path, tmp_path: Path) -> None:
    taps = write_csv(tmp_path / "taps.csv", TAPS_HEADER, "10,1000000001,1,2023-10-20T14:22:01Z")

    error, _ = load_failing("--tags", str(tags_csv), "--taps", str(taps), "--lanes", "0")

    assert str(error) == "--lanes must be at least 1"
    assert Tap.objects.count() == 0

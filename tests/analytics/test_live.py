"""seq (SPEC 8): per-team numbers that grow with every stored tap, in commit order."""

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from django.db import connection, transaction

from analytics.ingest import TapRow, ingest_taps, store_taps
from analytics.live import LIVE_INLINE_LIMIT, last_seq, taps_after
from analytics.models import Tap
from teams.models import Tag, Team
from teams.tags import move_tag

WHEN = datetime(2024, 3, 1, 12, tzinfo=UTC)


def taps(*ids: int, uid: int) -> list[TapRow]:
    return [TapRow(tap_id, uid, 1, WHEN, line=n) for n, tap_id in enumerate(ids)]


@pytest.mark.django_db
def test_seq_grows_with_every_stored_tap_in_batch_order(tag: Tag, team: Team) -> None:
    store_taps(taps(30, 10, 20, uid=tag.uid))
    store_taps(taps(5, uid=tag.uid))

    ordered = list(Tap.objects.order_by("seq").values_list("tap_id", flat=True))
    assert ordered == [30, 10, 20, 5]
    assert last_seq(team.pk) == Tap.objects.get(tap_id=5).seq


@pytest.mark.django_db
def test_each_team_counts_its_own_seq(tag: Tag, team: Team, other_team: Team) -> None:
    other = Tag.objects.create(uid=77, team=other_team)

    store_taps(taps(1, 2, uid=tag.uid) + taps(1, 2, 3, uid=other.uid))

    assert last_seq(team.pk) == 2
    assert last_seq(other_team.pk) == 3


@pytest.mark.django_db
def test_a_duplicate_takes_no_place_in_what_a_reader_sees(tag: Tag, team: Team) -> None:
    store_taps(taps(1, 2, uid=tag.uid))
    store_taps(taps(2, 3, uid=tag.uid))

    seen, more = taps_after(team.pk, 0)

    assert [tap["id"] for tap in seen] == [1, 2, 3]
    assert more is False
    assert seen[0]["seq"] < seen[1]["seq"] < seen[2]["seq"]


@pytest.mark.django_db
def test_taps_after_gives_at_most_1000_oldest_first_and_says_more(tag: Tag, team: Team) -> None:
    store_taps(taps(*range(1, LIVE_INLINE_LIMIT + 6), uid=tag.uid))
    first = Tap.objects.get(tap_id=3).seq

    seen, more = taps_after(team.pk, first)

    assert len(seen) == LIVE_INLINE_LIMIT
    assert seen[0]["id"] == 4
    assert more is True


@pytest.mark.django_db
def test_taps_after_never_shows_another_teams_taps(tag: Tag, other_team: Team) -> None:
    store_taps(taps(1, uid=tag.uid))

    assert taps_after(other_team.pk, 0) == ([], False)


def wait_until_blocked_on_a_lock() -> None:
    """On PostgreSQL, wait (bounded) until another session waits on a row lock, so the
    test runs the race it means to; SQLite's writers wait on the database lock unseen."""
    if connection.vendor != "postgresql":
        return
    ticker = threading.Event()
    for _ in range(400):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            if cursor.fetchone()[0]:
                return
        ticker.wait(0.025)
    pytest.fail("the second writer never waited for the first")


@contextmanager
def second_waits_for_first(
    first: Callable[[], object], second: Callable[[], object]
) -> Iterator[threading.Thread]:
    """Run ``first`` in a transaction held open, then start ``second`` in another thread;
    yield (its thread) once it waits on a lock, then let ``first`` commit."""
    first_done, release = threading.Event(), threading.Event()

    def hold_open() -> None:
        try:
            with transaction.atomic():
                first()
                first_done.set()
                release.wait(30)
        finally:
            first_done.set()
            connection.close()

    def contend() -> None:
        try:
            second()
        finally:
            connection.close()

    holder = threading.Thread(target=hold_open)
    holder.start()
    assert first_done.wait(30)
    contender = threading.Thread(target=contend)
    contender.start()
    try:
        wait_until_blocked_on_a_lock()
        yield contender
    finally:
        release.set()
        holder.join(30)
        contender.join(30)


@pytest.mark.django_db(transaction=True)
def test_a_tap_committed_late_cannot_be_skipped_by_a_resuming_reader(tag: Tag, team: Team) -> None:
    # Writer A takes its seq and stalls before committing; writer B comes after. If B
    # could commit (and be pushed) first with a higher seq, a client resuming after B's
    # seq would never see A's tap. B must wait for A instead.
    with second_waits_for_first(
        lambda: store_taps(taps(1, uid=tag.uid)), lambda: store_taps(taps(2, uid=tag.uid))
    ) as writer_b:
        visible_while_a_is_open, _ = taps_after(team.pk, 0)
        assert writer_b.is_alive()

    assert visible_while_a_is_open == []
    seen, _ = taps_after(team.pk, 0)
    assert [tap["id"] for tap in seen] == [1, 2]
    assert [tap["id"] for tap in taps_after(team.pk, seen[0]["seq"])[0]] == [2]


@pytest.mark.django_db(transaction=True)
def test_a_tag_move_waits_for_an_ingest_that_checked_the_tag(
    tag: Tag, team: Team, other_team: Team
) -> None:
    # The ingest checked that the tag is its team's; a move committing between that check
    # and the insert would store the tap under a team that no longer owns the tag.
    with second_waits_for_first(
        lambda: ingest_taps(team.pk, taps(1, uid=tag.uid)),
        lambda: move_tag(Tag.objects.get(uid=tag.uid), other_team),
    ) as move:
        assert move.is_alive()

    assert Tap.objects.get(tap_id=1).team_id == team.pk
    assert Tag.objects.get(uid=tag.uid).team_id == other_team.pk

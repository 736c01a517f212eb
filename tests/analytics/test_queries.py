"""``count_taps`` against an independent reference: plain Python and zoneinfo, one tap at
a time, over generated taps and ranges in zones with odd offsets and DST changes."""

from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from analytics.ingest import TapRow, store_taps
from analytics.models import MinuteDay
from analytics.periods import WEEKDAYS, Interval, TooManyBuckets
from analytics.queries import (
    Endpoint,
    TapQuery,
    _TagCells,
    compared_query,
    count_taps,
)
from analytics.rollup import pack_minutes, sum_by
from teams.models import Tag, Team

ZONES = (
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
)
# Days around which ranges start: DST changes of the zones above in 2024, month and
# year ends, and a leap day.
INTERESTING_DAYS = (
    date(2024, 3, 10),  # New York springs forward
    date(2024, 3, 31),  # Paris springs forward
    date(2024, 4, 7),  # Lord Howe goes back half an hour
    date(2024, 10, 6),  # Lord Howe goes forward half an hour
    date(2024, 10, 27),  # Paris goes back
    date(2024, 11, 3),  # New York goes back
    date(2024, 2, 29),
    date(2024, 1, 31),
    date(2023, 12, 31),
    date(2024, 6, 30),
)
TAG_UIDS = (501, 502, 503)


# The reference: each tap's bucket found by walking the clock, not by the code under test.


def reference_bucket_start(
    at: datetime, interval: Interval, zone: ZoneInfo, week_start: int
) -> datetime:
    if interval in (Interval.MINUTE, Interval.HOUR):
        # Step back second by second (minute) or minute by minute (hour) until the local
        # clock shows a whole minute or hour. Every zone here has whole-minute offsets.
        step = timedelta(seconds=1) if interval == Interval.MINUTE else timedelta(minutes=1)
        instant = at.replace(microsecond=0)
        if interval == Interval.HOUR:
            instant = instant.replace(second=0)
        while True:
            local = instant.astimezone(zone)
            whole = local.second == 0 and (interval == Interval.MINUTE or local.minute == 0)
            if whole:
                return instant
            instant -= step
    local_day = at.astimezone(zone).date()
    if interval == Interval.DAY:
        first = local_day
    elif interval == Interval.WEEK:
        first = local_day - timedelta(days=(local_day.weekday() - week_start) % 7)
    elif interval == Interval.MONTH:
        first = local_day.replace(day=1)
    elif interval == Interval.QUARTER:
        first = local_day.replace(month=(local_day.month - 1) // 3 * 3 + 1, day=1)
    else:
        first = local_day.replace(month=1, day=1)
    return datetime(first.year, first.month, first.day, tzinfo=zone).astimezone(UTC)


def reference_counts(
    taps: list[TapRow],
    start: datetime,
    end: datetime,
    interval: Interval,
    zone: ZoneInfo,
    week_start: int,
) -> list[tuple[str, int]]:
    sums: Counter[datetime] = Counter()
    for tap in taps:
        if start <= tap.at < end:
            sums[reference_bucket_start(tap.at, interval, zone, week_start)] += tap.count
    return [(instant.astimezone(zone).isoformat(), sums[instant]) for instant in sorted(sums)]


def reference_day_start(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


# Generated cases


RANGE_DAYS = {
    Interval.MINUTE: 3,
    Interval.HOUR: 9,
    Interval.DAY: 40,
    Interval.WEEK: 60,
    Interval.MONTH: 200,
    Interval.QUARTER: 400,
    Interval.YEAR: 800,
}


@st.composite
def cases(
    draw: st.DrawFn,
    zones: tuple[str, ...] = ZONES,
    intervals: tuple[Interval, ...] = tuple(Interval),
) -> dict:
    zone = ZoneInfo(draw(st.sampled_from(zones)))
    interval = draw(st.sampled_from(intervals))
    around = draw(st.sampled_from(INTERESTING_DAYS))
    first_day = around - timedelta(days=draw(st.integers(0, 3)))
    days = draw(st.integers(0, RANGE_DAYS[interval]))
    last_day = first_day + timedelta(days=days)
    if draw(st.booleans()):
        start, end = Endpoint(day=first_day), Endpoint(day=last_day)
    else:
        # Instants anywhere in the first and last days, to the second: ranges cut rollup rows.
        low = reference_day_start(first_day, zone) + timedelta(seconds=draw(st.integers(0, 86399)))
        high = reference_day_start(last_day, zone) + timedelta(seconds=draw(st.integers(0, 86399)))
        if high <= low:
            high = low + timedelta(seconds=draw(st.integers(1, 7200)))
        start, end = Endpoint(instant=low), Endpoint(instant=high)
    # Taps anywhere around the range, and many within 20 minutes of either end, where
    # the range cuts rollup rows.
    range_start, range_end = start.resolve(zone, is_end=False), end.resolve(zone, is_end=True)
    span_start = range_start - timedelta(hours=30)
    span = int((range_end - range_start).total_seconds()) + 60 * 3600
    near = st.integers(-1200, 1200)
    instants = st.one_of(
        st.integers(0, span).map(lambda second: span_start + timedelta(seconds=second)),
        near.map(lambda second: range_start + timedelta(seconds=second)),
        near.map(lambda second: range_end + timedelta(seconds=second)),
    )
    microseconds = st.sampled_from([0, 1, 999_999]).map(lambda us: timedelta(microseconds=us))
    taps = [
        TapRow(
            tap_id=index,
            tag_uid=draw(st.sampled_from(TAG_UIDS)),
            count=draw(st.integers(1, 9)),
            at=at + draw(microseconds),
        )
        for index, at in enumerate(draw(st.lists(instants, max_size=60)), start=1)
    ]
    week_start = draw(st.integers(0, 6)) if interval == Interval.WEEK else 0
    return {
        "query": TapQuery(
            start=start, end=end, zone=zone, interval=interval, week_start=week_start, fill=False
        ),
        "taps": taps,
    }


class Rollback(Exception):
    pass


def store_for_new_team(taps: list[TapRow]) -> Team:
    team = Team.objects.create(name="Reference")
    for uid in TAG_UIDS:
        Tag.objects.create(uid=uid, team=team)
    store_taps(taps)
    return team


def check_against_reference(case: dict) -> None:
    query: TapQuery = case["query"]
    taps: list[TapRow] = case["taps"]
    start, end = query.range()
    if end <= start:
        return
    counted = case.get("expected_taps", taps)
    expected = reference_counts(counted, start, end, query.interval, query.zone, query.week_start)
    try:
        with transaction.atomic():
            team = store_for_new_team(taps)
            counts = count_taps(team, query)
            filled = count_taps(team, replace(query, fill=True))
            raise Rollback
    except Rollback:
        pass
    assert [(p.start.isoformat(), p.taps) for p in counts.periods] == expected
    assert counts.total == sum(taps for _, taps in expected)
    assert sum(p.taps for p in filled.periods) == counts.total
    assert [p for p in filled.periods if p.taps] == counts.periods
    starts = [p.start.astimezone(UTC) for p in filled.periods]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


@pytest.mark.django_db
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_counts_match_a_reference_in_every_zone_and_interval(case: dict) -> None:
    check_against_reference(case)


@pytest.mark.parametrize("interval", list(Interval))
@pytest.mark.parametrize("zone", ZONES)
def test_each_zone_and_interval_matches_the_reference(
    zone: str, interval: Interval, db: None
) -> None:
    # The test above samples pairs at random; this covers every pair in every run.
    @settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(case=cases(zones=(zone,), intervals=(interval,)))
    def check(case: dict) -> None:
        check_against_reference(case)

    check()


@pytest.mark.django_db
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
@example(
    case={
        "query": TapQuery(
            start=Endpoint(day=date(2024, 3, 1)),
            end=Endpoint(day=date(2024, 3, 31)),
            zone=ZoneInfo("Europe/Paris"),
            interval=Interval.DAY,
            group_by_tag=True,
        ),
        "taps": [TapRow(1, 501, 2, datetime(2024, 3, 30, 23, 30, tzinfo=UTC))],
    }
)
def test_series_by_tag_add_up_to_the_total(case: dict) -> None:
    query = replace(case["query"], group_by_tag=True, fill=True)
    start, end = query.range()
    if end <= start:
        return
    taps: list[TapRow] = case["taps"]
    try:
        with transaction.atomic():
            team = store_for_new_team(taps)
            counts = count_taps(team, query)
            raise Rollback
    except Rollback:
        pass
    assert counts.series is not None
    for series in counts.series:
        own = [tap for tap in taps if tap.tag_uid == series.tag]
        expected = reference_counts(own, start, end, query.interval, query.zone, query.week_start)
        assert [(p.start.isoformat(), p.taps) for p in series.periods if p.taps] == expected
        assert series.total == sum(p.taps for p in series.periods)
    assert sum(series.total for series in counts.series) == counts.total
    totals = [(-series.total, series.tag) for series in counts.series]
    assert totals == sorted(totals)


@pytest.mark.django_db
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), chosen=st.sets(st.sampled_from(TAG_UIDS), min_size=1))
def test_a_tag_filter_counts_exactly_the_taps_of_those_tags(case: dict, chosen: set[int]) -> None:
    query = replace(case["query"], tags=tuple(sorted(chosen)))
    own = [tap for tap in case["taps"] if tap.tag_uid in chosen]
    check_against_reference({"query": query, "taps": case["taps"], "expected_taps": own})


@pytest.mark.django_db
@pytest.mark.parametrize("grouped", [False, True])
def test_tag_counts_split_exactly_at_an_inner_local_boundary(grouped: bool) -> None:
    kolkata = ZoneInfo("Asia/Kolkata")
    midnight = datetime(2024, 3, 2, tzinfo=kolkata).astimezone(UTC)
    taps = [
        TapRow(1, 501, 1, midnight - timedelta(microseconds=1)),
        TapRow(2, 501, 10, midnight),
        TapRow(3, 501, 100, midnight + timedelta(minutes=14, seconds=59)),
        TapRow(4, 502, 1000, midnight + timedelta(minutes=15)),
    ]
    team = store_for_new_team(taps)
    query = TapQuery(
        start=Endpoint(day=date(2024, 3, 1)),
        end=Endpoint(day=date(2024, 3, 3)),
        zone=kolkata,
        tags=(501,),
        group_by_tag=grouped,
    )

    counts = count_taps(team, query)

    periods = counts.series[0].periods if grouped and counts.series else counts.periods
    assert [p.taps for p in periods] == [1, 110, 0]
    assert counts.total == 111


@pytest.mark.django_db
def test_limit_keeps_the_largest_tags_and_the_total_counts_every_tag() -> None:
    # Tag 501 leads only through taps in the range's raw edge (before the first quarter
    # hour), and 502 and 503 tie: the ranking must count edges, and break ties by uid.
    start = datetime(2024, 3, 1, 0, 7, tzinfo=UTC)
    taps = [
        TapRow(1, 501, 5, start + timedelta(minutes=1)),
        TapRow(2, 502, 3, datetime(2024, 3, 2, 12, tzinfo=UTC)),
        TapRow(3, 503, 3, datetime(2024, 3, 3, 12, tzinfo=UTC)),
        TapRow(4, 501, 9, start - timedelta(minutes=1)),
    ]
    team = store_for_new_team(taps)
    query = TapQuery(
        start=Endpoint(instant=start),
        end=Endpoint(day=date(2024, 3, 3)),
        zone=ZoneInfo("UTC"),
        group_by_tag=True,
        limit=2,
    )

    counts = count_taps(team, query)

    assert counts.series is not None
    assert [(series.tag, series.total) for series in counts.series] == [(501, 5), (502, 3)]
    assert counts.total == 11
    assert [p.taps for p in counts.series[1].periods] == [0, 3, 0]


@pytest.mark.django_db
@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "America/New_York"])
@pytest.mark.parametrize("interval", [Interval.DAY, Interval.WEEK])
@pytest.mark.parametrize("given_as", ["dates", "instants"])
def test_a_ranking_over_many_days_matches_the_reference(
    zone: str, interval: Interval, given_as: str
) -> None:
    # Whole UTC days are ranked from the tag day level's directories; days the range or
    # a local boundary cuts, from their cells; instants off the quarter hours, from the
    # raw taps. Eight tags, three shown.
    team = Team.objects.create(name="Ranked")
    uids = range(601, 609)
    Tag.objects.bulk_create(Tag(uid=uid, team=team) for uid in uids)
    first = datetime(2024, 3, 1, tzinfo=UTC)
    taps = [
        TapRow(
            tap_id=day * 10 + n,
            tag_uid=uid,
            count=(n % 4 + 1) * (day % 5 + 1),
            at=first + timedelta(days=day, minutes=(n * 137 + day * 53) % 1440, seconds=n),
        )
        for day in range(45)
        for n, uid in enumerate(uids)
        if (day + n) % 3
    ]
    store_taps(taps)
    local = ZoneInfo(zone)
    if given_as == "dates":
        start, end = Endpoint(day=date(2024, 3, 3)), Endpoint(day=date(2024, 4, 9))
    else:
        start = Endpoint(instant=datetime(2024, 3, 3, 7, 41, 13, tzinfo=UTC))
        end = Endpoint(instant=datetime(2024, 4, 9, 17, 2, tzinfo=UTC))
    query = TapQuery(start, end, local, interval, group_by_tag=True, fill=False, limit=3)
    low, high = query.range()

    counts = count_taps(team, query)

    inside = [tap for tap in taps if low <= tap.at < high]
    totals = Counter[int]()
    for tap in inside:
        totals[tap.tag_uid] += tap.count
    shown = sorted(totals, key=lambda uid: (-totals[uid], uid))[:3]
    assert counts.series is not None
    assert [series.tag for series in counts.series] == shown
    assert counts.total == sum(totals.values())
    for series in counts.series:
        own = [tap for tap in inside if tap.tag_uid == series.tag]
        expected = reference_counts(own, low, high, interval, local, 0)
        assert [(p.start.isoformat(), p.taps) for p in series.periods] == expected
        assert series.total == totals[series.tag]


# Worked examples of the rules in SPEC 6.1


PARIS = ZoneInfo("Europe/Paris")


def labels(query: TapQuery, team: Team) -> list[str]:
    return [p.start.isoformat() for p in count_taps(team, query).periods]


def hour_labels(team: Team, zone: ZoneInfo, start: datetime | date, end: datetime) -> list[str]:
    first = Endpoint(day=start) if not isinstance(start, datetime) else Endpoint(instant=start)
    query = TapQuery(start=first, end=Endpoint(instant=end), zone=zone, interval=Interval.HOUR)
    return labels(query, team)


def test_the_hour_repeated_when_clocks_go_back_is_two_buckets(team: Team) -> None:
    start, end = datetime(2024, 10, 27, 0, tzinfo=UTC), datetime(2024, 10, 27, 2, tzinfo=UTC)
    assert hour_labels(team, PARIS, start, end) == [
        "2024-10-27T02:00:00+02:00",
        "2024-10-27T02:00:00+01:00",
    ]


def test_the_hour_skipped_when_clocks_go_forward_has_no_bucket(team: Team) -> None:
    end = datetime(2024, 3, 31, 4, 0, tzinfo=PARIS)
    assert hour_labels(team, PARIS, date(2024, 3, 31), end) == [
        "2024-03-31T00:00:00+01:00",
        "2024-03-31T01:00:00+01:00",
        "2024-03-31T03:00:00+02:00",
    ]


def test_a_local_day_may_be_23_or_25_hours(team: Team) -> None:
    query = TapQuery(
        start=Endpoint(day=date(2024, 3, 30)), end=Endpoint(day=date(2024, 4, 1)), zone=PARIS
    )
    counts = count_taps(team, query)
    assert [p.start.isoformat() for p in counts.periods] == [
        "2024-03-30T00:00:00+01:00",
        "2024-03-31T00:00:00+01:00",
        "2024-04-01T00:00:00+02:00",
    ]
    assert counts.end.isoformat() == "2024-04-02T00:00:00+02:00"


def test_lord_howe_half_hour_change_makes_a_90_minute_bucket(team: Team) -> None:
    lord_howe = ZoneInfo("Australia/Lord_Howe")
    start, end = (
        datetime(2024, 10, 6, 1, tzinfo=lord_howe),
        datetime(2024, 10, 6, 4, tzinfo=lord_howe),
    )
    assert hour_labels(team, lord_howe, start, end) == [
        "2024-10-06T01:00:00+10:30",
        "2024-10-06T03:00:00+11:00",
    ]


def test_weeks_start_on_monday_unless_asked(team: Team) -> None:
    sunday = Endpoint(day=date(2023, 1, 1))
    query = TapQuery(start=sunday, end=sunday, zone=ZoneInfo("UTC"), interval=Interval.WEEK)
    assert labels(query, team) == ["2022-12-26T00:00:00+00:00"]
    sundays = replace(query, week_start=WEEKDAYS.index("sunday"))
    assert labels(sundays, team) == ["2023-01-01T00:00:00+00:00"]


def test_edge_buckets_count_only_taps_inside_the_range_and_are_partial(
    team: Team, tag: Tag
) -> None:
    store_taps(
        [
            TapRow(1, tag.uid, 5, datetime(2024, 5, 1, 9, 59, 59, tzinfo=UTC)),
            TapRow(2, tag.uid, 7, datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)),
            TapRow(3, tag.uid, 11, datetime(2024, 5, 1, 10, 44, 59, 999999, tzinfo=UTC)),
            TapRow(4, tag.uid, 13, datetime(2024, 5, 1, 10, 45, tzinfo=UTC)),
        ]
    )
    query = TapQuery(
        start=Endpoint(instant=datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
        end=Endpoint(instant=datetime(2024, 5, 1, 10, 45, tzinfo=UTC)),
        zone=ZoneInfo("UTC"),
        interval=Interval.DAY,
    )
    counts = count_taps(team, query)
    assert [(p.start.isoformat(), p.taps, p.partial) for p in counts.periods] == [
        ("2024-05-01T00:00:00+00:00", 18, True)
    ]


def test_minute_buckets_place_taps_before_1970_and_at_the_edges(team: Team, tag: Tag) -> None:
    # Minute sums come back as seconds since the epoch: a minute before it is negative.
    store_taps(
        [
            TapRow(1, tag.uid, 2, datetime(1969, 12, 31, 23, 58, 59, 999999, tzinfo=UTC)),
            TapRow(2, tag.uid, 3, datetime(1969, 12, 31, 23, 59, 30, tzinfo=UTC)),
            TapRow(3, tag.uid, 5, datetime(1970, 1, 1, 0, 0, 0, tzinfo=UTC)),
            TapRow(4, tag.uid, 7, datetime(1970, 1, 1, 0, 1, 59, 999999, tzinfo=UTC)),
            TapRow(5, tag.uid, 11, datetime(1970, 1, 1, 0, 2, tzinfo=UTC)),
        ]
    )
    query = TapQuery(
        start=Endpoint(instant=datetime(1969, 12, 31, 23, 59, tzinfo=UTC)),
        end=Endpoint(instant=datetime(1970, 1, 1, 0, 2, tzinfo=UTC)),
        zone=ZoneInfo("Asia/Kolkata"),
        interval=Interval.MINUTE,
    )
    counts = count_taps(team, query)
    assert [(p.start.isoformat(), p.taps) for p in counts.periods] == [
        ("1970-01-01T05:29:00+05:30", 3),
        ("1970-01-01T05:30:00+05:30", 5),
        ("1970-01-01T05:31:00+05:30", 7),
    ]


def test_long_minute_ranges_read_whole_minutes_from_the_minute_level(team: Team, tag: Tag) -> None:
    # Two hours across midnight before 1970, cut mid-minute at both ends: the whole
    # minutes come from the minute day level (two UTC days), the cut ones from raw taps.
    at = datetime(1969, 12, 31, 23, 0, 30, tzinfo=UTC)
    store_taps(
        [
            TapRow(1, tag.uid, 1, at - timedelta(minutes=1)),
            TapRow(2, tag.uid, 2, at - timedelta(microseconds=1)),
            TapRow(3, tag.uid, 3, at),
            TapRow(4, tag.uid, 5, datetime(1969, 12, 31, 23, 58, 59, 999999, tzinfo=UTC)),
            TapRow(5, tag.uid, 7, datetime(1970, 1, 1, tzinfo=UTC)),
            TapRow(6, tag.uid, 11, at + timedelta(hours=2, microseconds=-1)),
            TapRow(7, tag.uid, 13, at + timedelta(hours=2)),
        ]
    )
    query = TapQuery(
        start=Endpoint(instant=at),
        end=Endpoint(instant=at + timedelta(hours=2)),
        zone=ZoneInfo("UTC"),
        interval=Interval.MINUTE,
        fill=False,
    )

    def answer(query: TapQuery) -> list[tuple[str, int]]:
        return [(p.start.isoformat(), p.taps) for p in count_taps(team, query).periods]

    assert answer(query) == [
        ("1969-12-31T23:00:00+00:00", 3),
        ("1969-12-31T23:58:00+00:00", 5),
        ("1970-01-01T00:00:00+00:00", 7),
        ("1970-01-01T01:00:00+00:00", 11),
    ]
    # Read from the level: a changed stored minute changes the answer ...
    MinuteDay.objects.filter(day=date(1969, 12, 31)).update(minutes=pack_minutes([1438], [500]))
    assert answer(query)[1] == ("1969-12-31T23:58:00+00:00", 500)
    # ... but not that of a range under an hour, read from the raw taps.
    short = replace(query, end=Endpoint(instant=at + timedelta(minutes=59)))
    assert answer(short) == [("1969-12-31T23:00:00+00:00", 3), ("1969-12-31T23:58:00+00:00", 5)]


def test_a_bucket_that_has_not_ended_is_partial(team: Team) -> None:
    today = datetime.now(UTC).date()
    query = TapQuery(
        start=Endpoint(day=today - timedelta(days=1)),
        end=Endpoint(day=today),
        zone=ZoneInfo("UTC"),
    )
    assert [p.partial for p in count_taps(team, query).periods] == [False, True]


def test_too_many_buckets_is_refused_before_any_work(team: Team) -> None:
    query = TapQuery(
        start=Endpoint(day=date(2000, 1, 1)),
        end=Endpoint(day=date(2024, 1, 1)),
        zone=ZoneInfo("UTC"),
        interval=Interval.MINUTE,
    )
    with pytest.raises(TooManyBuckets):
        count_taps(team, query)


def test_compare_previous_with_dates_moves_by_whole_local_days() -> None:
    query = TapQuery(
        start=Endpoint(day=date(2024, 3, 1)), end=Endpoint(day=date(2024, 3, 31)), zone=PARIS
    )
    earlier = compared_query(query, "previous")
    assert (earlier.start.day, earlier.end.day) == (date(2024, 1, 30), date(2024, 2, 29))


def test_compare_year_keeps_the_local_calendar_and_clamps_a_leap_day() -> None:
    query = TapQuery(
        start=Endpoint(day=date(2024, 2, 29)), end=Endpoint(day=date(2024, 2, 29)), zone=PARIS
    )
    earlier = compared_query(query, "year")
    assert (earlier.start.day, earlier.end.day) == (date(2023, 2, 28), date(2023, 2, 28))


def test_sums_by_key_stay_exact_beyond_float_precision() -> None:
    keys = np.array([0, 0, 1], dtype=np.int64)

    assert sum_by(keys, np.array([2**53, 1, 5], dtype=np.int64), 2).tolist() == [2**53 + 1, 5]
    assert sum_by(keys, np.array([3, 4, 5], dtype=np.int64), 3).tolist() == [7, 5, 0]
    assert sum_by(keys[:0], keys[:0], 2).tolist() == [0, 0]


def expected_tags(cells: list[tuple[int, int, int]]) -> set[int]:
    return {tag for tag, _, _ in cells}


@given(
    st.lists(
        st.tuples(st.sampled_from([5, 9, 2**40, 77]), st.integers(0, 3), st.integers(1, 9)),
        max_size=40,
    )
)
def test_tag_cells_sum_by_tag_whatever_their_order(cells: list[tuple[int, int, int]]) -> None:
    tags, buckets, taps = np.array(cells, dtype=np.int64).reshape(-1, 3).T
    grid = _TagCells(tags, buckets, taps)
    expected: Counter[tuple[int, int]] = Counter()
    for tag, bucket, count in cells:
        expected[tag, bucket] += count

    totals = {
        tag: sum(n for (t, _), n in expected.items() if t == tag) for tag in (5, 9, 2**40, 77)
    }
    ranked = sorted(totals, key=lambda tag: (-totals[tag], tag))
    present = [tag for tag in ranked if tag in expected_tags(cells)]
    assert grid.busiest(2) == present[:2]
    assert grid.busiest(10, also=[9, 3]) == sorted(
        {*present, 9, 3}, key=lambda tag: (-totals.get(tag, 0), tag)
    )
    shown = [77, 5, 1234]
    assert grid.sums_by_tag(shown, 4) == {
        tag: [expected[tag, bucket] for bucket in range(4)] for tag in shown
    }


@pytest.mark.parametrize("spread", [1, 2**40])
def test_tag_cells_rank_alike_whether_their_ids_are_close_or_far_apart(spread: int) -> None:
    # Close ids are summed by id, far ones after a sort: both rank the same.
    tags = np.array([3, 1, 2, 3, 1, 4, 3, 2], dtype=np.int64) * spread
    taps = np.array([1, 5, 2, 2, 1, 7, 1, 1], dtype=np.int64)
    grid = _TagCells(tags, np.zeros(len(tags), dtype=np.int64), taps)

    # sums: tag 4: 7, tag 1: 6, tag 3: 4, tag 2: 3
    assert grid.busiest(3) == [4 * spread, 1 * spread, 3 * spread]
    assert grid.busiest(9, also=[5 * spread]) == [n * spread for n in (4, 1, 3, 2, 5)]


@pytest.mark.django_db
@pytest.mark.parametrize("grouped", [False, True])
def test_chosen_tags_are_read_from_their_taps_not_from_every_tags_day_cells(
    grouped: bool,
) -> None:
    # The day level holds every tag's cells: a year for one busy tag read 365 rows of
    # about 100 KB each at bench-10M. Chosen tags are read by the taps' tag index.
    team = store_for_new_team(
        [TapRow(n + 1, 501 + n % 2, 1, datetime(2024, 3, 1, n, tzinfo=UTC)) for n in range(10)]
    )
    query = TapQuery(
        start=Endpoint(day=date(2024, 1, 1)),
        end=Endpoint(day=date(2024, 12, 31)),
        zone=ZoneInfo("Asia/Kolkata"),
        tags=(501,),
        group_by_tag=grouped,
    )

    with CaptureQueriesContext(connection) as statements:
        counts = count_taps(team, query)

    assert counts.total == 5
    tables = " ".join(statement["sql"] for statement in statements)
    assert "analytics_tap" in tables
    assert "analytics_tagday" not in tables

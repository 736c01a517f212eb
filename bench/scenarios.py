"""What the harness asks: the analytics queries of issue 5 and the workload profiles."""

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime

ZONES = ("UTC", "Asia/Kolkata")  # Kolkata: a +05:30 zone, off the hour grid
ANALYTICS_PATH = "/v1/analytics/taps"
SEED_PATH = "/v1/api/tap/analytics"
BASELINE_PATH = "/bench/baseline/taps"
BASELINE_SEED_PATH = "/bench/baseline/seed"
INGEST_PATH = "/v1/taps"


@dataclass(frozen=True)
class Query:
    """One analytics query shape; the wrk script moves its range on every request."""

    slug: str
    title: str
    interval: str
    tz: str
    days: int  # the range's length
    base: date  # the first request's start date; later ones start later
    group_by_tag: bool = False
    seed: bool = False  # the seed-compatible POST instead of the GET
    one_tag: bool = False  # filtered by one of the team's tags (``tag`` of wrk_args)

    def wrk_args(self, *, baseline: bool, tag: int | None = None) -> list[str]:
        """The request part of bench/wrk/analytics.lua's arguments (the key goes in the
        environment, out of the process list)."""
        if self.seed:
            method, path = "POST", BASELINE_SEED_PATH if baseline else SEED_PATH
        else:
            method, path = "GET", BASELINE_PATH if baseline else ANALYTICS_PATH
        base = int(datetime(self.base.year, self.base.month, self.base.day, tzinfo=UTC).timestamp())
        extra = "&group_by=tag" if self.group_by_tag else ""
        if self.one_tag:
            if tag is None:
                raise ValueError(f"{self.slug} needs a tag of the team")
            extra += f"&tag={tag}"
        return [method, path, self.interval, self.tz, str(base), str(self.days), extra]


def _per_zone(
    slug: str, title: str, interval: str, days: int, base: date, **kwargs: bool
) -> list[Query]:
    return [
        Query(
            f"{slug}-{zone.split('/')[-1].lower()}",
            f"{title}, {zone}",
            interval,
            zone,
            days,
            base,
            **kwargs,
        )
        for zone in ZONES
    ]


# The data sets run from 2023-01-01 for 400 days (generate_taps' default); a year's range
# starting between December 2022 and autumn 2023 stays mostly inside them.
LATENCY_QUERIES: list[Query] = [
    *_per_zone("year-day", "a year by day", "day", 365, date(2022, 12, 1)),
    *_per_zone("year-week", "a year by week", "week", 365, date(2022, 12, 1)),
    *_per_zone("quarter-hour", "a quarter by hour", "hour", 91, date(2023, 1, 1)),
    *_per_zone("day-minute", "a day by minute", "minute", 1, date(2023, 1, 1)),
    *_per_zone(
        "month-day-tag",
        "a month by day, group_by=tag",
        "day",
        31,
        date(2023, 1, 1),
        group_by_tag=True,
    ),
    # Not in issue 5's list: a tag filter reads the tag rollup by its key, and a year for
    # one tag once took 120-200 ms at bench-10M by another path.
    *_per_zone(
        "one-tag-year-day", "a year by day, one tag", "day", 365, date(2022, 12, 1), one_tag=True
    ),
    Query(
        "seed-year-week",
        "seed POST: a year by week, UTC",
        "week",
        "UTC",
        365,
        date(2022, 12, 1),
        seed=True,
    ),
]
REPEATED_QUERY = Query(
    "year-day-utc", "a year by day, UTC, 2023", "day", "UTC", 365, date(2023, 1, 1)
)
THROUGHPUT_QUERY = Query("month-day-utc", "a month by day, UTC", "day", "UTC", 31, date(2023, 1, 1))


@dataclass(frozen=True)
class Profile:
    """How much of each measurement to do: the full run or the --quick smoke run."""

    latency_requests: int
    latency_seconds: int  # a cap per query
    baseline_requests: int
    baseline_seconds: int
    repeated_requests: int
    throughput_seconds: int
    throughput_connections: int
    ingest_seconds: int
    ingest_clients: int
    ingest_batch: int
    live_sockets: int
    live_taps: int
    live_seconds: int  # stop posting taps after this


FULL = Profile(
    latency_requests=300,
    latency_seconds=60,
    baseline_requests=50,
    baseline_seconds=20,
    repeated_requests=300,
    throughput_seconds=10,
    throughput_connections=32,
    ingest_seconds=10,
    ingest_clients=4,
    ingest_batch=1000,
    live_sockets=500,
    live_taps=200,
    live_seconds=180,
)
QUICK = replace(
    FULL,
    latency_requests=20,
    latency_seconds=5,
    baseline_requests=5,
    baseline_seconds=3,
    repeated_requests=20,
    throughput_seconds=2,
    ingest_seconds=2,
    live_sockets=50,
    live_taps=20,
    live_seconds=30,
)

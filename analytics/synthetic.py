"""Deterministic, realistic synthetic tap data: ``interview-tags.csv`` and ``interview-taps.csv``.

Teams have Zipf-like sizes and sit in a few UTC offsets; tag popularity is lognormal. Tap volume
follows each team's local daily and weekly rhythm, with day-to-day noise, occasional busy days and
slow growth. Output depends only on the arguments: the same arguments give byte-identical files.
"""

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from pathlib import Path

from analytics.periods import EARLIEST, LATEST

TAGS_FILENAME = "interview-tags.csv"
TAPS_FILENAME = "interview-taps.csv"
FIRST_TAG_UID = 1_000_000_001

HOUR_MS = 3_600_000
SLOTS_PER_DAY = 48  # local half-hours; every offset below is a whole number of half-hours
UTC_OFFSETS_MINUTES = (-480, -300, 0, 60, 330, 480, 600)
TEAM_SIZE_ZIPF_EXPONENT = 1.1
TAG_POPULARITY_SIGMA = 1.3
DAILY_NOISE_SIGMA = 0.2
BUSY_DAY_CHANCE = 0.01
BUSY_DAY_FACTOR = 3.0
GROWTH_OVER_PERIOD = 0.6
WEEKDAY_FACTORS = (1.0, 1.05, 1.05, 1.0, 0.9, 0.4, 0.25)  # Monday .. Sunday
COUNT_LABELS = ("1", "2", "3", "4", "5")
COUNT_CUM_WEIGHTS = (90.0, 98.0, 99.2, 99.7, 100.0)
MAX_TAG_AGE_DAYS = 90
FLUSH_CHARS = 4_000_000

SECOND_LABELS = [f"{s // 60:02d}:{s % 60:02d}." for s in range(3600)]
MILLI_LABELS = [f"{ms:03d}Z\n" for ms in range(1000)]


@dataclass(frozen=True)
class DatasetSummary:
    taps: int
    tags: int
    teams: int
    first_tap_at: datetime | None
    last_tap_at: datetime | None
    tags_path: Path
    taps_path: Path


@dataclass(frozen=True)
class _Team:
    tag_indices: list[int]
    tag_cum_weights: list[float]
    utc_offset_minutes: int
    day_factors: list[float]  # indexed by local day + 1: local days run from -1 to days

    @property
    def tap_rate(self) -> float:
        return self.tag_cum_weights[-1]


def write_dataset(
    outdir: Path,
    *,
    taps: int,
    tags: int,
    teams: int,
    seed: int = 1,
    start: date = date(2023, 1, 1),
    days: int = 365,
    progress: Callable[[int], None] | None = None,
) -> DatasetSummary:
    _validate(taps=taps, tags=tags, teams=teams, days=days)
    _validate_span(start, days)
    rng = random.Random(seed)
    start_at = datetime(start.year, start.month, start.day, tzinfo=UTC)
    tag_teams = _assign_tags_to_teams(rng, tags=tags, teams=teams)
    team_list = _make_teams(rng, tag_teams, teams=teams, start=start, days=days)

    outdir.mkdir(parents=True, exist_ok=True)
    tags_path = outdir / TAGS_FILENAME
    taps_path = outdir / TAPS_FILENAME
    _write_tags(rng, tags_path, tag_teams, start_at=start_at)
    first_tap_at, last_tap_at = _write_taps(
        rng,
        taps_path,
        team_list,
        taps=taps,
        tags=tags,
        start_at=start_at,
        days=days,
        progress=progress,
    )
    return DatasetSummary(
        taps=taps,
        tags=tags,
        teams=teams,
        first_tap_at=first_tap_at,
        last_tap_at=last_tap_at,
        tags_path=tags_path,
        taps_path=taps_path,
    )


def _validate(*, taps: int, tags: int, teams: int, days: int) -> None:
    if taps < 0:
        raise ValueError(f"taps must be 0 or more, got {taps}")
    if tags < 1:
        raise ValueError(f"tags must be at least 1, got {tags}")
    if teams < 1:
        raise ValueError(f"teams must be at least 1, got {teams}")
    if tags < teams:
        raise ValueError(
            f"tags ({tags}) must be at least teams ({teams}) so every team has a tag: "
            "raise tags or lower teams"
        )
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")


def _apportion(rng: random.Random, total: int, weights: Sequence[float]) -> list[int]:
    """Split total into integer shares proportional to weights, summing exactly to total.

    Systematic rounding: each share is the floor or ceiling of its expected value, rounded up
    with probability equal to its fractional part, so sparse data is not piled onto peak cells.
    """
    weight_sum = math.fsum(weights)
    if total == 0 or weight_sum <= 0:
        return [0] * len(weights)
    scale = total / weight_sum
    offset = rng.random()
    shares = []
    cumulative = 0.0
    previous = 0
    for weight in weights:
        cumulative += weight
        reached = min(total, int(offset + cumulative * scale))
        shares.append(reached - previous)
        previous = reached
    shares[-1] += total - previous
    return shares


def _assign_tags_to_teams(rng: random.Random, *, tags: int, teams: int) -> list[int]:
    """Return the team index (0-based) of each tag index; team 0 is the biggest."""
    zipf_weights = [1 / rank**TEAM_SIZE_ZIPF_EXPONENT for rank in range(1, teams + 1)]
    extra_sizes = _apportion(rng, tags - teams, zipf_weights)
    sorted_sizes = sorted((1 + extra for extra in extra_sizes), reverse=True)
    tag_teams = [team for team, size in enumerate(sorted_sizes) for _ in range(size)]
    rng.shuffle(tag_teams)
    return tag_teams


def _make_teams(
    rng: random.Random, tag_teams: list[int], *, teams: int, start: date, days: int
) -> list[_Team]:
    offsets = list(UTC_OFFSETS_MINUTES)
    rng.shuffle(offsets)
    tag_indices_by_team: list[list[int]] = [[] for _ in range(teams)]
    for tag_index, team in enumerate(tag_teams):
        tag_indices_by_team[team].append(tag_index)
    team_list = []
    for team, tag_indices in enumerate(tag_indices_by_team):
        popularity = [rng.lognormvariate(0.0, TAG_POPULARITY_SIGMA) for _ in tag_indices]
        team_list.append(
            _Team(
                tag_indices=tag_indices,
                tag_cum_weights=list(accumulate(popularity)),
                utc_offset_minutes=offsets[team % len(offsets)],
                day_factors=_day_factors(rng, start=start, days=days),
            )
        )
    return team_list


def _day_factors(rng: random.Random, *, start: date, days: int) -> list[float]:
    factors = []
    for local_day in range(-1, days + 1):
        weekday = (start.weekday() + local_day) % 7
        growth = 1 + GROWTH_OVER_PERIOD * min(max(local_day, 0), days) / days
        noise = rng.lognormvariate(0.0, DAILY_NOISE_SIGMA)
        if rng.random() < BUSY_DAY_CHANCE:
            noise *= BUSY_DAY_FACTOR
        factors.append(WEEKDAY_FACTORS[weekday] * growth * noise)
    return factors


def _local_activity(slot: int) -> float:
    """Relative tap rate in a local half-hour slot: quiet nights, morning and afternoon peaks."""
    hour = (slot + 0.5) / 2

    def bump(center: float, width: float) -> float:
        return math.exp(-(((hour - center) / width) ** 2) / 2)

    return 0.02 + bump(10.0, 1.8) + 0.85 * bump(15.0, 2.0) + 0.2 * bump(20.0, 1.5)


ACTIVITY_BY_SLOT = [_local_activity(slot) for slot in range(SLOTS_PER_DAY)]


def _team_weights_for_hour(team_list: list[_Team], hour: int) -> list[float]:
    weights = []
    for team in team_list:
        local_mid_minute = hour * 60 + 30 + team.utc_offset_minutes
        local_day, minute_of_day = divmod(local_mid_minute, 1440)
        weights.append(
            team.tap_rate * team.day_factors[local_day + 1] * ACTIVITY_BY_SLOT[minute_of_day // 30]
        )
    return weights


def _iso_ms(moment: datetime) -> str:
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def _validate_span(start: date, days: int) -> None:
    """Every tag and tap must fall in the years the service takes (``EARLIEST`` to
    ``LATEST``): tags are made up to ``MAX_TAG_AGE_DAYS`` and a day before ``start``."""
    first = EARLIEST.date() + timedelta(days=MAX_TAG_AGE_DAYS + 1)
    last = LATEST.date() - timedelta(days=days)
    if not first <= start <= last:
        raise ValueError(
            f"start must be from {first} to {last} with days={days}, so that every tag "
            f"and tap falls in the years {EARLIEST.year} to {LATEST.year - 1}; got {start}"
        )


def _write_tags(
    rng: random.Random, path: Path, tag_teams: list[int], *, start_at: datetime
) -> None:
    max_age_ms = MAX_TAG_AGE_DAYS * 86_400_000
    lines = ["tag_uid,team_id,created_at\n"]
    for tag_index, team in enumerate(tag_teams):
        # at least a day before start_at, so before any of the tag's taps
        age_ms = 86_400_000 + int(rng.random() * max_age_ms)
        created_at = _iso_ms(start_at - timedelta(milliseconds=age_ms))
        lines.append(f"{FIRST_TAG_UID + tag_index},{team + 1},{created_at}\n")
    path.write_text("".join(lines), encoding="ascii")


def _write_taps(
    rng: random.Random,
    path: Path,
    team_list: list[_Team],
    *,
    taps: int,
    tags: int,
    start_at: datetime,
    days: int,
    progress: Callable[[int], None] | None,
) -> tuple[datetime | None, datetime | None]:
    hours = days * 24
    taps_by_hour = _apportion(
        rng, taps, [math.fsum(_team_weights_for_hour(team_list, hour)) for hour in range(hours)]
    )
    uid_labels = [str(FIRST_TAG_UID + tag_index) for tag_index in range(tags)]
    random_unit = rng.random
    first_tap_at = last_tap_at = None
    written = 0
    with path.open("w", encoding="ascii", newline="") as out:
        out.write("id,tag_uid,count,created_at\n")
        chunk: list[str] = []
        chunk_taps = 0
        for hour, hour_taps in enumerate(taps_by_hour):
            if not hour_taps:
                continue
            hour_at = start_at + timedelta(hours=hour)
            taps_by_team = _apportion(rng, hour_taps, _team_weights_for_hour(team_list, hour))
            # a key packs (millisecond in hour, tag index) so one int sort orders the hour
            keys: list[int] = []
            for team, team_taps in zip(team_list, taps_by_team, strict=True):
                if team_taps:
                    chosen = rng.choices(
                        team.tag_indices, cum_weights=team.tag_cum_weights, k=team_taps
                    )
                    keys += [int(random_unit() * HOUR_MS) * tags + tag for tag in chosen]
            keys.sort()
            counts = rng.choices(COUNT_LABELS, cum_weights=COUNT_CUM_WEIGHTS, k=hour_taps)
            prefix = f"{hour_at:%Y-%m-%dT%H:}"
            tap_id = written
            for key, count in zip(keys, counts, strict=True):
                tap_id += 1
                milli_in_hour, tag = divmod(key, tags)
                second, milli = divmod(milli_in_hour, 1000)
                chunk.append(
                    f"{tap_id},{uid_labels[tag]},{count},"
                    f"{prefix}{SECOND_LABELS[second]}{MILLI_LABELS[milli]}"
                )
            if first_tap_at is None:
                first_tap_at = hour_at + timedelta(milliseconds=keys[0] // tags)
            last_tap_at = hour_at + timedelta(milliseconds=keys[-1] // tags)
            written = tap_id
            chunk_taps += hour_taps
            if chunk_taps * 50 >= FLUSH_CHARS:
                out.write("".join(chunk))
                chunk.clear()
                chunk_taps = 0
                if progress is not None:
                    progress(written)
        out.write("".join(chunk))
    if progress is not None:
        progress(written)
    return first_tap_at, last_tap_at

"""Loading the seed's CSV files (SPEC 4, 10), streamed in batches through the write path.

Rows are parsed and checked in Python, staged with COPY in batches, screened in SQL for what
needs the database (unknown tag, an id repeated in the file) and stored by
``analytics.ingest``. Memory holds one batch, whatever the size of the file. Each batch
commits on its own, so an interrupted load keeps what it stored and a rerun skips it.
"""

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, TypeVar

from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from analytics.ingest import (
    STAGE_COLUMNS,
    STAGE_TABLE,
    StoreResult,
    TapRow,
    copy_rows,
    create_stage,
    db_instant,
    instant_type,
    store_staged_taps,
)
from analytics.live import LOADER_INLINE_LIMIT
from teams.models import MAX_BIGINT, Tag, Team

TAG_COLUMNS = ("tag_uid", "team_id", "created_at")
TAP_COLUMNS = ("id", "tag_uid", "count", "created_at")
MAX_COUNT = 2**31 - 1


class RowError(ValueError):
    """A row that cannot be loaded; the message says why."""


class FileFormatError(ValueError):
    """A file that cannot be read as the expected CSV at all."""


@dataclass(frozen=True, slots=True)
class TagRow:
    uid: int
    team_id: int
    created_at: datetime
    line: int


@dataclass(frozen=True, slots=True)
class Problem:
    line: int
    reason: str


@dataclass
class LoadReport:
    teams_created: int = 0
    tags_created: int = 0
    taps: StoreResult = field(default_factory=StoreResult)
    bad_rows: int = 0

    def summary(self, seconds: float) -> str:
        teams, tags = Team.objects.count(), Tag.objects.count()
        return (
            f"teams: {teams} ({self.teams_created} new), tags: {tags} ({self.tags_created} new), "
            f"taps loaded: {self.taps.accepted}, skipped: {self.bad_rows}, "
            f"duplicates: {self.taps.duplicates}, seconds: {seconds:.1f}"
        )


T = TypeVar("T")
ProblemHandler = Callable[[Problem], None]
ProgressHandler = Callable[[int], None]


def parse_id(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise RowError(f"bad number for {what}: {text!r} is not a positive whole number")
    value = int(text)
    if not 1 <= value <= MAX_BIGINT:
        raise RowError(f"bad number for {what}: {text} is outside 1..{MAX_BIGINT}")
    return value


def parse_count(text: str) -> int:
    stripped = text.lstrip("-")
    if not (stripped.isascii() and stripped.isdigit()):
        raise RowError(f"bad number for count: {text!r} is not a whole number")
    value = int(text)
    if value < 1:
        raise RowError(f"count must be at least 1, not {value}")
    if value > MAX_COUNT:
        raise RowError(f"count {value} is larger than {MAX_COUNT}")
    return value


def parse_instant(text: str) -> datetime:
    """ISO 8601 or PostgreSQL's text form; a timestamp without an offset is UTC (SPEC 4)."""
    if len(text) < 16 or text[10] not in "T ":
        raise RowError(
            f"bad timestamp {text!r}: use ISO 8601 such as 2023-10-20T14:22:01.123Z "
            "or 2023-10-20 14:22:01.123+00"
        )
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise RowError(
            f"bad timestamp {text!r}: use ISO 8601 such as 2023-10-20T14:22:01.123Z "
            "or 2023-10-20 14:22:01.123+00"
        ) from None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise RowError(f"bad timestamp {text!r}: out of range in UTC") from None


class _ProgressReader:
    """Counts the characters the CSV reader pulls, for a progress bar by file size."""

    def __init__(self, stream: TextIO, progress: ProgressHandler | None) -> None:
        self._stream = stream
        self._progress = progress
        self._pending = 0

    def __iter__(self) -> Iterator[str]:
        for line in self._stream:
            if self._progress is not None:
                self._pending += len(line)
                if self._pending >= 1 << 16:
                    self._progress(self._pending)
                    self._pending = 0
            yield line
        if self._progress is not None and self._pending:
            self._progress(self._pending)


def _read_rows(
    stream: TextIO,
    columns: tuple[str, ...],
    parse: Callable[[list[str], int], T],
    on_problem: ProblemHandler,
    progress: ProgressHandler | None,
) -> Iterator[T]:
    """Parse each row that has the wanted columns; report the others with their line."""
    reader = csv.reader(iter(_ProgressReader(stream, progress)))
    try:
        for line, fields in _fields_by_header(reader, columns):
            try:
                if fields is None:
                    raise RowError(f"expected {len(columns)} fields: {','.join(columns)}")
                yield parse(fields, line)
            except RowError as error:
                on_problem(Problem(line, str(error)))
    except csv.Error as error:
        raise FileFormatError(f"line {reader.line_num}: unreadable CSV ({error})") from None


def _fields_by_header(
    reader: Any, columns: tuple[str, ...]
) -> Iterator[tuple[int, list[str] | None]]:
    """Yield (physical line where the row starts, its wanted fields in order, or None if
    the row is too short)."""
    try:
        header = next(reader)
    except StopIteration:
        raise FileFormatError(
            f"the file is empty; its first line must be {','.join(columns)}"
        ) from None
    names = [name.strip().lstrip("\ufeff") for name in header]
    missing = [column for column in columns if column not in names]
    if missing:
        raise FileFormatError(
            f"line 1: the header must name {', '.join(columns)}; "
            f"missing {', '.join(missing)} (found {','.join(names)})"
        )
    positions = [names.index(column) for column in columns]
    width = max(positions) + 1
    last_line = reader.line_num
    for fields in reader:
        line = last_line + 1
        last_line = reader.line_num
        if not fields:
            continue
        if len(fields) < width:
            yield line, None
            continue
        yield line, [fields[position].strip() for position in positions]


def _tag_row(fields: list[str], line: int) -> TagRow:
    uid, team_id, created_at = fields
    return TagRow(
        uid=parse_id(uid, "tag_uid"),
        team_id=parse_id(team_id, "team_id"),
        created_at=parse_instant(created_at),
        line=line,
    )


def _tap_row(fields: list[str], line: int) -> TapRow:
    tap_id, tag_uid, count, created_at = fields
    return TapRow(
        tap_id=parse_id(tap_id, "id"),
        tag_uid=parse_id(tag_uid, "tag_uid"),
        count=parse_count(count),
        at=parse_instant(created_at),
        line=line,
    )


def read_tags(
    stream: TextIO, on_problem: ProblemHandler, progress: ProgressHandler | None = None
) -> Iterator[TagRow]:
    return _read_rows(stream, TAG_COLUMNS, _tag_row, on_problem, progress)


def read_taps(
    stream: TextIO, on_problem: ProblemHandler, progress: ProgressHandler | None = None
) -> Iterator[TapRow]:
    return _read_rows(stream, TAP_COLUMNS, _tap_row, on_problem, progress)


def batched(rows: Iterator[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            # The consumer asks for the next batch when it is done with this one; reusing
            # the list keeps one batch in memory, not two.
            batch.clear()
    if batch:
        yield batch


def store_tag_batch(rows: list[TagRow], report: LoadReport) -> list[Problem]:
    """Create missing teams and new tags. A tag already owned by another team stays there:
    moving tags is done in the admin, and reloading an old file must not undo a move."""
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""CREATE TEMP TABLE IF NOT EXISTS tag_stage (
                line bigint NOT NULL, uid bigint NOT NULL, team_id bigint NOT NULL,
                created_at {instant_type()} NOT NULL)"""
        )
        cursor.execute("DELETE FROM tag_stage")
        copy_rows(
            cursor,
            "tag_stage",
            ("line", "uid", "team_id", "created_at"),
            ((r.line, r.uid, r.team_id, db_instant(r.created_at)) for r in rows),
        )
        cursor.execute(
            """INSERT INTO teams_team (id, name, time_zone, created)
               SELECT DISTINCT team_id, 'Team ' || team_id, 'UTC', %s FROM tag_stage
               WHERE team_id NOT IN (SELECT id FROM teams_team)
               ORDER BY team_id""",
            [db_instant(now)],
        )
        report.teams_created += cursor.rowcount
        cursor.execute(
            """INSERT INTO teams_tag (uid, team_id, created_at)
               SELECT uid, team_id, created_at FROM tag_stage WHERE true ORDER BY line
               ON CONFLICT (uid) DO NOTHING""",
            [],
        )
        report.tags_created += cursor.rowcount
        cursor.execute(
            """SELECT s.line, s.uid, s.team_id, t.team_id FROM tag_stage s
               JOIN teams_tag t ON t.uid = s.uid
               WHERE t.team_id <> s.team_id ORDER BY s.line""",
            [],
        )
        problems = [
            Problem(
                line,
                f"tag {uid} belongs to team {owner}, not {wanted}; "
                "move tags in the admin, not by reloading",
            )
            for line, uid, wanted, owner in cursor.fetchall()
        ]
        if connection.vendor == "postgresql":
            # Teams were inserted with explicit ids: move the id sequence past them so
            # that a team added in the admin gets a free id.
            cursor.execute(
                """SELECT setval(pg_get_serial_sequence('teams_team', 'id'),
                                 (SELECT max(id) FROM teams_team))"""
            )
    return problems


def start_tap_load() -> None:
    """Prepare this connection to remember which (team, id) pairs the current file has
    shown, so that an id repeated in the file is reported with the line it repeats."""
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS load_seen")
        cursor.execute(
            """CREATE TEMP TABLE load_seen (
                team_id bigint NOT NULL, tap_id bigint NOT NULL, line bigint NOT NULL,
                PRIMARY KEY (team_id, tap_id))"""
        )


def finish_tap_load() -> None:
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS load_seen")


def store_tap_batch(rows: list[TapRow], report: LoadReport) -> list[Problem]:
    """Stage a batch, refuse what needs the database to see, store the rest, and return
    the refused rows.

    Needs ``start_tap_load`` first and a transaction around it.
    """
    with connection.cursor() as cursor:
        # Staged under their file lines, which the checks below report.
        create_stage(cursor)
        cursor.execute(f"DELETE FROM {STAGE_TABLE}")
        copy_rows(
            cursor,
            STAGE_TABLE,
            STAGE_COLUMNS,
            ((r.line, r.tap_id, r.tag_uid, r.count, db_instant(r.at)) for r in rows),
        )
        cursor.execute(
            f"""SELECT s.line, s.tag_uid, t.team_id, t.owner_since
                FROM {STAGE_TABLE} s LEFT JOIN teams_tag t ON t.uid = s.tag_uid
                WHERE t.uid IS NULL OR s.created_at < t.owner_since""",
            [],
        )
        problems = [
            Problem(line, f"unknown tag {uid}: it is not in the tags file or the database")
            if team_id is None
            else Problem(
                line,
                f"tap predates its tag's owner: tag {uid} belongs to team {team_id} only "
                f"since {_as_text(since)}",
            )
            for line, uid, team_id, since in cursor.fetchall()
        ]
        cursor.execute(
            f"""SELECT line, tap_id, first_line FROM (
                    SELECT s.line, s.tap_id,
                        min(s.line) OVER (PARTITION BY t.team_id, s.tap_id) AS first_line
                    FROM {STAGE_TABLE} s JOIN teams_tag t ON t.uid = s.tag_uid
                ) AS ranked
                WHERE first_line <> line""",
            [],
        )
        problems += [
            Problem(line, f"duplicate id {tap_id}: line {first_line} has the same id")
            for line, tap_id, first_line in cursor.fetchall()
        ]
        _refuse(cursor, problems)
        repeats = _refuse_ids_of_earlier_batches(cursor)
    report.taps.add(store_staged_taps(live_limit=LOADER_INLINE_LIMIT))
    return problems + repeats


def _refuse(cursor: CursorWrapper, problems: list[Problem]) -> None:
    if not problems:
        return
    cursor.execute("CREATE TEMP TABLE IF NOT EXISTS tap_stage_refused (line bigint NOT NULL)")
    cursor.execute("DELETE FROM tap_stage_refused")
    copy_rows(cursor, "tap_stage_refused", ("line",), [(problem.line,) for problem in problems])
    cursor.execute(f"DELETE FROM {STAGE_TABLE} WHERE line IN (SELECT line FROM tap_stage_refused)")


def _refuse_ids_of_earlier_batches(cursor: CursorWrapper) -> list[Problem]:
    """Record the batch's ids in ``load_seen`` and refuse those an earlier batch had.

    The insert skips ids the file has shown already, so the lookup of the earlier lines
    runs only when it skipped some: a file without repeats never pays for it. The lookup
    probes the key per row, because a join with the whole (growing) table would make a
    long load quadratic.
    """
    cursor.execute(f"SELECT count(*) FROM {STAGE_TABLE}")
    (staged,) = cursor.fetchone()
    cursor.execute(
        f"""INSERT INTO load_seen (team_id, tap_id, line)
            SELECT t.team_id, s.tap_id, s.line
            FROM {STAGE_TABLE} s JOIN teams_tag t ON t.uid = s.tag_uid WHERE true
            ON CONFLICT (team_id, tap_id) DO NOTHING""",
        [],
    )
    if cursor.rowcount == staged:
        return []
    cursor.execute(
        f"""SELECT line, tap_id, earlier FROM (
                SELECT s.line, s.tap_id, (
                    SELECT seen.line FROM load_seen seen
                    WHERE seen.team_id = t.team_id AND seen.tap_id = s.tap_id
                ) AS earlier
                FROM {STAGE_TABLE} s JOIN teams_tag t ON t.uid = s.tag_uid
            ) AS probed
            WHERE earlier <> line""",
        [],
    )
    repeats = [
        Problem(line, f"duplicate id {tap_id}: line {earlier} has the same id")
        for line, tap_id, earlier in cursor.fetchall()
    ]
    _refuse(cursor, repeats)
    return repeats


def _as_text(value: datetime | str) -> str:
    return value.isoformat() if isinstance(value, datetime) else f"{value}+00:00"


def open_csv(path: Path) -> TextIO:
    # Bytes that are not UTF-8 become U+FFFD: every field the loader reads is ASCII, so
    # such a row is reported as a bad row with its line instead of stopping the load.
    return path.open(newline="", encoding="utf-8", errors="replace")


def load_files(
    *,
    tags_path: Path | None,
    taps_path: Path | None,
    strict: bool,
    batch_size: int,
    on_problem: ProblemHandler,
    progress: Callable[[str, int], ProgressHandler | None] | None = None,
    on_batch: Callable[[LoadReport], None] | None = None,
) -> LoadReport:
    """Load a tags file, then a taps file, reporting bad rows in line order. With
    ``strict`` everything runs in one transaction that is rolled back if any row is bad
    (``StrictLoadFailed``)."""
    report = LoadReport()
    pending: list[Problem] = []

    def flush(problems: list[Problem]) -> None:
        problems = sorted(pending + problems, key=lambda problem: problem.line)
        pending.clear()
        report.bad_rows += len(problems)
        for problem in problems:
            on_problem(problem)

    def open_progress(path: Path) -> ProgressHandler | None:
        return progress(str(path), path.stat().st_size) if progress else None

    def load_file(
        path: Path,
        read: Callable[[TextIO, ProblemHandler, ProgressHandler | None], Iterator[T]],
        store: Callable[[list[T], LoadReport], list[Problem]],
        after_batch: Callable[[LoadReport], None] | None = None,
    ) -> None:
        with open_csv(path) as stream:
            for batch in batched(read(stream, pending.append, open_progress(path)), batch_size):
                with transaction.atomic():
                    problems = store(batch, report)
                flush(problems)
                if after_batch is not None:
                    after_batch(report)
        flush([])

    def run() -> None:
        if tags_path is not None:
            load_file(tags_path, read_tags, store_tag_batch)
        if taps_path is not None:
            start_tap_load()
            try:
                load_file(taps_path, read_taps, store_tap_batch, on_batch)
            finally:
                finish_tap_load()
        if strict and report.bad_rows:
            raise StrictLoadFailed(report)

    if strict:
        with transaction.atomic():
            run()
    else:
        run()
    return report


class StrictLoadFailed(Exception):
    def __init__(self, report: LoadReport) -> None:
        super().__init__(f"{report.bad_rows} bad rows")
        self.report = report

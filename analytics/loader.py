"""Loading the seed's CSV files (SPEC 4, 10), streamed in batches through the write path.

Taps: a reader thread turns the file into batches of checked rows in one canonical CSV form
(``line,id,tag_uid,count,created_at``), reporting bad rows with their line, while the
previous batch is COPYed into the stage and stored (``analytics.ingest``), on PostgreSQL by
two connections at once, its teams split between them (``TapLanes``). Memory
holds a few batches, whatever the size of the file. Each batch commits on its own, so an
interrupted load keeps what it stored and a rerun skips it. Checks that need the database
(unknown tag, a tap older than its tag's owner, an id repeated in the file) run only when
the store's counts show that a row was not stored.
"""

import csv
import io
import itertools
import re
from collections import defaultdict
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO, TypeVar

from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from analytics.first_load import indexes_after_first_load
from analytics.ingest import (
    OWNED_JOIN,
    STAGE_COLUMNS,
    STAGE_TABLE,
    StoreResult,
    copy_rows,
    create_stage,
    db_instant,
    instant_type,
    store_staged_taps,
)
from analytics.live import LOADER_INLINE_LIMIT, StoredRange
from analytics.periods import EARLIEST, LATEST
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
    tap_batches: int = 0

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
# Stores a batch's rows: (rows, batch number, whether the file stored taps before).
StoreRows = Callable[[list[str], int, bool], list["StoredBatch"]]


# Python refuses to read a number of over 4,300 digits (a ValueError, not a bad row):
# longer digit strings are out of range before they are read.
MAX_DIGITS = 40


def shown(text: str) -> str:
    """A field as a message quotes it: at most 40 characters of it."""
    return repr(text) if len(text) <= 40 else f"{text[:40]!r}... ({len(text):,} characters)"


def parse_id(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise RowError(f"bad number for {what}: {shown(text)} is not a positive whole number")
    value = int(text) if len(text) <= MAX_DIGITS else MAX_BIGINT + 1
    if not 1 <= value <= MAX_BIGINT:
        number = text if len(text) <= 40 else f"{text[:40]}... ({len(text):,} digits)"
        raise RowError(f"bad number for {what}: {number} is outside 1..{MAX_BIGINT}")
    return value


def parse_count(text: str) -> int:
    stripped = text.lstrip("-")
    if not (stripped.isascii() and stripped.isdigit()):
        raise RowError(f"bad number for count: {shown(text)} is not a whole number")
    if len(stripped) > MAX_DIGITS:
        raise RowError(f"count {shown(text)} is outside 1..{MAX_COUNT}")
    value = int(text)
    if value < 1:
        raise RowError(f"count must be at least 1, not {value}")
    if value > MAX_COUNT:
        raise RowError(f"count {value} is larger than {MAX_COUNT}")
    return value


# What a timestamp may be made of: Python's ``fromisoformat`` skips some characters (a
# NUL before the offset), which must not make a bad timestamp pass.
_INSTANT_CHARACTERS = re.compile(r"[0-9T :.,+\-Z]+")


def parse_instant(text: str) -> datetime:
    """ISO 8601 or PostgreSQL's text form; a timestamp without an offset is UTC (SPEC 4)."""
    if len(text) < 16 or text[10] not in "T " or not _INSTANT_CHARACTERS.fullmatch(text):
        raise RowError(
            f"bad timestamp {shown(text)}: use ISO 8601 such as 2023-10-20T14:22:01.123Z "
            "or 2023-10-20 14:22:01.123+00"
        )
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise RowError(
            f"bad timestamp {shown(text)}: use ISO 8601 such as 2023-10-20T14:22:01.123Z "
            "or 2023-10-20 14:22:01.123+00"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        raise RowError(f"bad timestamp {shown(text)}: out of range in UTC") from None
    # Analytics answers only for these years: a tap outside them would be stored and
    # counted by no answer (a year 0001 is a device's clock that was never set).
    if not EARLIEST <= value < LATEST:
        raise RowError(
            f"timestamp {shown(text)} is outside the years {EARLIEST.year} to {LATEST.year - 1}"
        )
    return value


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


# A bad row that ran over several lines most likely began with a quote never closed: the
# csv module reads on to the next quote, which may be the end of the file.
UNCLOSED_QUOTE = "a quote on this line is not closed on it"


class _LineSource:
    """The lines a csv reader pulls, remembering those of the row it is reading, and
    lines pushed back to be read again first."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self._pushed: list[str] = []
        self.row: list[str] = []

    def __iter__(self) -> "_LineSource":
        return self

    def __next__(self) -> str:
        text = self._pushed.pop() if self._pushed else next(self._lines)
        self.row.append(text)
        return text

    def take_row(self) -> list[str]:
        row, self.row = self.row, []
        return row

    def push_back(self, texts: list[str]) -> None:
        self._pushed.extend(reversed(texts))


class _CsvRows:
    """The rows of CSV lines, each with the physical line it starts on; a row the csv
    module cannot read comes as its message instead of its fields.

    A row that ran over several lines (a quoted field with line ends) and turns out bad
    is taken for an unclosed quote: ``reread`` then has the lines after its first read
    again as rows of their own, so that one stray quote costs its own line, not every
    line up to the next quote in the file. A field that runs past the csv module's limit
    (128 kB) is the same case. Memory stays bounded by that limit.
    """

    def __init__(self, lines: Iterable[str], first_line: int) -> None:
        self._source = _LineSource(iter(lines))
        self._next_line = first_line
        self._row: list[str] = []

    def __iter__(self) -> Iterator[tuple[int, list[str] | str]]:
        while True:
            try:
                for fields in csv.reader(self._source):
                    start = self._took_row()
                    if fields:
                        yield start, fields
                return
            except csv.Error as error:
                start = self._took_row()
                message = f"unreadable CSV ({error})"
                if self.reread():
                    message = f"{UNCLOSED_QUOTE} ({message})"
                yield start, message

    def _took_row(self) -> int:
        self._row = self._source.take_row()
        start = self._next_line
        self._next_line += len(self._row)
        return start

    def reread(self) -> bool:
        """Whether the last row ran over several lines; if so, the lines after its first
        are the next ones read."""
        if len(self._row) < 2:
            return False
        self._source.push_back(self._row[1:])
        self._next_line -= len(self._row) - 1
        self._row = self._row[:1]
        return True


def _read_rows(
    stream: TextIO,
    columns: tuple[str, ...],
    parse: Callable[[list[str], int], T],
    on_problem: ProblemHandler,
    progress: ProgressHandler | None,
) -> Iterator[T]:
    """Parse each row that has the wanted columns; report the others with their line."""
    reader = _CsvRows(_ProgressReader(stream, progress), 1)
    rows = iter(reader)
    try:
        _, header = next(rows)
    except StopIteration:
        raise _empty_file(columns) from None
    if isinstance(header, str):
        raise FileFormatError(f"line 1: {header}")
    positions = _column_positions(header, columns)
    width = max(positions) + 1
    for line, fields in rows:
        try:
            if isinstance(fields, str):
                raise RowError(fields)
            if len(fields) < width:
                raise RowError(f"expected {len(columns)} fields: {','.join(columns)}")
            yield parse([fields[position].strip() for position in positions], line)
        except RowError as error:
            message = str(error)
            if not isinstance(fields, str) and reader.reread():
                message = f"{UNCLOSED_QUOTE} ({message})"
            on_problem(Problem(line, message))


def _empty_file(columns: tuple[str, ...]) -> FileFormatError:
    return FileFormatError(f"the file is empty; its first line must be {','.join(columns)}")


def _column_positions(header: list[str], columns: tuple[str, ...]) -> list[int]:
    """Where each of ``columns`` is in the header line's fields (a byte-order mark before
    the first is ignored)."""
    names = [name.strip().lstrip("\ufeff") for name in header]
    missing = [column for column in columns if column not in names]
    if missing:
        raise FileFormatError(
            f"line 1: the header must name {', '.join(columns)}; "
            f"missing {', '.join(missing)} (found {','.join(names)})"
        )
    return [names.index(column) for column in columns]


def _tag_row(fields: list[str], line: int) -> TagRow:
    uid, team_id, created_at = fields
    return TagRow(
        uid=parse_id(uid, "tag_uid"),
        team_id=parse_id(team_id, "team_id"),
        created_at=parse_instant(created_at),
        line=line,
    )


def read_tags(
    stream: TextIO, on_problem: ProblemHandler, progress: ProgressHandler | None = None
) -> Iterator[TagRow]:
    return _read_rows(stream, TAG_COLUMNS, _tag_row, on_problem, progress)


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
        # A team is created only for a row that stores its tag: the first row of a tag
        # not in the database yet. A row giving a known tag to another team is reported
        # below, and creates nothing.
        cursor.execute(
            """INSERT INTO teams_team (id, name, time_zone, created)
               SELECT DISTINCT team_id, 'Team ' || team_id, 'UTC', %s FROM (
                   SELECT uid, team_id,
                          row_number() OVER (PARTITION BY uid ORDER BY line) AS nth
                   FROM tag_stage
               ) AS s
               WHERE nth = 1 AND team_id NOT IN (SELECT id FROM teams_team)
                   AND NOT EXISTS (SELECT 1 FROM teams_tag t WHERE t.uid = s.uid)
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


# --- Taps -----------------------------------------------------------------------------------

# A good row in the common form, checked for a whole block of lines by one regular
# expression (C speed): ids of at most 18 digits and counts of at most 9 (so within range,
# no sign, no leading zero), a date that exists in the years 1901 to 2998 (29 February, and
# 1900 and 2999, which an offset may take out of range, take the long way), a time
# with seconds, at most 6 decimals, and an offset within PostgreSQL's +-15:59. Such rows go
# to COPY as they are, and PostgreSQL reads their timestamps. Every other row is parsed field
# by field (``parse_id``, ``parse_count``, ``parse_instant``), as all rows used to be, and
# goes to COPY in the same form, or is reported. The short way accepts no row the long way
# refuses, and reads every row it accepts to the same values (tested).
_FAST_FIELDS = {
    "id": r"[1-9][0-9]{0,17}",
    "tag_uid": r"[1-9][0-9]{0,17}",
    "count": r"[1-9][0-9]{0,8}",
    "created_at": (
        r"(?:190[1-9]|19[1-9][0-9]|2[0-8][0-9]{2}|29[0-8][0-9]|299[0-8])-"
        r"(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
        r"|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
        r"[T ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
        r"(?:Z|[+-](?:0[0-9]|1[0-5])(?::[0-5][0-9])?)?"
    ),
}
# A block of such rows, in the columns' own order and nothing else: numbered and copied.
_FAST_BLOCK = re.compile("(?:" + ",".join(_FAST_FIELDS[column] for column in TAP_COLUMNS) + "\n)*+")
_LINE_END = re.compile(r"\r\n|\n|\r")
# Characters read at a time (a block ends at the last line end among them): about a
# batch's worth, so that memory follows the batch size, within bounds.
MIN_BLOCK_CHARS, MAX_BLOCK_CHARS, CHARS_PER_ROW = 1 << 16, 1 << 20, 40
MAX_LINE_CHARS = 1 << 20
TAP_STAGE_COPY = f"COPY {STAGE_TABLE} ({', '.join(STAGE_COLUMNS)}) FROM STDIN (FORMAT csv)"


@dataclass
class TapBatch:
    """Checked rows of a taps file in file order, each a ``line,id,tag_uid,count,created_at``
    CSV line; the bad rows met among them; the characters of the file read for them."""

    rows: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    chars: int = 0


class _Batches:
    """Collects rows and bad rows, in file order, into batches of ``size`` rows."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.current = TapBatch()
        self.full: list[TapBatch] = []

    def add_rows(self, rows: list[str]) -> None:
        start = 0
        while start < len(rows):
            room = self.size - len(self.current.rows)
            self.current.rows.extend(rows[start : start + room])
            start += room
            if len(self.current.rows) >= self.size:
                self.full.append(self.current)
                self.current = TapBatch()

    def add_fields(
        self, fields: list[str], line: int, positions: list[int], rows: "_CsvRows | None" = None
    ) -> None:
        """Check a row the long way: add it, or report it (a bad row of ``rows`` that
        ran over several lines as an unclosed quote, its other lines to be read again)."""
        try:
            if len(fields) <= max(positions):
                raise RowError(f"expected {len(TAP_COLUMNS)} fields: {','.join(TAP_COLUMNS)}")
            tap_id, tag_uid, count, created_at = (fields[p].strip() for p in positions)
            row = (
                f"{line},{parse_id(tap_id, 'id')},{parse_id(tag_uid, 'tag_uid')},"
                f"{parse_count(count)},{parse_instant(created_at).isoformat()}\n"
            )
        except RowError as error:
            message = str(error)
            if rows is not None and rows.reread():
                message = f"{UNCLOSED_QUOTE} ({message})"
            self.current.problems.append(Problem(line, message))
        else:
            self.add_rows([row])

    def take(self, *, last: bool = False) -> list[TapBatch]:
        """The full batches, and with ``last`` the one being filled too."""
        taken, self.full = self.full, []
        if last and (self.current.rows or self.current.problems or self.current.chars):
            taken.append(self.current)
            self.current = TapBatch()
        return taken


def read_tap_batches(stream: TextIO, batch_size: int) -> Iterator[TapBatch]:
    """Read a taps file into batches of ``batch_size`` checked rows (fewer in the last)."""
    batches = _Batches(batch_size)
    chars = min(max(batch_size * CHARS_PER_ROW, MIN_BLOCK_CHARS), MAX_BLOCK_CHARS)
    blocks = _blocks(stream, chars)
    first = next(blocks, "")
    if not first:
        raise _empty_file(TAP_COLUMNS)
    header_end = match.end() if (match := _LINE_END.search(first)) else len(first)
    header = next(csv.reader([first[:header_end]]), [])
    positions = _column_positions(header, TAP_COLUMNS)
    as_is = [name.strip().lstrip("\ufeff") for name in header] == list(TAP_COLUMNS)
    fast_line = _fast_line(positions)
    batches.current.chars += header_end
    line = 2  # the header is line 1
    rest = itertools.chain([first[header_end:]], blocks)
    for block in rest:
        batches.current.chars += len(block)
        if '"' in block:
            # Quoted fields may hold commas and line ends, across blocks too: the csv module
            # reads the rest of the file row by row, as it always did.
            lines = itertools.chain(io.StringIO(block, newline=""), _lines(rest, batches))
            yield from _read_quoted(lines, line, positions, batches)
            break
        rows = _fast_block(block, line) if as_is else None
        if rows is not None:
            batches.add_rows(rows)
            line += len(rows)
        else:
            for text in io.StringIO(block, newline=""):
                _read_line(text, line, fast_line, positions, batches)
                line += 1
        yield from batches.take()
    yield from batches.take(last=True)


def _blocks(stream: TextIO, chars: int) -> Iterator[str]:
    """The file in blocks of whole lines (the last may lack its line end)."""
    rest = ""
    while data := stream.read(chars):
        data = rest + data
        end = max(data.rfind("\n"), data.rfind("\r"))
        if end == len(data) - 1 and data[end] == "\r":
            # Perhaps the first half of "\r\n": keep it for the next read.
            end = max(data.rfind("\n", 0, end), data.rfind("\r", 0, end))
        if end < 0:
            if len(data) > MAX_LINE_CHARS:
                raise FileFormatError(f"a line longer than {MAX_LINE_CHARS:,} characters")
            rest = data
            continue
        yield data[: end + 1]
        rest = data[end + 1 :]
    if rest:
        yield rest


def _lines(blocks: Iterator[str], batches: _Batches) -> Iterator[str]:
    for block in blocks:
        batches.current.chars += len(block)
        yield from io.StringIO(block, newline="")


def _fast_block(block: str, line: int) -> list[str] | None:
    """The block's rows numbered from ``line`` if every line is a good row in the common
    form, else None."""
    if "\r" in block:
        block = block.replace("\r\n", "\n")
    if block and not block.endswith("\n"):
        block += "\n"
    if _FAST_BLOCK.fullmatch(block) is None:
        return None
    texts = block.split("\n")
    texts.pop()  # after the last line end
    return [f"{number},{text}\n" for number, text in enumerate(texts, line)]


def _fast_line(positions: list[int]) -> re.Pattern[str]:
    """A good line in the common form, with the wanted columns at ``positions``; other
    columns may hold anything but quotes, and more may follow."""
    fields = [r'[^,"\r\n]*'] * (max(positions) + 1)
    for column, position in zip(TAP_COLUMNS, positions, strict=True):
        fields[position] = f"(?P<{column}>{_FAST_FIELDS[column]})"
    return re.compile(",".join(fields) + r'(?:,[^"\r\n]*)?(?:\r\n|\n|\r)?')


def _read_line(
    text: str, line: int, fast_line: re.Pattern[str], positions: list[int], batches: _Batches
) -> None:
    """Check one line of a block without quotes."""
    match = fast_line.fullmatch(text)
    if match is not None:
        batches.add_rows(
            [f"{line},{match['id']},{match['tag_uid']},{match['count']},{match['created_at']}\n"]
        )
    elif text.strip("\r\n"):  # a blank line is no row
        try:
            fields = next(csv.reader([text]))
        except csv.Error as error:
            raise FileFormatError(f"line {line}: unreadable CSV ({error})") from None
        batches.add_fields(fields, line, positions)


def _read_quoted(
    lines: Iterator[str], line: int, positions: list[int], batches: _Batches
) -> Iterator[TapBatch]:
    """Read the rest of the file with the csv module; ``line`` is its first line."""
    rows = _CsvRows(lines, line)
    for start, fields in rows:
        if isinstance(fields, str):
            batches.current.problems.append(Problem(start, fields))
        else:
            batches.add_fields(fields, start, positions, rows)
        yield from batches.take()


def prefetched(items: Iterator[T]) -> Generator[T, None, None]:
    """Iterate over ``items``, computing the next item in a thread while the caller works
    on this one: the loader parses a batch while PostgreSQL stores the one before (the
    thread holds the GIL only while it parses; the caller releases it waiting for the
    database)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="load_taps reader") as pool:
        upcoming = pool.submit(next, items, None)
        while (item := upcoming.result()) is not None:
            upcoming = pool.submit(next, items, None)
            yield item


def start_tap_load() -> None:
    """Prepare this connection for a taps file: the stage, and ``load_ranges``, the seq
    ranges each batch of this file took per team (a few rows per batch), each with the
    lines its numbers went to.

    A stored tap's seq says which staged line it came from (``StoredRange``), so an id the
    file repeats is found by the seq of the tap stored under it: in a range of this file,
    its line is the one the repeat names; outside, it was stored before (a duplicate).
    """
    with connection.cursor() as cursor:
        create_stage(cursor)
        cursor.execute("DROP TABLE IF EXISTS load_ranges")
        cursor.execute(
            """CREATE TEMP TABLE load_ranges (
                batch bigint NOT NULL, team_id bigint NOT NULL, after bigint NOT NULL,
                last bigint NOT NULL, lines text NOT NULL)"""
        )
        if connection.vendor == "postgresql":
            # Read back only for repeated ids: not worth compressing at every batch.
            cursor.execute("ALTER TABLE load_ranges ALTER lines SET STORAGE EXTERNAL")
        cursor.execute("CREATE INDEX load_ranges_team_last ON load_ranges (team_id, last)")


def finish_tap_load() -> None:
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS load_ranges")


# A row of ``load_ranges``: the seq range a batch of this file took for a team, and the
# lines of its numbers (``StoredRange.lines``).
RangeRow = tuple[int, int, int, int, str]
RANGE_COLUMNS = ("batch", "team_id", "after", "last", "lines")


@dataclass
class StoredBatch:
    """What storing a batch's rows did: the counts, the bad rows the database found, and
    the seq ranges it took (``load_ranges`` rows)."""

    result: StoreResult
    problems: list[Problem]
    ranges: list[RangeRow]


def store_tap_batch(
    rows: list[str],
    number: int,
    *,
    file_has_stored: bool,
    earlier_ranges: list[RangeRow] | None = None,
) -> StoredBatch:
    """Stage rows of the file's batch ``number``, store them, and find the bad rows the
    database sees: unknown tags, taps older than their tag's owner, ids repeated in the
    file. ``earlier_ranges`` are ranges of this file stored on other connections, added
    to this connection's ``load_ranges`` first.

    Needs ``start_tap_load`` first and a transaction around it.
    """
    with connection.cursor() as cursor:
        if earlier_ranges:
            copy_rows(cursor, "load_ranges", RANGE_COLUMNS, earlier_ranges)
        _stage_tap_rows(cursor, rows)
        result = store_staged_taps(live_limit=LOADER_INLINE_LIMIT, with_lines=True)
        ranges = [_range_row(number, stored) for stored in result.ranges]
        copy_rows(cursor, "load_ranges", RANGE_COLUMNS, ranges)
        problems = []
        if result.accepted + result.duplicates < len(rows):
            problems += _taps_not_owned(cursor)
        if result.duplicates and (result.accepted or file_has_stored):
            # Only ids this file has stored can be repeats; a rerun skips this.
            repeats = _repeated_ids(cursor, number)
            result.duplicates -= len(repeats)
            problems += repeats
    return StoredBatch(result, problems, ranges)


def _store_in_transaction(
    rows: list[str], number: int, file_has_stored: bool, earlier_ranges: list[RangeRow]
) -> StoredBatch:
    with transaction.atomic():
        return store_tap_batch(
            rows, number, file_has_stored=file_has_stored, earlier_ranges=earlier_ranges
        )


def default_lanes() -> int:
    """Connections that store a taps file's batches at once, unless told: two on
    PostgreSQL (one backend storing a batch keeps one core busy; docs/PERFORMANCE.md),
    one on SQLite, which has a single writer."""
    return 2 if connection.vendor == "postgresql" else 1


class TapLanes:
    """Stores each batch of a taps file on ``count`` database connections at once, each
    in a thread of its own, and waits for all of them before the next batch.

    A batch's taps are split by their tag's team, every team to one connection, so the
    connections never wait for each other's row locks (a team's counter, rollup and
    day-level rows) and a team's taps keep their line order in ``seq``. The teams go to
    the connection with the fewest rows so far, largest team first. Each connection
    keeps the file's seq ranges in its own ``load_ranges``; the ranges stored on the
    others are added before its next batch, so an id repeated in the file is named with
    its first line whichever connection stored it.
    """

    def __init__(self, count: int) -> None:
        self._threads = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"load_taps lane {n}")
            for n in range(count)
        ]
        self._unseen: list[list[RangeRow]] = [[] for _ in range(count)]
        self._interrupted = False
        self._team_of: dict[str, int] = {}
        try:
            self._on_each(start_tap_load)
        except BaseException:
            self._shutdown()
            raise

    def store(self, rows: list[str], number: int, file_has_stored: bool) -> list[StoredBatch]:
        if self._interrupted:
            raise KeyboardInterrupt
        futures = {
            lane: self._threads[lane].submit(
                _store_in_transaction, part, number, file_has_stored, self._unseen[lane]
            )
            for lane, part in enumerate(self._split(rows))
            if part
        }
        try:
            wait(futures.values())
        except KeyboardInterrupt:
            # The connections commit their parts whatever happens here: finish the batch
            # and report it like any other, and stop before the next one.
            wait(futures.values())
            self._interrupted = True
        stored = {lane: future.result() for lane, future in futures.items()}
        for lane in stored:
            self._unseen[lane] = []
        for lane, batch in stored.items():
            for other, unseen in enumerate(self._unseen):
                if other != lane:
                    unseen.extend(batch.ranges)
        return list(stored.values())

    def close(self) -> None:
        try:
            self._on_each(_close_lane)
        finally:
            self._shutdown()

    def _split(self, rows: list[str]) -> list[list[str]]:
        """Each connection's rows: whole teams, in team order and each team's in line
        order, the order in which the store statement numbers them, so that its sort
        meets rows already sorted (PostgreSQL's sort checks for that first)."""
        uids = [row.split(",", 3)[2] for row in rows]
        team_of = self._teams_of(set(uids))
        by_team: dict[int | None, list[str]] = defaultdict(list)
        for row, uid in zip(rows, uids, strict=True):
            by_team[team_of.get(uid)].append(row)
        loads = [0] * len(self._threads)
        lane_of: dict[int | None, int] = {}
        # An unknown tag (None) has no team: its rows go anywhere, to be reported.
        for team, team_rows in sorted(by_team.items(), key=lambda item: -len(item[1])):
            lane = loads.index(min(loads))
            lane_of[team] = lane
            loads[lane] += len(team_rows)
        parts: list[list[str]] = [[] for _ in self._threads]
        for team in sorted(by_team, key=lambda team: (team is None, team or 0)):
            parts[lane_of[team]].extend(by_team[team])
        return parts

    def _teams_of(self, uids: set[str]) -> dict[str, int]:
        """The team of each known tag among ``uids``, read once per load and tag: looking
        up every batch's 20,000 tags took the database 25 ms a batch (bench-1M), with
        the connections idle. A tag moved during the load may send its rows to another
        connection than its new team's others: they then wait for each other's locks,
        and the taps are stored as the database says all the same. At most
        ``MAX_TAGS_REMEMBERED`` are kept; past that, the rest are read per batch."""
        missing = uids - self._team_of.keys()
        if not missing:
            return self._team_of
        found = _teams_of_tags(missing)
        room = MAX_TAGS_REMEMBERED - len(self._team_of)
        if len(found) <= room:
            self._team_of.update(found)
            return self._team_of
        self._team_of.update(itertools.islice(found.items(), max(room, 0)))
        return {**self._team_of, **found}

    def _on_each(self, function: Callable[[], None]) -> None:
        futures = [thread.submit(function) for thread in self._threads]
        wait(futures)
        for future in futures:
            future.result()

    def _shutdown(self) -> None:
        for thread in self._threads:
            thread.shutdown()


# About 100 bytes each: 20 MB at most, within the loader's memory bound.
MAX_TAGS_REMEMBERED = 200_000


def _teams_of_tags(uids: set[str]) -> dict[str, int]:
    """The current team of each known tag among ``uids`` (as the rows spell them)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT uid, team_id FROM teams_tag WHERE uid = ANY(%s)", [[int(u) for u in uids]]
        )
        return {str(uid): team_id for uid, team_id in cursor.fetchall()}


def _store_here(rows: list[str], number: int, file_has_stored: bool) -> list[StoredBatch]:
    return [_store_in_transaction(rows, number, file_has_stored, [])]


def _close_lane() -> None:
    finish_tap_load()
    connection.close()


def _stage_tap_rows(cursor: CursorWrapper, rows: list[str]) -> None:
    if connection.vendor == "postgresql":
        # For the loader's transactions only: a crash loses at most the last batches,
        # which a rerun stores again (docs/DESIGN.md); sorts and hashes of a batch stay in
        # memory; JIT compiling does not pay for statements this short.
        cursor.execute(
            "SELECT set_config('synchronous_commit', 'off', true), "
            "set_config('work_mem', '64MB', true), set_config('jit', 'off', true)"
        )
        # TRUNCATE, not DELETE: under --strict every batch runs in one transaction, and
        # rows it deleted would stay in the table until its end.
        cursor.execute(f"TRUNCATE {STAGE_TABLE}")
        with cursor.cursor.copy(TAP_STAGE_COPY) as copy:
            copy.write("".join(rows))
        return
    cursor.execute(f"DELETE FROM {STAGE_TABLE}")
    copy_rows(cursor, STAGE_TABLE, STAGE_COLUMNS, map(_sqlite_stage_row, rows))


def _sqlite_stage_row(row: str) -> tuple[int, int, int, int, datetime | str]:
    line, tap_id, tag_uid, count, created_at = row.rstrip("\n").split(",")
    at = db_instant(parse_instant(created_at))
    return int(line), int(tap_id), int(tag_uid), int(count), at


def _range_row(batch: int, stored: StoredRange) -> RangeRow:
    return batch, stored.team_id, stored.after, stored.last, stored.lines


def _taps_not_owned(cursor: CursorWrapper) -> list[Problem]:
    cursor.execute(
        f"""SELECT s.line, s.tag_uid, t.team_id, t.owner_since
            FROM {STAGE_TABLE} s LEFT JOIN teams_tag t ON t.uid = s.tag_uid
            WHERE t.uid IS NULL OR s.created_at < t.owner_since""",
        [],
    )
    return [
        Problem(line, f"unknown tag {uid}: it is not in the tags file or the database")
        if team_id is None
        else Problem(
            line,
            f"tap predates its tag's owner: tag {uid} belongs to team {team_id} only "
            f"since {_as_text(since)}",
        )
        for line, uid, team_id, since in cursor.fetchall()
    ]


def _repeated_ids(cursor: CursorWrapper, batch: int) -> list[Problem]:
    """Staged taps not stored because this file stored their id first, with that line.

    A staged tap was stored iff the tap under its id has the tap's own number: the
    team's range in this batch plus its rank among the team's staged taps. If not, and
    that seq falls in a range of this file, the range's lines give the line that stored
    it; outside every range, the id was stored before the file.
    """
    if connection.vendor == "postgresql":
        line_of_seq = "split_part(r.lines, ',', (a.seq - r.after)::integer)::bigint"
    else:
        line_of_seq = "json_extract(r.lines, '$[' || (a.seq - r.after - 1) || ']')"
    cursor.execute(
        f"""SELECT line, tap_id, first_line FROM (
                SELECT n.line, n.tap_id, (
                    SELECT {line_of_seq} FROM load_ranges r
                    WHERE r.team_id = a.team_id AND r.last >= a.seq AND r.after < a.seq
                    ORDER BY r.last LIMIT 1
                ) AS first_line
                FROM (
                    SELECT s.line, s.tap_id, t.team_id,
                           row_number() OVER (PARTITION BY t.team_id ORDER BY s.line) AS nth
                    FROM {STAGE_TABLE} s {OWNED_JOIN}
                ) AS n
                JOIN load_ranges cur ON cur.batch = %s AND cur.team_id = n.team_id
                JOIN analytics_tap a ON a.team_id = n.team_id AND a.tap_id = n.tap_id
                WHERE a.seq <> cur.after + n.nth
            ) AS found
            WHERE first_line IS NOT NULL""",
        [batch],
    )
    return [
        Problem(line, f"duplicate id {tap_id}: line {first_line} has the same id")
        for line, tap_id, first_line in cursor.fetchall()
    ]


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
    lanes: int = 1,
) -> LoadReport:
    """Load a tags file, then a taps file, reporting bad rows in line order. With
    ``strict`` everything runs in one transaction that is rolled back if any row is bad
    (``StrictLoadFailed``). On PostgreSQL, outside a transaction, ``lanes`` connections
    store the taps file's batches (``TapLanes``); otherwise this connection does."""
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

    def load_tags(path: Path) -> None:
        with open_csv(path) as stream:
            for batch in batched(
                read_tags(stream, pending.append, open_progress(path)), batch_size
            ):
                with transaction.atomic():
                    problems = store_tag_batch(batch, report)
                flush(problems)
        flush([])

    def load_taps(path: Path, store: StoreRows) -> None:
        advance = open_progress(path)
        with (
            open_csv(path) as stream,
            closing(prefetched(read_tap_batches(stream, batch_size))) as batches,
        ):
            for batch in batches:
                problems = []
                if batch.rows:
                    report.tap_batches += 1
                    for stored in store(batch.rows, report.tap_batches, report.taps.accepted > 0):
                        report.taps.add(stored.result)
                        problems += stored.problems
                flush(batch.problems + problems)
                if advance is not None:
                    advance(batch.chars)
                if on_batch is not None and batch.rows:
                    on_batch(report)

    def run() -> None:
        if tags_path is not None:
            load_tags(tags_path)
        if taps_path is not None:
            with indexes_after_first_load():
                load_taps_file(taps_path)
        if strict and report.bad_rows:
            raise StrictLoadFailed(report)

    def load_taps_file(path: Path) -> None:
        if lanes > 1 and connection.vendor == "postgresql" and not connection.in_atomic_block:
            tap_lanes = TapLanes(lanes)
            try:
                load_taps(path, tap_lanes.store)
            finally:
                tap_lanes.close()
        else:
            start_tap_load()
            try:
                load_taps(path, _store_here)
            finally:
                finish_tap_load()

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

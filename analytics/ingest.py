"""The one write path for taps: every tap enters the system through ``store_staged_taps``.

Callers put rows in the connection's staging table (``stage_taps``: COPY on PostgreSQL)
and call ``store_staged_taps`` in the same transaction. It inserts the raw taps under their
tag's current team, skips ids the team already has, adds exactly the inserted taps to the
team rollup and rebuilds the day levels of the days they fall on, all in that transaction,
so the rollups never disagree with the raw taps and a duplicate never counts twice (SPEC 4,
11).
"""

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import psycopg
from django.db import IntegrityError, connection, transaction
from django.db.backends.utils import CursorWrapper

from analytics import live
from analytics.day_additions import NEW_TAPS_SQL, NewTaps, add_to_day_levels
from analytics.live import LIVE_INLINE_LIMIT, StoredRange
from analytics.rollup import bucket_sql
from teams.models import Tag

STAGE_TABLE = "tap_stage"
STAGE_COLUMNS = ("line", "tap_id", "tag_uid", "count", "created_at")


@dataclass(slots=True)
class TapRow:
    """A tap to store. ``line`` says where it came from (file line or batch position).

    Not frozen: the ingest API makes 1000 per request, and a frozen dataclass's
    ``__init__`` (``object.__setattr__`` per field) took three times as long.
    """

    tap_id: int
    tag_uid: int
    count: int
    at: datetime
    line: int = 0


@dataclass
class StoreResult:
    accepted: int = 0
    duplicates: int = 0
    # What one call stored, per team; ``add`` keeps only the counts.
    ranges: tuple[StoredRange, ...] = field(default=(), compare=False, repr=False)

    def add(self, other: "StoreResult") -> None:
        self.accepted += other.accepted
        self.duplicates += other.duplicates


def copy_rows(
    cursor: CursorWrapper, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """Append rows to a table: COPY on PostgreSQL, ``executemany`` in chunks elsewhere."""
    count = 0
    if connection.vendor == "postgresql":
        with cursor.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
        return count
    placeholders = ", ".join(["%s"] * len(columns))
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"
    batch: list[Sequence[Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == 1000:
            cursor.executemany(sql, batch)
            count += len(batch)
            batch.clear()
    if batch:
        cursor.executemany(sql, batch)
        count += len(batch)
    return count


def db_instant(at: datetime) -> datetime | str:
    """An aware datetime as this database's raw SQL wants it."""
    if connection.vendor == "postgresql":
        return at
    text = connection.ops.adapt_datetimefield_value(at)
    assert text is not None
    return text


def create_stage(cursor: CursorWrapper) -> None:
    """Create this connection's staging table unless it exists.

    On PostgreSQL it is emptied at every commit (``ON COMMIT DELETE ROWS``, a truncation):
    a table emptied by ``DELETE`` is never vacuumed (autovacuum skips temporary tables), so
    a pooled connection's stage grew by every batch it had ever staged, and every store
    scanned all of it (200 batches of 1,000 rows: 13 MB).
    """
    on_commit = " ON COMMIT DELETE ROWS" if connection.vendor == "postgresql" else ""
    cursor.execute(
        f"""CREATE TEMP TABLE IF NOT EXISTS {STAGE_TABLE} (
            line bigint NOT NULL, tap_id bigint NOT NULL, tag_uid bigint NOT NULL,
            count integer NOT NULL, created_at {instant_type()} NOT NULL){on_commit}"""
    )


def stage_taps(rows: Iterable[TapRow]) -> int:
    """Replace the content of this connection's staging table with ``rows``; must run in
    the transaction that stores them.

    A row's stage ``line`` is its position in ``rows``: ``seq`` follows that order, and of
    an id given twice the first wins.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("stage_taps must run inside transaction.atomic()")
    with connection.cursor() as cursor:
        create_stage(cursor)
        cursor.execute(f"DELETE FROM {STAGE_TABLE}")
        if connection.vendor == "postgresql":
            return _copy_to_stage(cursor, rows)
        values = ((n, r.tap_id, r.tag_uid, r.count, db_instant(r.at)) for n, r in enumerate(rows))
        return copy_rows(cursor, STAGE_TABLE, STAGE_COLUMNS, values)


def _copy_to_stage(cursor: CursorWrapper, rows: Iterable[TapRow]) -> int:
    """COPY the rows as one text in COPY's text format (numbers and ISO instants need no
    escaping): psycopg's ``write_row`` adapted every value in Python, a fifth of an ingest
    request's CPU. A batch's taps mostly share their instant (``now``): each distinct
    instant is written out once."""
    instants: dict[datetime, str] = {}
    lines = []
    for n, row in enumerate(rows):
        at = instants.get(row.at)
        if at is None:
            at = instants[row.at] = row.at.isoformat()
        lines.append(f"{n}\t{row.tap_id}\t{row.tag_uid}\t{row.count}\t{at}\n")
    with cursor.cursor.copy(f"COPY {STAGE_TABLE} ({', '.join(STAGE_COLUMNS)}) FROM STDIN") as copy:
        copy.write("".join(lines))
    return len(lines)


def instant_type() -> str:
    """The column type of an instant in a temporary table."""
    return "timestamptz" if connection.vendor == "postgresql" else "datetime"


# A staged tap is stored under the team owning its tag now, and only if that team owned the
# tag at the tap's instant (SPEC 1: no team sees taps from before it owned the tag).
OWNED_JOIN = (
    "JOIN teams_tag t ON t.uid = s.tag_uid "
    "AND (t.owner_since IS NULL OR s.created_at >= t.owner_since)"
)


def store_staged_taps(
    *,
    live_limit: int = LIVE_INLINE_LIMIT,
    staged: Sequence[TapRow] | None = None,
    with_lines: bool = False,
) -> StoreResult:
    """Store the staged taps and add them to the rollup; must run inside a transaction.

    The stage's ``line`` orders its rows; lines are distinct. Ids the tag's team already has
    are skipped and counted as duplicates, as are repeats of an id within the stage (the
    lowest line wins). Staged taps whose tag is unknown, or which predate their tag's
    current owner, are neither stored nor counted: callers report those themselves.

    Every stored tap gets a ``seq`` from its team's counter (``TapSequence``): the team's
    k-th staged tap in line order gets k past the counter, and the counter moves past the
    team's staged taps (``StoreResult.ranges``; ``with_lines`` adds each range's lines).
    Numbering only the team's own taps keeps other teams' taps from showing as gaps in
    its seq (SPEC 1); an id that proves a duplicate leaves its number unused. The taps
    are pushed to their teams' websockets
    once the transaction commits, never before; a team with more than ``live_limit`` new
    taps is announced without them (``analytics.live``). ``staged``, the rows as
    ``stage_taps`` staged them, spares reading the taps back for that push when one team
    stored every one of them.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("store_staged_taps must run inside transaction.atomic()")
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # A temporary table has no statistics until analyzed: the planner took every
            # stage for 1,270 rows and hashed all the tags to join a 1000-tap batch with
            # them, three times a batch (4 ms each at 20,000 tags); analyzing the stage
            # (1 ms) lets it look the batch's tags up by index instead.
            cursor.execute(f"ANALYZE {STAGE_TABLE}")
            teams, new_taps = _store_postgresql(cursor, with_lines)
        else:
            teams = _store_sqlite(cursor, with_lines)
            new_taps = _new_taps_sqlite(cursor)
        ranges = tuple(stored for stored, _ in teams)
        accepted = sum(stored.accepted for stored in ranges)
        add_to_day_levels(new_taps)
    if accepted:
        live.publish_on_commit(
            [stored for stored in ranges if stored.accepted],
            live_limit,
            partial(_known_taps, teams, staged, live_limit),
        )
    staged_count = sum(size for _, size in teams)
    return StoreResult(accepted=accepted, duplicates=staged_count - accepted, ranges=ranges)


def _known_taps(
    teams: list["TeamStore"], staged: Sequence[TapRow] | None, live_limit: int
) -> live.KnownTaps | None:
    """The live messages of ``staged`` if one team stored all of them: then the tap at
    stage line n got seq ``after + 1 + n`` (lines start at 0), and reading the batch back
    (a sixth of an ingest request at bench-10M) is not needed."""
    if staged is None or len(teams) != 1:
        return None
    stored, size = teams[0]
    if not stored.accepted == size == len(staged) <= live_limit or stored.first_line != 0:
        return None
    first_seq = stored.after + 1
    instants: dict[datetime, str] = {}
    messages = []
    for line, row in enumerate(staged):
        at = instants.get(row.at)
        if at is None:
            at = instants[row.at] = live.instant_text(row.at)
        messages.append(
            live.tap_message_at(row.tap_id, row.tag_uid, row.count, at, first_seq + line)
        )
    return {stored.team_id: messages}


def _new_taps_sqlite(cursor: CursorWrapper) -> NewTaps:
    """The taps just stored on SQLite (``tap_stage_new``), each with the minute since the
    epoch it falls in. ``strftime`` rounds fractions of a second (59.999999 is the next
    minute's), so they are cut off first; integer division truncates, so a negative
    minute is moved down to the floor."""
    seconds = "CAST(strftime('%%s', substr(created_at, 1, 19)) AS INTEGER)"
    cursor.execute(
        f"""SELECT team_id, tag_id, {seconds} / 60 - ({seconds} %% 60 < 0), count
            FROM tap_stage_new""",
        [],
    )
    return NewTaps.of_rows(cursor.fetchall())


# Each team's stored range, and how many of the team's taps were staged.
TeamStore = tuple[StoredRange, int]


def _store_postgresql(cursor: CursorWrapper, with_lines: bool) -> tuple[list[TeamStore], NewTaps]:
    """Store the stage; each team's range and staged size, and the taps stored.

    The taps are first inserted as plain rows, under a savepoint: an id already stored,
    or given twice in the stage, then fails the statement on the unique index, and the
    stage is stored again skipping such ids (``ON CONFLICT DO NOTHING``). Skipping costs
    every row a speculative insertion, which a plain insert does not pay (a third more
    time per row in psql), and a stage with a stored id fails at its first such row, in
    line order: a file loaded again fails on its first row.
    """
    # As text: the loader only hands the lines back to PostgreSQL (``load_ranges``), and
    # parsing them as an array there took longer than storing the batch's tag rollup.
    lines = "string_agg(line::text, ',' ORDER BY line)" if with_lines else "''"
    bucket = bucket_sql("created_at")
    try:
        with transaction.atomic():
            cursor.execute(_STORE_SQL.format(bucket=bucket, on_conflict="", lines=lines))
    except IntegrityError as error:
        if not isinstance(error.__cause__, psycopg.errors.UniqueViolation):
            raise
        cursor.execute(
            _STORE_SQL.format(
                bucket=bucket, on_conflict="ON CONFLICT (team_id, tap_id) DO NOTHING", lines=lines
            )
        )
    rows = cursor.fetchall()
    teams = [(StoredRange(row[0], row[1], row[2], row[3], row[4], row[7]), row[5]) for row in rows]
    return teams, NewTaps.of_packed((row[0], row[6]) for row in rows if row[6] is not None)


# One statement. ``bumped`` moves each team's counter past the team's staged taps,
# locking the counter row until commit (teams in id order, so two writers cannot
# deadlock): the team's writers thus commit in seq order. The rollup adds up exactly the
# rows the INSERT reports as new, and with ``ON CONFLICT`` a concurrent writer of the
# same id waits on the unique index, then skips it; its number is left unused. Rows go in
# in the order they are numbered, each team's in line order, so of an id repeated in the
# stage the first wins.
_STORE_SQL = f"""
        WITH staged AS (
            SELECT t.team_id, s.line, s.tap_id, s.tag_uid, s.count, s.created_at,
                   row_number() OVER (PARTITION BY t.team_id ORDER BY s.line) AS nth
            FROM {STAGE_TABLE} s {OWNED_JOIN}
        ), sizes AS (
            SELECT team_id, min(line) AS first_line, count(*) AS size, {{lines}} AS lines
            FROM staged GROUP BY team_id
        ), bumped AS (
            INSERT INTO analytics_tapsequence AS c (team_id, last_seq)
            SELECT team_id, size FROM sizes ORDER BY team_id
            ON CONFLICT (team_id) DO UPDATE SET last_seq = c.last_seq + EXCLUDED.last_seq
            RETURNING team_id, last_seq
        ), new AS (
            INSERT INTO analytics_tap (team_id, tap_id, tag_id, count, created_at, seq)
            SELECT s.team_id, s.tap_id, s.tag_uid, s.count, s.created_at,
                   b.last_seq - z.size + s.nth
            FROM staged s JOIN bumped b USING (team_id) JOIN sizes z USING (team_id)
            ORDER BY s.team_id, s.nth
            {{on_conflict}}
            RETURNING team_id, tag_id, count, created_at, {{bucket}} AS bucket
        ), team_sums AS (
            INSERT INTO analytics_teamrollup AS r (team_id, bucket, taps)
            SELECT team_id, bucket, sum(count) FROM new
            GROUP BY team_id, bucket ORDER BY team_id, bucket
            ON CONFLICT (team_id, bucket) DO UPDATE SET taps = r.taps + EXCLUDED.taps
        )
        SELECT b.team_id, b.last_seq - z.size, b.last_seq, coalesce(n.accepted, 0),
               z.first_line, z.size, n.taps, z.lines
        FROM bumped b JOIN sizes z USING (team_id)
        LEFT JOIN (
            SELECT team_id, count(*) AS accepted, {NEW_TAPS_SQL} AS taps
            FROM new GROUP BY team_id
        ) n USING (team_id)
        ORDER BY b.team_id
"""


def _store_sqlite(cursor: CursorWrapper, with_lines: bool) -> list[TeamStore]:
    # SQLite has no data-modifying CTEs; the transaction holds the database's write lock
    # (transaction_mode IMMEDIATE), so these steps cannot interleave with another writer,
    # and taps commit in seq order without locking the counter rows. The rows to insert
    # (the first line of each new id) are picked once into ``tap_stage_new``, and the taps
    # and the rollup are written from it.
    cursor.execute(
        f"""SELECT t.team_id, coalesce(c.last_seq, 0), min(s.line), count(*)
            FROM {STAGE_TABLE} s {OWNED_JOIN}
            LEFT JOIN analytics_tapsequence c ON c.team_id = t.team_id
            GROUP BY t.team_id, c.last_seq ORDER BY t.team_id""",
        [],
    )
    teams = cursor.fetchall()
    cursor.execute(
        """CREATE TEMP TABLE IF NOT EXISTS tap_stage_new (
            team_id bigint NOT NULL, tap_id bigint NOT NULL, tag_id bigint NOT NULL,
            count integer NOT NULL, created_at datetime NOT NULL, seq bigint NOT NULL)"""
    )
    cursor.execute("DELETE FROM tap_stage_new")
    cursor.execute(
        f"""INSERT INTO tap_stage_new (team_id, tap_id, tag_id, count, created_at, seq)
            SELECT team_id, tap_id, tag_uid, count, created_at, seq FROM (
                SELECT t.team_id, s.tap_id, s.tag_uid, s.count, s.created_at,
                    coalesce(c.last_seq, 0)
                        + row_number() OVER (PARTITION BY t.team_id ORDER BY s.line) AS seq,
                    row_number() OVER (PARTITION BY t.team_id, s.tap_id ORDER BY s.line) AS nth
                FROM {STAGE_TABLE} s {OWNED_JOIN}
                LEFT JOIN analytics_tapsequence c ON c.team_id = t.team_id
            ) AS ranked
            WHERE nth = 1 AND NOT EXISTS (
                SELECT 1 FROM analytics_tap a
                WHERE a.team_id = ranked.team_id AND a.tap_id = ranked.tap_id)""",
        [],
    )
    cursor.execute(
        """INSERT INTO analytics_tap (team_id, tap_id, tag_id, count, created_at, seq)
           SELECT team_id, tap_id, tag_id, count, created_at, seq FROM tap_stage_new""",
        [],
    )
    cursor.executemany(
        """INSERT INTO analytics_tapsequence (team_id, last_seq) VALUES (%s, %s)
           ON CONFLICT (team_id) DO UPDATE SET last_seq = excluded.last_seq""",
        [(team_id, last + size) for team_id, last, _, size in teams],
    )
    bucket = bucket_sql("created_at")
    cursor.execute(
        f"""INSERT INTO analytics_teamrollup (team_id, bucket, taps)
            SELECT team_id, {bucket}, sum(count) FROM tap_stage_new WHERE true GROUP BY 1, 2
            ON CONFLICT (team_id, bucket) DO UPDATE SET taps = taps + excluded.taps""",
        [],
    )
    cursor.execute("SELECT team_id, count(*) FROM tap_stage_new GROUP BY team_id", [])
    accepted = dict(cursor.fetchall())
    lines: dict[int, list[int]] = defaultdict(list)
    if with_lines:  # as JSON text, which SQLite reads back with json_extract
        cursor.execute(
            f"SELECT t.team_id, s.line FROM {STAGE_TABLE} s {OWNED_JOIN} ORDER BY 1, 2", []
        )
        for team_id, line in cursor.fetchall():
            lines[team_id].append(line)
    return [
        (
            StoredRange(
                team_id,
                last,
                last + size,
                accepted.get(team_id, 0),
                first_line,
                json.dumps(lines[team_id]) if with_lines else "",
            ),
            size,
        )
        for team_id, last, first_line, size in teams
    ]


def store_taps(rows: Sequence[TapRow]) -> StoreResult:
    """Store a batch of taps in one transaction (the ingest API's path)."""
    with transaction.atomic():
        stage_taps(rows)
        return store_staged_taps()


class TapsRefused(Exception):
    """A batch the ingest API refuses whole; ``problems`` maps item positions to field
    messages, safe to show (they never say whether another team's tag exists)."""

    def __init__(self, problems: dict[int, dict[str, list[str]]]) -> None:
        super().__init__(f"{len(problems)} refused items")
        self.problems = problems


def ingest_taps(team_id: int, rows: Sequence[TapRow]) -> StoreResult:
    """Store a team's batch from the ingest API, all or nothing (SPEC 6.3).

    Every tag must belong to the team, and every tap must be no older than the team's
    ownership of its tag; otherwise ``TapsRefused`` names the items and nothing is stored.
    ``line`` of each row is its position in the batch.
    """
    uids = sorted({row.tag_uid for row in rows})
    with transaction.atomic():
        owned = owned_tags(team_id, uids, lock=True)
        problems: dict[int, dict[str, list[str]]] = {}
        for row in rows:
            refusal = tag_refusal(row.tag_uid, row.at, owned)
            if refusal:
                problems[row.line] = refusal
        if problems:
            raise TapsRefused(problems)
        stage_taps(rows)
        return store_staged_taps(staged=rows)


def tag_refusal(
    uid: int, at: datetime | None, owned: dict[int, datetime | None]
) -> dict[str, list[str]] | None:
    """Why a tap on tag ``uid`` at ``at`` is not the team's to store, given the team's
    tags and when it got each (``owned``); None if it is. Without ``at``, only the tag is
    checked."""
    if uid not in owned:
        # Unknown and foreign tags get the same answer: no team learns whether another
        # team's tag exists (SPEC 1).
        return {"tag": [f"Tag {uid} is not a tag of your team."]}
    since = owned[uid]
    if at is not None and since is not None and at < since:
        return {
            "at": [
                f"This tap predates your team's ownership of tag {uid} "
                f"(since {since.isoformat()}); taps before that are not yours to store."
            ]
        }
    return None


def owned_tags(
    team_id: int, uids: Sequence[int], *, lock: bool = False
) -> dict[int, datetime | None]:
    """The team's tags among ``uids`` with their ``owner_since``. With ``lock``, locked
    until commit so that a move in the admin cannot slip between this check and the
    insert (on SQLite the transaction's write lock does that); without, as read now, for
    naming problems rather than storing."""
    if not uids:
        return {}
    tags = Tag.objects.filter(team_id=team_id, uid__in=uids).order_by("uid")
    if lock and connection.vendor == "postgresql":
        # FOR SHARE: moves wait for this transaction, other ingests of the tags do not.
        # Django's select_for_update knows only FOR UPDATE and FOR NO KEY UPDATE.
        sql, params = tags.values_list("uid", "owner_since").query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(f"{sql} FOR SHARE", params)
            return dict(cursor.fetchall())
    return dict(tags.values_list("uid", "owner_since"))

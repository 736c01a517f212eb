"""Issuing, revoking and resolving team API keys (SPEC 5).

A key is shown once, when ``create_key`` returns it; only its SHA-512 hash is stored.
Lookups read the database on every request, so a revocation or an expiry takes effect on
the very next request in every worker.
"""

import re
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, cast

import psycopg
from django.apps import apps
from django.db import connection, models, transaction
from django.utils import timezone

from taps_project import sql
from teams.models import Scope, Team, TeamAPIKey


class KeyRejected(Exception):
    """The presented key cannot be used; the message is safe to show (it never holds the key)."""


@dataclass(frozen=True)
class IssuedKey:
    api_key: TeamAPIKey
    plaintext: str


def create_key(
    team: Team,
    *,
    name: str = "default",
    scope: str = Scope.READ,
    expires_at: datetime | None = None,
    revoke_same_name: bool = False,
) -> IssuedKey:
    """Issue a key for a team; the plaintext is in the result and nowhere else.

    ``revoke_same_name`` first revokes the team's other keys of that name (so the quick
    start does not pile up demo keys).
    """
    if scope not in Scope.values:
        raise ValueError(f"scope must be one of {', '.join(Scope.values)}, not {scope!r}")
    with transaction.atomic():
        if revoke_same_name:
            TeamAPIKey.objects.filter(team=team, name=name, revoked=False).update(revoked=True)
        api_key, plaintext = TeamAPIKey.objects.create_key(
            team=team, name=name, scope=scope, expiry_date=expires_at
        )
    return IssuedKey(cast(TeamAPIKey, api_key), plaintext)


def revoke_key(prefix: str) -> TeamAPIKey:
    """Revoke the key with this prefix (the part before the dot). Revoking twice is fine."""
    api_key = TeamAPIKey.objects.get(prefix=prefix)
    if not api_key.revoked:
        api_key.revoked = True
        api_key.save(update_fields=["revoked"])
    return api_key


@dataclass(frozen=True)
class ResolvedKey:
    """A usable key with its team, and what the same statement read about the team."""

    key: TeamAPIKey
    # When the lookup started: anything the team stored before it has moved
    # ``team_write_version`` (analytics answers are cached under that version).
    read_at: datetime
    team_write_version: int


def resolve_key(plaintext: str, *, now: datetime | None = None) -> TeamAPIKey:
    """The key matching ``plaintext``, with its team, or ``KeyRejected`` saying why not."""
    return read_key(plaintext, now=now).key


_KEY_SHAPE = re.compile(r"[A-Za-z0-9]{1,100}\.[A-Za-z0-9]{1,99}")


def read_key(plaintext: str, *, now: datetime | None = None) -> ResolvedKey:
    """``resolve_key``, with the team's write version from the same statement.

    Revoked and expired are told apart only once the whole key has matched its hash, so a
    guessed prefix learns nothing.
    """
    read_at = now or timezone.now()
    # Keys are issued as letters and digits around one dot; anything else (a NUL, which
    # PostgreSQL cannot even compare) is refused before the database sees it.
    if not _KEY_SHAPE.fullmatch(plaintext):
        raise KeyRejected("Invalid API key.")
    prefix = plaintext.partition(".")[0]
    found = _key_with_team(prefix)
    if found is None:
        raise KeyRejected("Invalid API key.")
    api_key, write_version = found
    if not TeamAPIKey.objects.key_generator.verify(plaintext, api_key.hashed_key):
        raise KeyRejected("Invalid API key.")
    if api_key.revoked:
        raise KeyRejected("This API key has been revoked; ask your operator for a new one.")
    if api_key.expiry_date is not None and api_key.expiry_date <= read_at:
        raise KeyRejected(
            f"This API key expired at {api_key.expiry_date.isoformat()}; "
            "ask your operator for a new one."
        )
    return ResolvedKey(api_key, read_at, write_version)


@cache
def _key_lookup_sql() -> str:
    """The key, its team and the team's write version in one statement, composed once:
    the ORM spent about a millisecond compiling the same query on every request, and the
    version was a round trip of its own on every analytics request."""
    # Looked up by name: keys belong to the teams app, the version to analytics.
    sequence = apps.get_model("analytics", "TapSequence")
    version = (
        f"SELECT s.{sql.column(sequence, 'last_seq')} FROM {sql.table(sequence)} s "
        f"WHERE s.{sql.column(sequence, 'team')} = t.{sql.column(Team, 'id')}"
    )
    return (
        f"SELECT {', '.join(sql.columns(TeamAPIKey, 'k') + sql.columns(Team, 't'))}, "
        f"coalesce(({version}), 0) "
        f"FROM {sql.table(TeamAPIKey)} k JOIN {sql.table(Team)} t "
        f"ON t.{sql.column(Team, 'id')} = k.{sql.column(TeamAPIKey, 'team')} "
        f"WHERE k.{sql.column(TeamAPIKey, 'prefix')} = %s"
    )


def _model_from_row(model: type[models.Model], values: Sequence[Any]) -> Any:
    fields = model._meta.concrete_fields
    # SQLite hands back naive datetimes, in UTC, where the ORM would make them aware.
    values = [
        value.replace(tzinfo=UTC) if isinstance(value, datetime) and value.tzinfo is None else value
        for value in values
    ]
    return model.from_db(connection.alias, [field.attname for field in fields], values)


def _key_with_team(prefix: str) -> tuple[TeamAPIKey, int] | None:
    """The key with its team, and the team's write version."""
    if connection.vendor == "postgresql":
        row = _prepared_row(_key_lookup_sql(), [prefix])
    else:
        with connection.cursor() as cursor:
            cursor.execute(_key_lookup_sql(), [prefix])
            row = cursor.fetchone()
    if row is None:
        return None
    split = len(TeamAPIKey._meta.concrete_fields)
    api_key = _model_from_row(TeamAPIKey, row[:split])
    api_key.team = _model_from_row(Team, row[split:-1])
    return cast(TeamAPIKey, api_key), int(row[-1])


def _prepared_row(statement: str, params: Sequence[Any]) -> Any:
    """The first row of a statement run as a prepared statement of this connection.

    Django's cursors bind parameters on the client, so PostgreSQL parses and plans every
    statement anew: 170-200 us of its CPU for the key's statement, which every API request
    runs, against 66-68 us prepared (measured at bench-1M). The connection's own type
    adapters still apply, and its errors are Django's, as through Django's cursor.
    """
    connection.ensure_connection()
    started = time.monotonic()
    with connection.wrap_database_errors:
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(statement, params, prepare=True)
            row = cursor.fetchone()
    if connection.queries_logged:  # as Django's debug cursor does, for query counts
        connection.queries_log.append(
            {
                "sql": statement % tuple(map(repr, params)),
                "time": f"{time.monotonic() - started:.3f}",
            }
        )
    return row


def usable_key_ids(key_ids: Collection[str], *, now: datetime | None = None) -> set[str]:
    """Which of these keys are still neither revoked nor expired (for sockets that
    authenticated once and must drop a key revoked while they are open)."""
    moment = now or timezone.now()
    usable = (
        TeamAPIKey.objects.filter(pk__in=list(key_ids), revoked=False)
        .exclude(expiry_date__lte=moment)
        .values_list("pk", flat=True)
    )
    return set(usable)

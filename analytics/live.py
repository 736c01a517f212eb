"""Pushing stored taps to the team's websockets (SPEC 8), and reading them back to resume.

The write path calls ``publish_on_commit`` with what each transaction stored per team: the
seq range it took (``after`` < seq <= ``last``). After the commit, one channel-layer
message per team goes to the team's group, carrying the new taps (or, past a batch limit,
only the range: a bulk load must not ship every row through Redis). A consumer knows from
``after`` whether it has seen everything before the message; if not (a publish was lost or
overtaken), it reads the missing taps back with ``taps_after``. Publishing never fails the
write: the taps are committed before it starts.
"""

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict

from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.db import transaction
from redis.exceptions import RedisError

from analytics.models import Tap, TapSequence

logger = logging.getLogger(__name__)

# Most taps a resume or a live message carries (SPEC 8: "at most 1000, oldest first").
LIVE_INLINE_LIMIT = 1000
# The loader stores 50,000-row batches; past this many taps of one team in one batch it
# announces the range only, so a 10M-tap load costs one small message per team per batch.
LOADER_INLINE_LIMIT = 100
PUBLISH_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class StoredRange:
    """What one transaction stored for one team: seq numbers ``after`` < seq <= ``last``
    were taken (ids that proved duplicates leave their numbers unused).

    The team's staged taps are numbered in line order and nothing else: the k-th of them
    (from 1) got ``after + k``, so no other team's taps show as gaps (SPEC 1).
    ``first_line`` is the first one's line; ``lines``, when asked for, all of theirs, as
    text the database reads back (comma-separated on PostgreSQL, JSON on SQLite).
    """

    team_id: int
    after: int
    last: int
    accepted: int
    first_line: int = 0
    lines: str = ""


class TapMessage(TypedDict):
    type: str
    id: int
    tag: int
    count: int
    at: str
    seq: int


def team_group(team_id: int) -> str:
    return f"taps.team.{team_id}"


def tap_message(tap_id: int, tag_id: int, count: int, at: datetime, seq: int) -> TapMessage:
    return tap_message_at(tap_id, tag_id, count, instant_text(at), seq)


def tap_message_at(tap_id: int, tag_id: int, count: int, at: str, seq: int) -> TapMessage:
    """A tap's message with its instant already written out (``instant_text``)."""
    return {"type": "tap", "id": tap_id, "tag": tag_id, "count": count, "at": at, "seq": seq}


def instant_text(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def taps_after(
    team_id: int, after: int, *, upto: int | None = None
) -> tuple[list[TapMessage], bool]:
    """The team's taps with seq > ``after`` (and <= ``upto``), oldest first, at most
    ``LIVE_INLINE_LIMIT``; the flag says whether more were left out.

    Complete for any ``after``: the write path commits a team's taps in seq order.
    """
    taps = Tap.objects.filter(team_id=team_id, seq__gt=after)
    if upto is not None:
        taps = taps.filter(seq__lte=upto)
    rows = list(
        taps.order_by("seq").values_list("tap_id", "tag_id", "count", "created_at", "seq")[
            : LIVE_INLINE_LIMIT + 1
        ]
    )
    return [tap_message(*row) for row in rows[:LIVE_INLINE_LIMIT]], len(rows) > LIVE_INLINE_LIMIT


def last_seq(team_id: int) -> int:
    """The team's highest seq given so far (0 if none): where a fresh socket starts."""
    counter = TapSequence.objects.filter(team_id=team_id).values_list("last_seq", flat=True)
    return counter.first() or 0


# Taps a caller already holds, by team: exactly what a range stored, in seq order.
KnownTaps = dict[int, list[TapMessage]]


def publish_on_commit(
    ranges: Sequence[StoredRange],
    inline_limit: int,
    known: Callable[[], KnownTaps | None] | None = None,
) -> None:
    """Push these ranges to their teams once the current transaction commits; a team's
    taps come from what ``known`` returns if there, else they are read back.

    ``known`` runs after the commit: building a 1000-tap batch's messages took 3 ms, which
    inside the transaction the team's other writers spent waiting for its counter row.
    ``robust``: should reading the taps back fail after the commit, Django logs it and the
    request still answers with what was stored; a push is never worth a 500. Django names
    a failed hook by its ``__qualname__``, so the hook is a function, not a ``partial``.
    """
    stored = list(ranges)

    def publish_committed() -> None:
        publish(stored, inline_limit, known() if known is not None else None)

    transaction.on_commit(publish_committed, robust=True)


def publish(
    ranges: Sequence[StoredRange], inline_limit: int, known: KnownTaps | None = None
) -> None:
    """Send one message per team; a channel layer that is down is logged, not raised."""
    layer = get_channel_layer()
    if layer is None:
        return
    messages: list[tuple[StoredRange, dict[str, Any]]] = []
    for stored in ranges:
        message: dict[str, Any] = {
            "type": "taps.stored",
            "team": stored.team_id,
            "after": stored.after,
            "last": stored.last,
            "taps": None,
        }
        if stored.accepted <= inline_limit:
            taps = (known or {}).get(stored.team_id)
            if taps is None:
                taps, _ = taps_after(stored.team_id, stored.after, upto=stored.last)
            message["taps"] = taps
        messages.append((stored, message))
    # One trip into async code for all teams: from sync code without an event loop (the
    # loader) each async_to_sync call starts a loop and a Redis connection of its own.
    async_to_sync(_send)(layer, messages)


async def _send(layer: Any, messages: list[tuple[StoredRange, dict[str, Any]]]) -> None:
    for stored, message in messages:
        try:
            # A Redis that hangs rather than refuses must not hold the ingest answer.
            async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                await layer.group_send(team_group(stored.team_id), message)
        except (RedisError, OSError, ChannelFull, TimeoutError) as error:
            # The taps are committed; sockets that missed this message catch up from the
            # database on the next one, or on reconnect with ``after``.
            reason = str(error) or f"no answer within {PUBLISH_TIMEOUT_SECONDS} s"
            logger.warning(
                "could not push %d taps of team %d to websockets: %s",
                stored.accepted,
                stored.team_id,
                reason,
            )


@dataclass(frozen=True)
class Backlog:
    """What a socket sends right after ``ready``: the taps it missed (``gap`` if more
    than ``LIVE_INLINE_LIMIT``), and ``last``, the seq it has then seen everything up to."""

    taps: list[TapMessage]
    gap: bool
    last: int


def read_backlog(team_id: int, after: int | None) -> Backlog:
    """Where a socket starts: now, or resuming ``after`` a seq (SPEC 8).

    The counter is read before the taps: a tap committed in between is then sent now, and
    its live message dropped as already seen; read the other way round, it could be
    counted as seen without having been sent.
    """
    current = last_seq(team_id)
    if after is None:
        return Backlog([], False, current)
    if after > current:
        # A seq the team never gave (another team's, or from before a restore): taken as
        # seen, the team's next taps up to it would be dropped. The client reloads
        # through the REST API and goes on from now.
        return Backlog([], True, current)
    taps, more = taps_after(team_id, after)
    if more:
        # The client reloads what it missed through the REST API; live taps go on from
        # the newest one sent.
        return Backlog(taps, True, max(current, taps[-1]["seq"]))
    return Backlog(taps, False, max(current, after, *(tap["seq"] for tap in taps)))

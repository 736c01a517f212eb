"""One channel-layer subscriber per worker process, fanning taps out to its sockets.

With a channel per socket, a tap of a team with 500 open dashboards was 500 deliveries
through Redis and 500 group memberships to keep; here a worker joins each team's group
once, for all its sockets of that team, and hands every message to their inboxes in
memory. The same loop rechecks the keys of all its sockets in one query, instead of one
query per socket (SPEC 8: a revoked key's socket closes within 5 seconds).
"""

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from analytics.live import team_group
from teams.keys import usable_key_ids

logger = logging.getLogger(__name__)

# channels-redis forgets a group membership after a day (group_expiry); join again well
# before, and after any error, since a restarted Redis has forgotten them all.
REJOIN_SECONDS = 600.0
RETRY_SECONDS = 1.0


@dataclass(eq=False)
class Subscriber:
    """A socket as the fan-out sees it: its team, its key and where its messages go."""

    team_id: int
    key_id: str
    inbox: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    # Called (and awaited) once the socket's key is revoked or expired.
    on_key_unusable: Callable[[], Coroutine[Any, Any, None]] | None = None


class Fanout:
    """The worker's subscriptions; one per event loop (``fanout()``)."""

    def __init__(self) -> None:
        self.teams: dict[int, set[Subscriber]] = {}
        self.lock = asyncio.Lock()
        self.channel: str | None = None
        self.tasks: list[asyncio.Task[None]] = []

    async def subscribe(self, subscriber: Subscriber) -> None:
        """Deliver the team's messages to the subscriber's inbox from now on (the
        group is joined before this returns)."""
        layer = get_channel_layer()
        async with self.lock:
            if self.channel is None:
                self.channel = await layer.new_channel()
                self.tasks = [
                    asyncio.create_task(self._receive(layer)),
                    asyncio.create_task(self._check_keys()),
                ]
            if subscriber.team_id not in self.teams:
                await layer.group_add(team_group(subscriber.team_id), self.channel)
                self.teams[subscriber.team_id] = set()
            self.teams[subscriber.team_id].add(subscriber)

    async def unsubscribe(self, subscriber: Subscriber) -> None:
        async with self.lock:
            subscribers = self.teams.get(subscriber.team_id, set())
            subscribers.discard(subscriber)
            if subscribers or subscriber.team_id not in self.teams:
                return
            del self.teams[subscriber.team_id]
            if self.channel is not None:
                try:
                    await get_channel_layer().group_discard(
                        team_group(subscriber.team_id), self.channel
                    )
                except Exception as error:  # noqa: BLE001 -- the membership expires anyway
                    logger.warning("could not leave team %d's group: %r", subscriber.team_id, error)

    async def _receive(self, layer: Any) -> None:
        assert self.channel is not None
        joined = time.monotonic()
        while True:
            try:
                if time.monotonic() - joined > REJOIN_SECONDS:
                    await self._rejoin(layer)
                    joined = time.monotonic()
                message = await layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 -- a layer outage must not end fan-out
                logger.warning("live taps: channel layer unavailable, retrying: %r", error)
                await asyncio.sleep(RETRY_SECONDS)
                joined = 0.0  # rejoin every group once the layer answers again
                continue
            for subscriber in self.teams.get(message.get("team", -1), ()):
                subscriber.inbox.put_nowait(message)

    async def _rejoin(self, layer: Any) -> None:
        assert self.channel is not None
        for team_id in list(self.teams):
            await layer.group_add(team_group(team_id), self.channel)

    async def _check_keys(self) -> None:
        while True:
            await asyncio.sleep(settings.TAPS_WS_KEY_CHECK_SECONDS)
            subscribers = [s for team in self.teams.values() for s in team]
            if not subscribers:
                continue
            try:
                usable = await database_sync_to_async(usable_key_ids)(
                    {s.key_id for s in subscribers}
                )
            except Exception as error:  # noqa: BLE001 -- check again next round
                logger.warning("live taps: could not recheck keys: %r", error)
                continue
            for subscriber in subscribers:
                if subscriber.key_id not in usable and subscriber.on_key_unusable:
                    await subscriber.on_key_unusable()


_fanouts: "WeakKeyDictionary[asyncio.AbstractEventLoop, Fanout]" = WeakKeyDictionary()


def fanout() -> Fanout:
    """The fan-out of the running event loop (a uvicorn worker has one)."""
    loop = asyncio.get_running_loop()
    if loop not in _fanouts:
        _fanouts[loop] = Fanout()
    return _fanouts[loop]

"""``/ws/v1/taps``: live taps for dashboards (SPEC 8).

The consumer authenticates the first message, subscribes to the team's taps through the
worker's fan-out (``analytics.fanout``) and forwards what the write path publishes
(``analytics.live``). It tracks ``last``, the seq it has sent
everything up to: a message whose range starts past ``last`` means one was lost or
overtaken, and the consumer reads the missing taps back from the database instead of
skipping them.
"""

import asyncio
import json
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from analytics.fanout import Subscriber, fanout
from analytics.live import Backlog, TapMessage, read_backlog, taps_after
from teams.keys import KeyRejected, resolve_key
from teams.models import Scope

# SPEC 8 has one close code for every key the socket cannot use (4001); a key of the
# wrong scope gets it too, with a reason saying which key to use instead.
CLOSE_UNAUTHENTICATED = 4001
WRONG_SCOPE_REASON = "this is an ingest key; live taps need a read key"


class BadAuthMessage(ValueError):
    pass


def parse_auth(text: str | None) -> tuple[str, int | None]:
    """The key and ``after`` of an auth message, or ``BadAuthMessage``."""
    try:
        message = json.loads(text or "")
    except (ValueError, RecursionError):
        raise BadAuthMessage("not JSON") from None
    if not isinstance(message, dict) or message.get("type") != "auth":
        raise BadAuthMessage("the first message must be {'type': 'auth', ...}")
    key, after = message.get("key"), message.get("after")
    if not isinstance(key, str):
        raise BadAuthMessage("key must be a string")
    if after is not None and (isinstance(after, bool) or not isinstance(after, int) or after < 0):
        raise BadAuthMessage("after must be a seq (a whole number from 0)")
    return key, after


class TapsConsumer(AsyncWebsocketConsumer):
    # No channel of its own: messages come from the worker's fan-out.
    channel_layer_alias = "none"
    team_id: int | None = None
    subscriber: Subscriber | None = None
    last: int = 0
    watchers: list[asyncio.Task[None]]

    async def connect(self) -> None:
        # Any Origin: sockets authenticate by key, never by cookie (SPEC 8).
        self.watchers = []
        await self.accept()
        self.watchers.append(asyncio.create_task(self.close_unless_authenticated()))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.team_id is not None:
            return  # nothing to say after auth; ignored rather than fatal
        try:
            plaintext, after = parse_auth(text_data)
            api_key = await database_sync_to_async(resolve_key)(plaintext)
        except (BadAuthMessage, KeyRejected) as refusal:
            # Both messages are safe to show (neither holds the key); a close reason has
            # room for 123 bytes.
            reason = str(refusal).encode()[:123].decode(errors="ignore")
            await self.close(code=CLOSE_UNAUTHENTICATED, reason=reason)
            return
        if api_key.scope != Scope.READ:
            await self.close(code=CLOSE_UNAUTHENTICATED, reason=WRONG_SCOPE_REASON)
            return
        team = api_key.team
        # Subscribe before reading the backlog: a tap committed meanwhile is then either in
        # the backlog or in a message that waits in the inbox, never in neither.
        self.subscriber = Subscriber(team.pk, api_key.pk, on_key_unusable=self.close_for_key)
        await fanout().subscribe(self.subscriber)
        self.team_id = team.pk
        backlog: Backlog = await database_sync_to_async(read_backlog)(team.pk, after)
        self.last = backlog.last
        # ``seq`` beyond SPEC 8's shape: where this socket starts, so a client that saw no
        # tap yet can still resume from here after a drop.
        start = backlog.last if after is None or after > backlog.last else after
        await self.send_json(
            {"type": "ready", "team": {"id": team.pk, "name": team.name}, "seq": start}
        )
        await self.send_taps(backlog.taps)
        if backlog.gap:
            await self.send_json({"type": "gap"})
        self.watchers.append(asyncio.create_task(self.forward(self.subscriber)))

    async def disconnect(self, code: int) -> None:
        for watcher in self.watchers:
            watcher.cancel()
        if self.subscriber is not None:
            await fanout().unsubscribe(self.subscriber)

    async def forward(self, subscriber: Subscriber) -> None:
        """Handle the inbox's messages one at a time, in order."""
        while True:
            await self.taps_stored(await subscriber.inbox.get())

    async def taps_stored(self, event: dict[str, Any]) -> None:
        """A transaction of the team stored taps ``after`` < seq <= ``last``."""
        if self.team_id is None or event["last"] <= self.last:
            return
        if event["taps"] is None and event["after"] <= self.last:
            # A bulk load: too many to push one by one; the dashboard reloads instead.
            self.last = event["last"]
            await self.send_json({"type": "gap"})
            return
        if event["after"] <= self.last:
            taps: list[TapMessage] = event["taps"]
            more = False
        else:
            # An earlier message was lost or is still on its way: the database has
            # everything up to event["last"], committed in seq order.
            taps, more = await database_sync_to_async(taps_after)(self.team_id, self.last)
        await self.send_taps([tap for tap in taps if tap["seq"] > self.last])
        self.last = max(self.last, event["last"], *(tap["seq"] for tap in taps))
        if more:
            await self.send_json({"type": "gap"})

    async def send_taps(self, taps: list[TapMessage]) -> None:
        for tap in taps:
            await self.send_json(dict(tap))

    async def send_json(self, content: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(content))

    async def close_unless_authenticated(self) -> None:
        await asyncio.sleep(settings.TAPS_WS_AUTH_SECONDS)
        if self.team_id is None:
            await self.close(code=CLOSE_UNAUTHENTICATED)

    async def close_for_key(self) -> None:
        await self.close(code=CLOSE_UNAUTHENTICATED)

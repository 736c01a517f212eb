"""/ws/v1/taps (SPEC 8): first-message auth, live taps with seq, resume, isolation."""

import asyncio
import io
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers
from channels.testing import WebsocketCommunicator
from channels_redis.core import RedisChannelLayer
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from analytics import live
from analytics.ingest import TapRow, ingest_taps, stage_taps, store_staged_taps, store_taps
from analytics.live import LIVE_INLINE_LIMIT, taps_after, team_group
from analytics.models import Tap
from taps_project.asgi import application
from teams.keys import IssuedKey, create_key, revoke_key
from teams.models import Tag, Team, TeamAPIKey

T = TypeVar("T")
WHEN = datetime(2024, 3, 1, 12, tzinfo=UTC)
pytestmark = pytest.mark.django_db(transaction=True)


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    """Run an async scenario from a sync test (the consumer's DB calls use threads)."""
    return async_to_sync(scenario)()


def rows(*ids: int, uid: int) -> list[TapRow]:
    return [TapRow(tap_id, uid, tap_id % 3 + 1, WHEN, line=n) for n, tap_id in enumerate(ids)]


store = database_sync_to_async(store_taps)


async def open_socket() -> WebsocketCommunicator:
    socket = WebsocketCommunicator(application, "/ws/v1/taps")
    connected, _ = await socket.connect()
    assert connected
    return socket


async def authed(key: IssuedKey, **fields: Any) -> tuple[WebsocketCommunicator, dict[str, Any]]:
    socket = await open_socket()
    await socket.send_json_to({"type": "auth", "key": key.plaintext, **fields})
    return socket, await socket.receive_json_from(timeout=5)


async def close_code(socket: WebsocketCommunicator, timeout: float = 5) -> int:
    output = await socket.receive_output(timeout=timeout)
    assert output["type"] == "websocket.close"
    return output["code"]


def test_a_read_key_is_answered_with_ready_and_its_team(read_key: IssuedKey, team: Team) -> None:
    async def scenario() -> dict[str, Any]:
        socket, ready = await authed(read_key)
        await socket.disconnect()
        return ready

    assert run(scenario) == {"type": "ready", "team": {"id": team.pk, "name": "Acme"}, "seq": 0}


def test_a_stored_tap_arrives_with_its_seq(read_key: IssuedKey, tag: Tag) -> None:
    async def scenario() -> dict[str, Any]:
        socket, _ = await authed(read_key)
        await store(rows(42, uid=tag.uid))
        message = await socket.receive_json_from(timeout=5)
        await socket.disconnect()
        return message

    message = run(scenario)
    assert message == {
        "type": "tap",
        "id": 42,
        "tag": tag.uid,
        "count": 1,
        "at": "2024-03-01T12:00:00+00:00",
        "seq": Tap.objects.get(tap_id=42).seq,
    }


@pytest.mark.parametrize("repeat_a_stored_id", [False, True])
def test_an_ingested_batch_arrives_exactly_as_stored(
    read_key: IssuedKey,
    tag: Tag,
    team: Team,
    repeat_a_stored_id: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The push of an ingest batch is built from the request's own rows when every row
    # was stored, and read back from the database otherwise: the same messages either way.
    store_taps(rows(1, 2, uid=tag.uid))
    batch = [
        TapRow(10 + n, tag.uid, n + 1, WHEN + timedelta(microseconds=7 * n), line=n)
        for n in range(5)
    ]
    if repeat_a_stored_id:
        batch[2] = TapRow(2, tag.uid, 9, WHEN, line=2)
    else:

        def not_read_back(*args: object, **kwargs: object) -> None:
            raise AssertionError("a fully stored batch is pushed without reading it back")

        monkeypatch.setattr(live, "taps_after", not_read_back)

    async def scenario() -> list[dict[str, Any]]:
        socket, _ = await authed(read_key)
        await database_sync_to_async(ingest_taps)(team.pk, batch)
        received = [
            await socket.receive_json_from(timeout=5) for _ in range(4 + (not repeat_a_stored_id))
        ]
        await socket.disconnect()
        return received

    received = run(scenario)
    monkeypatch.undo()
    stored, more = taps_after(team.pk, 2)
    assert received == stored and not more
    assert [tap["id"] for tap in received] == [
        10,
        11,
        *([] if repeat_a_stored_id else [12]),
        13,
        14,
    ]
    assert received[-1]["at"] == (WHEN + timedelta(microseconds=28)).isoformat()


def close_code_after(first_message: Any) -> int:
    """The code the server closes with after this first message."""

    async def scenario() -> int:
        socket = await open_socket()
        text = first_message if isinstance(first_message, str) else json.dumps(first_message)
        await socket.send_to(text_data=text)
        return await close_code(socket)

    return run(scenario)


@pytest.mark.parametrize(
    "first_message",
    [
        {"type": "auth", "key": "nope.nope"},
        {"type": "auth", "key": 12},
        {"type": "hello", "key": "x"},
        {"type": "auth", "key": "x", "after": -1},
        "not json",
        # PostgreSQL refuses NUL in text: the key must be refused before it is looked up.
        {"type": "auth", "key": "abc\u0000.xyz"},
    ],
    ids=[
        "unknown key",
        "key not a string",
        "not an auth message",
        "negative after",
        "text",
        "NUL in the key",
    ],
)
def test_a_bad_first_message_closes_with_4001(db: None, first_message: Any) -> None:
    assert close_code_after(first_message) == 4001


@pytest.mark.parametrize(
    ("first_message", "reason"),
    [
        ({"type": "auth", "key": "nope.nope"}, "Invalid API key."),
        ({"type": "auth", "key": "x", "after": -1}, "after must be a seq (a whole number from 0)"),
        ("not json", "not JSON"),
    ],
)
def test_a_refused_first_message_is_told_why(db: None, first_message: Any, reason: str) -> None:
    async def scenario() -> dict[str, Any]:
        socket = await open_socket()
        text = first_message if isinstance(first_message, str) else json.dumps(first_message)
        await socket.send_to(text_data=text)
        return await socket.receive_output(timeout=5)

    closed = run(scenario)

    assert (closed["type"], closed["code"], closed["reason"]) == ("websocket.close", 4001, reason)


def test_a_revoked_key_closes_with_4001(read_key: IssuedKey) -> None:
    revoke_key(read_key.api_key.prefix)

    assert close_code_after({"type": "auth", "key": read_key.plaintext}) == 4001


def test_an_expired_key_closes_with_4001(team: Team) -> None:
    expired = create_key(team, expires_at=timezone.now() - timedelta(seconds=1))

    assert close_code_after({"type": "auth", "key": expired.plaintext}) == 4001


def test_an_ingest_key_closes_with_4001(ingest_key: IssuedKey) -> None:
    assert close_code_after({"type": "auth", "key": ingest_key.plaintext}) == 4001


def test_no_auth_in_time_closes_with_4001(db: None, settings: Any) -> None:
    settings.TAPS_WS_AUTH_SECONDS = 0.05

    async def scenario() -> int:
        socket = await open_socket()
        return await close_code(socket)

    assert run(scenario) == 4001


def test_a_key_revoked_while_connected_closes_the_socket(
    read_key: IssuedKey, settings: Any
) -> None:
    settings.TAPS_WS_KEY_CHECK_SECONDS = 0.05

    async def scenario() -> tuple[bool, int]:
        socket, _ = await authed(read_key)
        still_open = await socket.receive_nothing(timeout=0.2)
        await database_sync_to_async(revoke_key)(read_key.api_key.prefix)
        return still_open, await close_code(socket)

    assert run(scenario) == (True, 4001)


def test_a_key_that_expires_while_connected_closes_the_socket(
    read_key: IssuedKey, settings: Any
) -> None:
    settings.TAPS_WS_KEY_CHECK_SECONDS = 0.05

    def expire() -> None:
        # The expiry instant passes: what the clock would do, without waiting for it.
        TeamAPIKey.objects.filter(pk=read_key.api_key.pk).update(
            expiry_date=timezone.now() - timedelta(seconds=1)
        )

    async def scenario() -> int:
        socket, _ = await authed(read_key)
        await database_sync_to_async(expire)()
        return await close_code(socket)

    assert run(scenario) == 4001


def test_other_teams_taps_never_reach_a_socket(
    read_key: IssuedKey, tag: Tag, other_team: Team
) -> None:
    foreign = Tag.objects.create(uid=555, team=other_team)
    other_key = create_key(other_team)

    async def scenario() -> tuple[list[int], list[int]]:
        mine, _ = await authed(read_key)
        theirs, _ = await authed(other_key)
        await store(rows(1, 2, uid=foreign.uid))
        await store(rows(3, uid=tag.uid))
        got_mine = [(await mine.receive_json_from(timeout=5))["id"]]
        got_theirs = [(await theirs.receive_json_from(timeout=5))["id"] for _ in range(2)]
        assert await mine.receive_nothing(timeout=0.2)
        assert await theirs.receive_nothing(timeout=0.2)
        await mine.disconnect()
        await theirs.disconnect()
        return got_mine, got_theirs

    assert run(scenario) == ([3], [1, 2])


def test_resuming_after_a_seq_sends_the_missed_taps_oldest_first(
    read_key: IssuedKey, tag: Tag
) -> None:
    store_taps(rows(1, 2, uid=tag.uid))
    store_taps(rows(3, 4, uid=tag.uid))
    after = Tap.objects.get(tap_id=2).seq

    async def scenario() -> list[int]:
        socket, ready = await authed(read_key, after=after)
        assert ready["type"] == "ready"
        missed = [(await socket.receive_json_from(timeout=5))["id"] for _ in range(2)]
        assert await socket.receive_nothing(timeout=0.2)
        await store(rows(5, uid=tag.uid))
        missed.append((await socket.receive_json_from(timeout=5))["id"])
        await socket.disconnect()
        return missed

    assert run(scenario) == [3, 4, 5]


def test_resuming_after_more_than_1000_taps_sends_1000_then_a_gap(
    read_key: IssuedKey, tag: Tag
) -> None:
    store_taps(rows(*range(1, LIVE_INLINE_LIMIT + 11), uid=tag.uid))

    async def scenario() -> tuple[list[int], dict[str, Any]]:
        socket, _ = await authed(read_key, after=0)
        ids = [(await socket.receive_json_from(timeout=5))["id"] for _ in range(LIVE_INLINE_LIMIT)]
        gap = await socket.receive_json_from(timeout=5)
        await socket.disconnect()
        return ids, gap

    ids, gap = run(scenario)
    assert ids == list(range(1, LIVE_INLINE_LIMIT + 1))
    assert gap == {"type": "gap"}


def test_resuming_after_a_seq_the_team_never_gave_is_a_gap_then_live_taps(
    read_key: IssuedKey, tag: Tag
) -> None:
    store_taps(rows(1, 2, uid=tag.uid))
    current = Tap.objects.get(tap_id=2).seq

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], int]:
        socket, ready = await authed(read_key, after=current + 10**9)
        gap = await socket.receive_json_from(timeout=5)
        await store(rows(3, uid=tag.uid))
        live = (await socket.receive_json_from(timeout=5))["id"]
        await socket.disconnect()
        return ready, gap, live

    ready, gap, live = run(scenario)
    assert ready["seq"] == current
    assert gap == {"type": "gap"}
    assert live == 3


def test_a_lost_publish_is_filled_in_from_the_database_by_the_next_one(
    read_key: IssuedKey, tag: Tag
) -> None:
    # A real Redis client against a port where nothing listens: tap 1's push is lost.
    down = RedisChannelLayer(hosts=["redis://127.0.0.1:1/0"])

    async def scenario() -> list[int]:
        socket, _ = await authed(read_key)
        working = channel_layers.set(DEFAULT_CHANNEL_LAYER, down)
        try:
            await store(rows(1, uid=tag.uid))
        finally:
            channel_layers.set(DEFAULT_CHANNEL_LAYER, working)
        await store(rows(2, uid=tag.uid))
        ids = [(await socket.receive_json_from(timeout=5))["id"] for _ in range(2)]
        assert await socket.receive_nothing(timeout=0.2)
        await socket.disconnect()
        return ids

    assert run(scenario) == [1, 2]


def test_a_bulk_batch_is_announced_as_a_gap(read_key: IssuedKey, tag: Tag) -> None:
    def bulk() -> None:
        with transaction.atomic():
            stage_taps(rows(1, 2, 3, uid=tag.uid))
            store_staged_taps(live_limit=2)

    async def scenario() -> dict[str, Any]:
        socket, _ = await authed(read_key)
        await database_sync_to_async(bulk)()
        message = await socket.receive_json_from(timeout=5)
        await socket.disconnect()
        return message

    assert run(scenario) == {"type": "gap"}


def test_taps_loaded_from_a_file_reach_the_socket(
    read_key: IssuedKey, tag: Tag, tmp_path: Path
) -> None:
    taps_csv = tmp_path / "taps.csv"
    taps_csv.write_text(
        f"id,tag_uid,count,created_at\n1,{tag.uid},2,2024-03-01T12:00:00Z\n"
        f"2,{tag.uid},1,2024-03-01T12:01:00Z\n"
    )
    load = database_sync_to_async(call_command)

    async def scenario() -> list[tuple[int, int]]:
        socket, _ = await authed(read_key)
        await load("load_taps", "--taps", str(taps_csv), stdout=io.StringIO())
        got = [await socket.receive_json_from(timeout=5) for _ in range(2)]
        await socket.disconnect()
        return [(tap["id"], tap["count"]) for tap in got]

    assert run(scenario) == [(1, 2), (2, 1)]


async def group_members(team: Team) -> int:
    """How many channels the channel layer delivers the team's taps to."""
    layer = channel_layers[DEFAULT_CHANNEL_LAYER]
    group = team_group(team.pk)
    if isinstance(layer, RedisChannelLayer):
        connection = layer.connection(layer.consistent_hash(group))
        return int(await connection.zcard(layer._group_key(group)))
    return len(layer.groups.get(group, {}))


def test_a_worker_joins_a_teams_group_once_for_all_its_sockets(
    read_key: IssuedKey, tag: Tag, team: Team
) -> None:
    async def scenario() -> None:
        sockets = [(await authed(read_key))[0] for _ in range(3)]
        assert await group_members(team) == 1
        await store(rows(1, uid=tag.uid))
        for socket in sockets:
            assert (await socket.receive_json_from(timeout=5))["id"] == 1
        await sockets[0].disconnect()
        await store(rows(2, uid=tag.uid))
        for socket in sockets[1:]:
            assert (await socket.receive_json_from(timeout=5))["id"] == 2
            await socket.disconnect()
        assert await group_members(team) == 0

    run(scenario)


def test_a_socket_that_leaves_stops_getting_taps_and_others_keep_them(
    read_key: IssuedKey, tag: Tag
) -> None:
    async def scenario() -> None:
        leaving, _ = await authed(read_key)
        staying, _ = await authed(read_key)
        await leaving.disconnect()
        await store(rows(1, uid=tag.uid))
        assert (await staying.receive_json_from(timeout=5))["id"] == 1
        assert await staying.receive_nothing(timeout=0.2)
        await staying.disconnect()

    run(scenario)


def test_an_idle_receive_outlasts_the_layers_blocking_pop(settings: Any) -> None:
    # channels-redis waits for a message with a BRPOP of brpop_timeout seconds; a socket
    # timeout no longer than that failed every idle receive (logged as an outage).
    layer_settings = settings.CHANNEL_LAYERS["default"]
    if "RedisChannelLayer" not in layer_settings["BACKEND"]:
        pytest.skip("the in-memory layer has no socket")
    layer = RedisChannelLayer(**layer_settings["CONFIG"])

    async def idle() -> None:
        channel = await layer.new_channel()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(layer.receive(channel), RedisChannelLayer.brpop_timeout + 1.5)

    asyncio.run(idle())

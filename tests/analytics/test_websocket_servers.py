"""SPEC 8 across processes: a tap ingested through server A reaches a socket on server B,
through channels-redis, on one Redis server or sharded over two (SPEC 12)."""

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from teams.keys import IssuedKey
from teams.models import Tag
from tests.servers import LIVE_PORTS, free_port, private_redis, serve


def ingest(base_url: str, key: IssuedKey, tap: dict[str, int]) -> dict[str, int]:
    request = urllib.request.Request(
        base_url + "/v1/taps",
        data=json.dumps([tap]).encode(),
        headers={"Content-Type": "application/json", "X-Api-Key": key.plaintext},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, int] = json.loads(response.read())
    return answer


@contextmanager
def listening(base_url: str, key: IssuedKey) -> Iterator[ClientConnection]:
    with connect(base_url.replace("http", "ws") + "/ws/v1/taps") as socket:
        socket.send(json.dumps({"type": "auth", "key": key.plaintext}))
        assert json.loads(socket.recv(timeout=10))["type"] == "ready"
        yield socket


@pytest.mark.django_db(transaction=True)
def test_a_tap_ingested_through_one_server_reaches_a_socket_on_another(
    redis_url: str, read_key: IssuedKey, ingest_key: IssuedKey, tag: Tag
) -> None:
    env = {"CHANNELS_REDIS_URL": redis_url}
    with (
        serve(env, workers=1, port=free_port(LIVE_PORTS)) as server_a,
        serve(env, workers=1, port=free_port(LIVE_PORTS)) as server_b,
        listening(server_b, read_key) as socket,
    ):
        answer = ingest(server_a, ingest_key, {"id": 9, "tag": tag.uid, "count": 2})
        tap = json.loads(socket.recv(timeout=10))

    assert answer == {"accepted": 1, "duplicates": 0}
    assert (tap["type"], tap["id"], tap["tag"], tap["count"]) == ("tap", 9, tag.uid, 2)


@pytest.mark.django_db(transaction=True)
def test_the_channel_layer_shards_over_several_redis_servers(
    read_key: IssuedKey, ingest_key: IssuedKey, tag: Tag
) -> None:
    with private_redis() as (first, _), private_redis() as (second, _):
        env = {"CHANNELS_REDIS_URL": f"{first},{second}"}
        with (
            serve(env, workers=1, port=free_port(LIVE_PORTS)) as server_a,
            serve(env, workers=1, port=free_port(LIVE_PORTS)) as server_b,
            listening(server_a, read_key) as on_a,
            listening(server_b, read_key) as on_b,
        ):
            answer = ingest(server_a, ingest_key, {"id": 11, "tag": tag.uid, "count": 1})
            taps = [json.loads(socket.recv(timeout=10)) for socket in (on_a, on_b)]

    assert answer == {"accepted": 1, "duplicates": 0}
    assert [(tap["type"], tap["id"]) for tap in taps] == [("tap", 11), ("tap", 11)]


@pytest.mark.django_db(transaction=True)
def test_a_frame_far_larger_than_an_auth_message_closes_the_socket_unread(
    read_key: IssuedKey,
) -> None:
    with serve({}, workers=1, port=free_port(LIVE_PORTS)) as server:
        with connect(server.replace("http", "ws") + "/ws/v1/taps") as socket:
            socket.send("x" * 100_000)
            with pytest.raises(ConnectionClosed) as closed:
                socket.recv(timeout=10)
        # Other sockets are served as before.
        with listening(server, read_key):
            pass

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009  # message too big

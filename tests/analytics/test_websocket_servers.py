"""SPEC 8 across processes: a tap ingested through server A reaches a socket on server B,
through channels-redis."""

import json
import urllib.request

import pytest
from websockets.sync.client import connect

from teams.keys import IssuedKey
from teams.models import Tag
from tests.servers import LIVE_PORTS, free_port, serve


@pytest.mark.django_db(transaction=True)
def test_a_tap_ingested_through_one_server_reaches_a_socket_on_another(
    redis_url: str, read_key: IssuedKey, ingest_key: IssuedKey, tag: Tag
) -> None:
    env = {"CHANNELS_REDIS_URL": redis_url}
    with (
        serve(env, workers=1, port=free_port(LIVE_PORTS)) as server_a,
        serve(env, workers=1, port=free_port(LIVE_PORTS)) as server_b,
    ):
        with connect(server_b.replace("http", "ws") + "/ws/v1/taps") as socket:
            socket.send(json.dumps({"type": "auth", "key": read_key.plaintext}))
            ready = json.loads(socket.recv(timeout=10))
            request = urllib.request.Request(
                server_a + "/v1/taps",
                data=json.dumps([{"id": 9, "tag": tag.uid, "count": 2}]).encode(),
                headers={"Content-Type": "application/json", "X-Api-Key": ingest_key.plaintext},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                answer = json.loads(response.read())
            tap = json.loads(socket.recv(timeout=10))

    assert ready["type"] == "ready"
    assert answer == {"accepted": 1, "duplicates": 0}
    assert (tap["type"], tap["id"], tap["tag"], tap["count"]) == ("tap", 9, tag.uid, 2)

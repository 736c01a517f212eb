"""The live fan-out client: N websockets of one team, then taps posted one at a time.

Run by the harness as a process of its own (``python -m bench.live ...``). It connects
and authenticates every socket, prints ``READY <n>``, waits for a line on stdin (the
harness then counts each worker's connections), posts the taps one by one (the next once
every socket has the previous one, or after 5 s) and prints ``RESULT <json>``: for every
(tap, socket) pair, the time from the ingest response to the socket's receipt, and from
the request being sent. The service publishes at commit, before it answers, so a receipt
may precede the response: those differences are negative and reported as they are.
"""

import argparse
import asyncio
import http.client
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.figures import summarize

CONNECT_BATCH = 50
TAP_WAIT_SECONDS = 5.0
# The server closes a keep-alive connection idle for 5 s (uvicorn's default), which a tap
# that some socket never receives makes it be: such a request is sent again on a new one.
RECONNECT_ERRORS = (ConnectionError, http.client.RemoteDisconnected)


@dataclass
class Receipts:
    sockets: int
    times: dict[int, list[float]] = field(default_factory=dict)
    complete: dict[int, asyncio.Event] = field(default_factory=dict)
    gaps: int = 0
    unexpected: int = 0
    closed: int = 0
    finished: bool = False  # from here on, sockets close because this client closes them

    def expect(self, tap_id: int) -> asyncio.Event:
        self.times[tap_id] = []
        self.complete[tap_id] = asyncio.Event()
        return self.complete[tap_id]

    def receive(self, tap_id: int, at: float) -> None:
        times = self.times.get(tap_id)
        if times is None:
            self.unexpected += 1
            return
        times.append(at)
        self.check(tap_id)

    def lose_socket(self) -> None:
        self.closed += 1
        for tap_id in self.times:
            self.check(tap_id)

    def check(self, tap_id: int) -> None:
        """A tap is complete once every socket still open has it."""
        if len(self.times[tap_id]) >= self.sockets - self.closed:
            self.complete[tap_id].set()


async def open_socket(url: str, key: str) -> ClientConnection:
    socket = await connect(url, ping_interval=None, max_queue=None, open_timeout=30)
    await socket.send(json.dumps({"type": "auth", "key": key}))
    ready = json.loads(await asyncio.wait_for(socket.recv(), 30))
    if ready.get("type") != "ready":
        raise RuntimeError(f"expected a ready message, got {ready}")
    return socket


async def listen(socket: ClientConnection, receipts: Receipts) -> None:
    try:
        async for text in socket:
            at = time.perf_counter()
            message = json.loads(text)
            if message["type"] == "tap":
                receipts.receive(message["id"], at)
            elif message["type"] == "gap":
                receipts.gaps += 1
    except ConnectionClosed:
        pass
    if not receipts.finished:
        receipts.lose_socket()


def post_tap(
    connection: http.client.HTTPConnection, key: str, tap: dict[str, int]
) -> tuple[int, float, float]:
    """POST one tap; (status, sent, responded) on the perf_counter clock. Posting an id
    again is harmless: the service counts it once."""
    body = json.dumps([tap])
    headers = {"X-Api-Key": key, "Content-Type": "application/json"}
    for attempt in (1, 2):
        sent = time.perf_counter()
        try:
            connection.request("POST", "/v1/taps", body, headers)
            response = connection.getresponse()
            response.read()
        except RECONNECT_ERRORS:
            connection.close()  # the next request opens a new connection
            if attempt == 2:
                raise
            continue
        return response.status, sent, time.perf_counter()
    raise AssertionError("unreachable")


async def measure(options: argparse.Namespace) -> dict[str, Any]:
    sockets: list[ClientConnection] = []
    for first in range(0, options.sockets, CONNECT_BATCH):
        count = min(CONNECT_BATCH, options.sockets - first)
        sockets += await asyncio.gather(
            *(open_socket(options.ws_url, options.key) for _ in range(count))
        )
    receipts = Receipts(len(sockets))
    listeners = [asyncio.create_task(listen(socket, receipts)) for socket in sockets]
    print(f"READY {len(sockets)}", flush=True)
    await asyncio.to_thread(sys.stdin.readline)

    http_url = urlsplit(options.http_url)
    connection = http.client.HTTPConnection(http_url.hostname or "", http_url.port, timeout=30)
    tags = [int(tag) for tag in options.tags.split(",")]
    sent_at: dict[int, tuple[float, float]] = {}
    bad_status: list[int] = []
    incomplete = 0
    deadline = time.monotonic() + options.seconds
    # This client's own CPU time while posting: near the wall time means it was busy
    # itself, and its receipt times are late by its own queueing.
    cpu_before, wall_before = time.process_time(), time.monotonic()
    posted = 0
    for number in range(options.taps):
        if time.monotonic() > deadline:
            break
        posted += 1
        tap_id = options.id_base + number
        complete = receipts.expect(tap_id)
        tap = {"id": tap_id, "tag": tags[number % len(tags)]}
        status, sent, responded = await asyncio.to_thread(
            post_tap, connection, options.ingest_key, tap
        )
        if not 200 <= status < 300:
            bad_status.append(status)
            continue
        sent_at[tap_id] = (sent, responded)
        try:
            await asyncio.wait_for(complete.wait(), TAP_WAIT_SECONDS)
        except TimeoutError:
            incomplete += 1
            missing = receipts.sockets - receipts.closed - len(receipts.times[tap_id])
            print(f"tap {number}: {missing} open sockets lack it after 5 s", file=sys.stderr)
    cpu_seconds, wall_seconds = time.process_time() - cpu_before, time.monotonic() - wall_before
    connection.close()
    receipts.finished = True
    await asyncio.gather(*(socket.close() for socket in sockets))
    for listener in listeners:
        listener.cancel()

    from_response: list[float] = []
    from_request: list[float] = []
    for tap_id, (sent, responded) in sent_at.items():
        for at in receipts.times[tap_id]:
            from_response.append((at - responded) * 1000)
            from_request.append((at - sent) * 1000)
    return {
        "sockets": len(sockets),
        "taps_wanted": options.taps,
        "taps_posted": posted,
        "taps_stored": len(sent_at),
        "non2xx": len(bad_status),
        "pairs_expected": len(sent_at) * len(sockets),
        "pairs_received": len(from_response),
        "taps_not_everywhere_within_5s": incomplete,
        "negative_from_response": sum(1 for value in from_response if value < 0),
        "sockets_closed_by_server": receipts.closed,
        "gaps": receipts.gaps,
        "unexpected_taps": receipts.unexpected,
        "client_cpu_share": cpu_seconds / wall_seconds if wall_seconds else 0.0,
        "from_response_ms": summarize(from_response),
        "from_request_ms": summarize(from_request),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ws-url", required=True)
    parser.add_argument("--http-url", required=True)
    parser.add_argument("--tags", required=True, help="comma-separated tag uids of the team")
    parser.add_argument("--sockets", type=int, required=True)
    parser.add_argument("--taps", type=int, required=True)
    parser.add_argument("--id-base", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=120, help="stop posting after this")
    options = parser.parse_args()
    # Keys come on stdin, not in the command line (ps would show them).
    options.key, options.ingest_key = sys.stdin.readline().split()
    result = uvloop.run(measure(options))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

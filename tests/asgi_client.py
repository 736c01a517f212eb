"""Driving an ASGI application in the test's process, one HTTP request at a time."""

import asyncio
import threading
from typing import Any


def get(
    app: Any,
    path: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    query: str = "",
    host: bytes = b"localhost",
) -> dict[str, Any]:
    """Drive the ASGI app once with a GET; the status, headers and body it sent."""
    return send_request(app, "GET", path, headers, query=query, host=host)


def send_request(
    app: Any,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    body: list[bytes] | None = None,
    query: str = "",
    host: bytes = b"localhost",
) -> dict[str, Any]:
    """Drive the ASGI app once, sending ``body`` in those chunks (as a client sends a
    chunked body: the headers are the caller's); the status, headers and body it sent."""
    chunks = body or [b""]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", host), *(headers or [])],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict[str, Any]] = []

    async def run() -> int:
        received = 0

        async def receive() -> dict[str, Any]:
            nonlocal received
            if received < len(chunks):
                received += 1
                more = received < len(chunks)
                return {"type": "http.request", "body": chunks[received - 1], "more_body": more}
            await asyncio.Event().wait()  # no disconnect while the request is served
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return threading.get_ident()

    loop_thread = asyncio.run(run())
    start = sent[0]
    body = b"".join(message.get("body", b"") for message in sent[1:])
    return {
        "status": start["status"],
        "headers": start["headers"],
        "body": body,
        "loop_thread": loop_thread,
    }

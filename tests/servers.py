"""Real uvicorn servers on the test database, for tests that cross process boundaries."""

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.db import connection

BASE_DIR = Path(__file__).resolve().parent.parent
# Ports for servers the tests start; kept apart from other suites running on the machine.
PORTS = range(18100, 18200)


def free_port() -> int:
    for port in PORTS:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS.start}..{PORTS.stop - 1}")


def server_environment(channels_redis_url: str | None) -> dict[str, str]:
    """This process's environment, pointed at the test database and, if given, a test
    Redis for the channel layer (else the settings' own: in-memory when embedded)."""
    env = dict(os.environ)
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        env["DATABASE_URL"] = (
            f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    else:
        env["TAPS_SQLITE_PATH"] = str(db["NAME"])
    if channels_redis_url is not None:
        env["CHANNELS_REDIS_URL"] = channels_redis_url
    env.setdefault("SECRET_KEY", "test-servers-only")
    return env


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    ticker = threading.Event()
    for _ in range(300):
        if process.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        ticker.wait(0.05)
    raise RuntimeError(f"the server on port {port} did not start")


@contextmanager
def uvicorn_servers(
    count: int, *, channels_redis_url: str | None, ports: list[int] | None = None
) -> Iterator[list[str]]:
    """Start ``count`` servers (on ``ports`` if given); yield their base URLs
    (http://127.0.0.1:PORT)."""
    env = server_environment(channels_redis_url)
    processes: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for index in range(count):
            port = ports[index] if ports else free_port()
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "taps_project.asgi:application",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                ],
                cwd=BASE_DIR,
                env=env,
            )
            processes.append(process)
            wait_for_port(port, process)
            urls.append(f"http://127.0.0.1:{port}")
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

"""Real servers for tests that need more than one process: the service under uvicorn on
this test's database, and a private Redis that a test may stop."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


# Ports for the live-taps tests' servers, apart from those of other suites on the machine.
LIVE_PORTS = range(18100, 18200)


def free_port(ports: range | None = None) -> int:
    """A free port: any (the system's choice), or the first free one of ``ports``."""
    if ports is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]
    for port in ports:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports.start}..{ports.stop - 1}")


def test_database_env() -> dict[str, str]:
    """Environment that points a server process at this test's database."""
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        host, port = db["HOST"] or "127.0.0.1", db["PORT"] or 5432
        return {"DATABASE_URL": f"postgres://{db['USER']}@{host}:{port}/{db['NAME']}"}
    return {"TAPS_SQLITE_PATH": str(db["NAME"])}


def _wait_until(check: Callable[[], bool], *, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not come up within {seconds} s")


def _answers(url: str, *, healthy: bool = True) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status < 500
    except urllib.error.HTTPError:
        return not healthy
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def uvicorn_options() -> list[str]:
    """The options ``scripts/serve`` gives uvicorn, from the file it reads them from."""
    lines = (ROOT / "scripts" / "uvicorn-options").read_text().splitlines()
    return [word for line in lines if not line.startswith("#") for word in line.split()]


@contextmanager
def serve(
    env: dict[str, str], *, workers: int = 2, port: int | None = None, healthy: bool = True
) -> Iterator[str]:
    """Run the service with uvicorn (as ``scripts/serve`` does); yields its base URL once
    ``/healthz`` says it is healthy (with ``healthy=False``, once it answers at all).

    With the in-memory channel layer (no Redis), websocket tests need ``workers=1``.
    """
    port = port or free_port()
    full_env = {
        **os.environ,
        "SECRET_KEY": "test-only-server-key",
        "PYTHONPATH": str(ROOT),
        **test_database_env(),
        **env,
    }
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
            "--workers",
            str(workers),
            *uvicorn_options(),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=full_env,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until(
            lambda: _answers(f"{base}/healthz", healthy=healthy), seconds=30, what="uvicorn"
        )
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def private_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Redis server of this test's own, so that the test may stop it."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (.ci/run installs it)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )

    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    try:
        _wait_until(up, seconds=10, what="redis-server")
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()

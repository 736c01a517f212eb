"""The service under test: ``scripts/serve`` in its own process group, and what /proc
says about its workers."""

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError

ROOT = Path(__file__).resolve().parent.parent
STARTUP_SECONDS = 180  # scripts/serve installs requirements on its first run


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    port: int
    log: Path

    def worker_pids(self) -> list[int]:
        """uvicorn's worker processes: the children started by multiprocessing's spawn."""
        return [pid for pid in child_pids(self.process.pid) if "spawn_main" in cmdline(pid)]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


@contextmanager
def serve(env: dict[str, str], *, port: int, log: Path) -> Iterator[Server]:
    """Run ``scripts/serve`` as production does and wait for /healthz; stop the whole
    process group afterwards, whatever happened."""
    base_url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(ROOT / "scripts" / "serve")],
            cwd=ROOT,
            env={**env, "PORT": str(port), "HOST": "127.0.0.1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _answers(f"{base_url}/healthz"):
            if process.poll() is not None:
                raise BenchError(
                    f"scripts/serve exited with {process.returncode} before answering "
                    f"/healthz; its log ({log}) ends:\n{log_tail(log)}"
                )
            if time.monotonic() > deadline:
                raise BenchError(
                    f"scripts/serve did not answer {base_url}/healthz within "
                    f"{STARTUP_SECONDS} s; its log ({log}) ends:\n{log_tail(log)}"
                )
            time.sleep(0.2)
        yield Server(process, base_url, port, log)
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group (uvicorn and its workers), SIGKILL after 15 s."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass


def child_pids(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return sorted(set(children))


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def rss_bytes(pid: int) -> int | None:
    """VmRSS of a process, or None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except FileNotFoundError:
        return None
    return None


def socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def established_on_port(port: int) -> dict[int, int]:
    """inode -> local port for established TCP connections whose local port is ``port``
    (IPv4 and IPv6), from /proc/net/tcp*."""
    found: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
                found[int(fields[9])] = local_port
    return found


def connections_per_worker(server: Server) -> dict[int, int]:
    """pid -> established connections to the server's port that the worker holds."""
    established = established_on_port(server.port)
    return {pid: len(socket_inodes(pid) & established.keys()) for pid in server.worker_pids()}

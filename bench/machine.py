"""What the figures were measured on: the machine, the versions, the commit."""

import os
import platform
import statistics
import subprocess
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import redis

from bench import postgres
from bench.errors import BenchError
from bench.server import ROOT
from bench.wrk import wrk_version


def _meminfo_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other work on the machine shows here."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


PROBE_ROWS = 1_000_000
PROBE_REPEATS = 5


def speed_probe(pg_url: str) -> dict[str, float]:
    """Milliseconds of two fixed workloads, the median of five each: a Python loop and a
    PostgreSQL sum, each a million numbers. The machine's speed moved two- to threefold
    between runs for the same code; these say how fast it ran apart from the code."""
    loops = []
    for _ in range(PROBE_REPEATS):
        started = time.perf_counter()
        sum(number * number for number in range(PROBE_ROWS))
        loops.append((time.perf_counter() - started) * 1000)
    sums = postgres.sum_ms(pg_url, PROBE_ROWS, PROBE_REPEATS)
    return {"python_ms": statistics.median(loops), "postgresql_ms": statistics.median(sums)}


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "memory_bytes": _meminfo_total(),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
    }


def redis_version(url: str) -> str:
    try:
        info = redis.Redis.from_url(url, socket_connect_timeout=2).info("server")
    except redis.exceptions.RedisError as error:
        raise BenchError(
            f"Redis is not reachable at {url} ({error}); start it (see the README) "
            "or give --redis-url"
        ) from None
    return str(info["redis_version"])


def empty_redis(url: str) -> None:
    redis.Redis.from_url(url, socket_connect_timeout=2).flushdb()


def versions(*, pg_url: str, redis_url: str) -> dict[str, str]:
    return {
        "Python": platform.python_version(),
        "Django": version("Django"),
        "PostgreSQL": postgres.server_version(pg_url),
        "Redis": redis_version(redis_url),
        "uvicorn": version("uvicorn"),
        "wrk": wrk_version(),
    }


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def commit() -> dict[str, Any]:
    """HEAD, and whether the tree differs from it (the figures may then not be HEAD's)."""
    return {
        "commit": _git("rev-parse", "HEAD") or "unknown",
        "branch": _git("rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }

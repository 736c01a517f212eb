"""Running wrk with the scripts in bench/wrk/ and reading the figures they print."""

import json
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError

SCRIPTS = Path(__file__).resolve().parent / "wrk"
MARKER = "BENCH_JSON "
LIMIT_MARKER = "BENCH_LIMIT"


@dataclass(frozen=True)
class Load:
    """How wrk drives the server: threads, connections, a time cap, a per-request timeout."""

    threads: int
    connections: int
    seconds: float
    timeout: float = 30.0


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise BenchError(
            "wrk is not installed; install it with `apt-get install wrk` (Debian/Ubuntu)"
        )
    return path


def wrk_version() -> str:
    done = subprocess.run([wrk_binary(), "-v"], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).splitlines()[0].split(" Copyright")[0].strip()


def run_wrk(base_url: str, script: str, args: list[str], load: Load, *, key: str) -> dict[str, Any]:
    """Run one wrk measurement and return the figures of bench/wrk/common.lua's ``done``,
    with latencies in milliseconds and ``rps`` (completed requests per second)."""
    command = [
        wrk_binary(),
        "--threads", str(load.threads),
        "--connections", str(load.connections),
        "--duration", f"{max(1, round(load.seconds))}s",
        "--timeout", f"{max(1, round(load.timeout))}s",
        "--script", str(SCRIPTS / script),
        base_url,
        "--",
        *args,
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "BENCH_API_KEY": key},
    )
    assert process.stdout is not None
    output: list[str] = []
    limited = 0
    try:
        for line in process.stdout:
            output.append(line)
            if line.startswith(LIMIT_MARKER):
                limited += 1
                if limited == load.threads:
                    process.send_signal(signal.SIGINT)  # wrk then stops and reports at once
        returncode = process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = [line for line in output if line.startswith(MARKER)]
    if returncode != 0 or not lines:
        raise BenchError(
            f"wrk failed (exit {returncode}) on {script}: {''.join(output).strip()[-500:]}"
        )
    raw = json.loads(lines[-1][len(MARKER) :])
    seconds = raw["duration_us"] / 1e6
    errors = raw["errors"]
    return {
        "requests": raw["requests"],
        "seconds": round(seconds, 3),
        "rps": raw["requests"] / seconds if seconds else 0.0,
        "non2xx": raw["non2xx"],
        "socket_errors": errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        "errors": errors,
        "latency_ms": {name: value / 1000 for name, value in raw["latency_us"].items()},
        "first_bad": raw["first_bad"],
        "threads": load.threads,
        "connections": load.connections,
    }

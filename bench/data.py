"""Data sets (``generate_taps``, cached in bench/cache/) and loading them (``load_taps``)."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.figures import Size
from bench.server import ROOT

CACHE = ROOT / "bench" / "cache"
MARKER = ".complete.json"
TAGS = 20_000
TEAMS = 50
TAGS_FILE = "interview-tags.csv"
TAPS_FILE = "interview-taps.csv"


def manage(*args: str, env: dict[str, str]) -> str:
    """Run ``manage.py`` with the harness's environment; its stdout, or BenchError."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(
            f"manage.py {' '.join(args)} failed (exit {done.returncode}):\n"
            f"{(done.stderr or done.stdout).strip()[-1500:]}"
        )
    return done.stdout


def generate_arguments(size: Size) -> list[str]:
    return ["--taps", str(size.taps), "--tags", str(TAGS), "--teams", str(TEAMS)]


def dataset(size: Size, env: dict[str, str]) -> tuple[Path, bool, float]:
    """The data set's directory, whether it came from the cache, and the seconds spent.

    A directory counts as complete only with the marker written after ``generate_taps``
    succeeded with the same arguments; anything else is generated again.
    """
    directory = CACHE / size.label
    arguments = generate_arguments(size)
    marker = directory / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == {"arguments": arguments}:
        return directory, True, 0.0
    shutil.rmtree(directory, ignore_errors=True)
    started = time.monotonic()
    manage("generate_taps", str(directory), *arguments, env=env)
    marker.write_text(json.dumps({"arguments": arguments}))
    return directory, False, time.monotonic() - started


_SUMMARY = re.compile(r"taps loaded: (\d+), skipped: (\d+), duplicates: (\d+)")


def load(directory: Path, env: dict[str, str], *, logs: Path) -> dict[str, Any]:
    """Run ``load_taps`` as a child of its own and measure it: wall time, and its peak
    RSS from the kernel's accounting of exactly that child (``wait4``)."""
    command = [
        sys.executable,
        "manage.py",
        "load_taps",
        "--tags",
        str(directory / TAGS_FILE),
        "--taps",
        str(directory / TAPS_FILE),
    ]
    started = time.monotonic()
    with (
        open(logs / "load_taps.stdout", "w+b") as stdout,
        open(logs / "load_taps.stderr", "w+b") as stderr,
    ):
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read().decode(), stderr.read().decode()
    if process.returncode != 0:
        raise BenchError(f"load_taps failed (exit {process.returncode}):\n{err.strip()[-1500:]}")
    match = _SUMMARY.search(out)
    if match is None:
        raise BenchError(f"load_taps printed no summary line: {out.strip()[-500:]}")
    loaded, skipped, duplicates = map(int, match.groups())
    return {
        "command": " ".join(["manage.py", *command[2:]]),
        "seconds": round(seconds, 3),
        "taps": loaded,
        "skipped": skipped,
        "duplicates": duplicates,
        "taps_per_second": loaded / seconds,
        "peak_rss_bytes": usage.ru_maxrss * 1024,  # Linux reports kilobytes
        "summary": out.strip().splitlines()[-1],
    }

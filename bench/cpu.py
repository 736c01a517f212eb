"""Where the machine's CPU went during a measurement, from /proc: the service's workers,
PostgreSQL (every ``postgres`` process), Redis, the load generator (this process's
children) and the rest. Divided by the requests served, it says what one request costs
each part, so how far each part scales on its own (docs/SCALING.md)."""

import os
import resource
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PARTS = ("service", "postgresql", "redis", "load generator", "other")
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Snapshot:
    busy: float  # seconds of CPU the whole machine spent outside idle and iowait
    parts: dict[str, float]


def _process_seconds(pid: int) -> tuple[str, float] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone since the directory was listed
        return None
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    # utime and stime are the stat file's 14th and 15th fields; name ends the 2nd.
    return name, (int(fields[11]) + int(fields[12])) / _TICKS


def _machine_busy_seconds() -> float:
    with open("/proc/stat") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:]]
    idle, iowait = ticks[3], ticks[4]
    # guest time is already counted in user time
    return (sum(ticks[:8]) - idle - iowait) / _TICKS


def snapshot(service_pids: Iterable[int]) -> Snapshot:
    service = set(service_pids)
    parts = dict.fromkeys(PARTS, 0.0)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        found = _process_seconds(pid)
        if found is None:
            continue
        name, seconds = found
        if pid in service:
            parts["service"] += seconds
        elif name == "postgres":
            parts["postgresql"] += seconds
        elif name.startswith("redis-server"):
            parts["redis"] += seconds
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    parts["load generator"] = children.ru_utime + children.ru_stime
    return Snapshot(busy=_machine_busy_seconds(), parts=parts)


def spent(before: Snapshot, after: Snapshot, *, requests: int, seconds: float) -> dict[str, float]:
    """Microseconds of CPU per request for each part, and how busy the machine was
    (``busy_cores``: cores' worth of CPU in use on average)."""
    used = {part: max(0.0, after.parts[part] - before.parts[part]) for part in PARTS}
    busy = max(0.0, after.busy - before.busy)
    used["other"] = max(0.0, busy - sum(used.values()))
    figures = {f"{part}_us": 1e6 * used[part] / requests if requests else 0.0 for part in PARTS}
    figures["busy_cores"] = busy / seconds if seconds else 0.0
    return figures

"""The measurements against a running server, each from a process of its own: wrk for
HTTP, ``bench.live`` for websockets."""

import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from bench import cpu
from bench.errors import BenchError
from bench.scenarios import LATENCY_QUERIES, REPEATED_QUERY, THROUGHPUT_QUERY, Profile, Query
from bench.server import ROOT, Server, connections_per_worker, rss_bytes
from bench.wrk import Load, run_wrk

INGEST_ID_BASE = 10**12  # far above any data set's ids (1..N)
LIVE_ID_BASE = 8 * 10**12  # above what the ingest measurement can reach
# Beyond the live client's own budget for posting: connecting the sockets, closing them.
LIVE_MARGIN_SECONDS = 120
WARM_UP_SECONDS = 1


def analytics_args(
    query: Query,
    *,
    baseline: bool,
    stride: int,
    limit: int,
    fixed: bool,
    threads: int,
    tag: int | None = None,
) -> list[str]:
    return [
        *query.wrk_args(baseline=baseline, tag=tag),
        str(stride),
        str(limit),
        "1" if fixed else "0",
        str(threads),
    ]


def cold(
    server: Server,
    key: str,
    query: Query,
    profile: Profile,
    *,
    baseline: bool,
    tag: int | None = None,
) -> dict[str, Any]:
    """One connection, one request at a time, each on a new range. The baseline makes
    fewer requests spread over the same ranges (a larger stride)."""
    if baseline:
        requests, seconds = profile.baseline_requests, profile.baseline_seconds
        stride = max(1, profile.latency_requests // requests)
    else:
        requests, seconds, stride = profile.latency_requests, profile.latency_seconds, 1
    args = analytics_args(
        query, baseline=baseline, stride=stride, limit=requests, fixed=False, threads=1, tag=tag
    )
    figures = run_wrk(server.base_url, "analytics.lua", args, Load(1, 1, seconds, seconds), key=key)
    return {**figures, "stride": stride}


def warm_up(server: Server, key: str, tag: int | None = None) -> None:
    """Every query shape for a second from 8 connections, on ranges two years before the
    measured ones (their answers are never asked again): each worker's request threads
    open their database connections and fill the label caches, which the first measured
    query would otherwise pay for as if it were the query's own cost."""
    load = Load(2, 8, WARM_UP_SECONDS, timeout=10)
    for query in LATENCY_QUERIES:
        earlier = replace(query, base=query.base - timedelta(days=730))
        args = analytics_args(
            earlier, baseline=False, stride=1, limit=0, fixed=False, threads=2, tag=tag
        )
        run_wrk(server.base_url, "analytics.lua", args, load, key=key)


def latency(
    server: Server, key: str, profile: Profile, *, tag: int | None = None, baseline: bool = True
) -> list[dict[str, Any]]:
    """Every query of LATENCY_QUERIES, cold, and with ``baseline`` each one's baseline;
    ``tag`` is the team's tag the one-tag queries filter by."""
    warm_up(server, key, tag)
    measured = []
    for query in LATENCY_QUERIES:
        rollup = cold(server, key, query, profile, baseline=False, tag=tag)
        measured.append({"query": query.slug, "title": query.title, "rollup": rollup})
    if not baseline:
        return measured
    # The baseline after all rollup queries: its raw-table scans fill the page cache,
    # which would flatter the rollup's cold figures had they come after.
    for entry, query in zip(measured, LATENCY_QUERIES, strict=True):
        entry["baseline"] = cold(server, key, query, profile, baseline=True, tag=tag)
    return measured


def repeated(server: Server, key: str, profile: Profile) -> dict[str, Any]:
    query = REPEATED_QUERY
    warm_up = analytics_args(query, baseline=False, stride=1, limit=1, fixed=True, threads=1)
    run_wrk(server.base_url, "analytics.lua", warm_up, Load(1, 1, 30), key=key)
    args = analytics_args(
        query, baseline=False, stride=1, limit=profile.repeated_requests, fixed=True, threads=1
    )
    load = Load(1, 1, profile.latency_seconds)
    return {**run_wrk(server.base_url, "analytics.lua", args, load, key=key), "title": query.title}


def throughput(server: Server, key: str, profile: Profile) -> dict[str, dict[str, Any]]:
    load = Load(2, profile.throughput_connections, profile.throughput_seconds, timeout=10)
    measured = {}
    for name, fixed in (("distinct", False), ("repeated", True)):
        args = analytics_args(
            THROUGHPUT_QUERY, baseline=False, stride=1, limit=0, fixed=fixed, threads=2
        )
        measured[name] = with_cpu(
            server, partial(run_wrk, server.base_url, "analytics.lua", args, load, key=key)
        )
    return measured


def with_cpu(server: Server, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``measure()``'s wrk figures, with the CPU each part of the machine spent per request."""
    before = cpu.snapshot(server.worker_pids())
    figures = measure()
    after = cpu.snapshot(server.worker_pids())
    figures["cpu"] = cpu.spent(
        before, after, requests=figures["requests"], seconds=figures["seconds"]
    )
    return figures


def ingest(server: Server, key: str, tags: list[int], profile: Profile) -> dict[str, Any]:
    clients = profile.ingest_clients
    load = Load(clients, clients, profile.ingest_seconds, timeout=30)
    args = [",".join(map(str, tags)), str(profile.ingest_batch), str(INGEST_ID_BASE)]
    figures = with_cpu(server, partial(run_wrk, server.base_url, "ingest.lua", args, load, key=key))
    stored = figures["requests"] - figures["non2xx"]
    rate = profile.ingest_batch * stored / figures["seconds"] if figures["seconds"] else 0.0
    return {**figures, "batch": profile.ingest_batch, "taps_per_second": rate}


def live(
    server: Server, *, read_key: str, ingest_key: str, tags: list[int], profile: Profile, log: Path
) -> dict[str, Any]:
    """Run bench.live: sockets first, then (once each worker's share is counted) taps."""
    command = [
        sys.executable, "-m", "bench.live",
        "--ws-url", f"ws://127.0.0.1:{server.port}/ws/v1/taps",
        "--http-url", server.base_url,
        "--tags", ",".join(map(str, tags[:20])),
        "--sockets", str(profile.live_sockets),
        "--taps", str(profile.live_taps),
        "--id-base", str(LIVE_ID_BASE),
        "--seconds", str(profile.live_seconds),
    ]  # fmt: skip
    with log.open("w") as errors:
        process = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
            text=True,
        )  # fmt: skip
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(f"{read_key} {ingest_key}\n")
            process.stdin.flush()
            ready = process.stdout.readline()
            if not ready.startswith("READY"):
                process.wait(timeout=30)
                raise BenchError(f"bench.live failed to connect its sockets; see {log}")
            per_worker = connections_per_worker(server)
            out, _ = process.communicate("go\n", timeout=profile.live_seconds + LIVE_MARGIN_SECONDS)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if process.returncode != 0 or not lines:
        raise BenchError(f"bench.live failed (exit {process.returncode}); see {log}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    result["per_worker"] = {str(pid): count for pid, count in per_worker.items()}
    counted = sum(per_worker.values())
    result["per_worker_text"] = (
        " + ".join(str(count) for count in per_worker.values())
        if counted == result["sockets"]
        else f"{' + '.join(map(str, per_worker.values()))} seen of {result['sockets']}"
    )
    return result


def processes(server: Server) -> list[dict[str, Any]]:
    main = server.process.pid
    found = [{"role": "uvicorn main", "pid": main, "rss_bytes": rss_bytes(main)}]
    found += [
        {"role": "worker", "pid": pid, "rss_bytes": rss_bytes(pid)} for pid in server.worker_pids()
    ]
    return found


_STATUS = re.compile(r'HTTP/1\.1" (\d{3})')


def log_lines(text: str) -> dict[str, Any]:
    """Answers by status (uvicorn's access log), and warning and error lines."""
    statuses: Counter[str] = Counter()
    warnings = errors = 0
    for line in text.splitlines():
        if match := _STATUS.search(line):
            statuses[match[1]] += 1
        elif " WARNING " in line or line.startswith("WARNING:"):
            warnings += 1
        elif " ERROR " in line or line.startswith("ERROR:"):
            errors += 1
    return {"statuses": dict(sorted(statuses.items())), "warnings": warnings, "errors": errors}


def server_log(path: Path, *, measured_bytes: int) -> dict[str, Any]:
    """What the server logged during the measurements (the first ``measured_bytes``),
    and after them until it stopped: sockets closed by the live client end there."""
    text = path.read_bytes()
    return {
        "measured": log_lines(text[:measured_bytes].decode(errors="replace")),
        "stopping": log_lines(text[measured_bytes:].decode(errors="replace")),
    }

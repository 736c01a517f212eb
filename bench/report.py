"""docs/BENCHMARKS.md from a run's figures: pure functions of the result dictionary, so
the Markdown can be tested without running anything."""

from collections.abc import Sequence
from typing import Any

from bench import cpu
from bench.figures import ratio

MB = 1_000_000
Row = Sequence[object]


def table(headers: Sequence[str], rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def times(value: float | None) -> str:
    return "–" if value is None else f"×{value:.2f}" if value < 10 else f"×{value:.0f}"


def number(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def megabytes(value: float | None) -> str:
    return "–" if value is None else f"{value / MB:,.0f} MB"


def verdict(met: bool | None) -> str:
    return "–" if met is None else "met" if met else "**missed**"


def _latency(figures: dict[str, Any] | None, name: str) -> float | None:
    """A latency percentile in ms, or None when no request completed."""
    if not figures or not figures.get("requests"):
        return None
    value: float = figures["latency_ms"][name]
    return value


def _cpu_cells(figures: dict[str, Any]) -> list[str]:
    spent = figures.get("cpu")
    if spent is None:  # a run from before the harness measured it
        return ["–"] * (len(cpu.PARTS) + 1)
    return [number(spent[f"{part}_us"]) for part in cpu.PARTS] + [f"{spent['busy_cores']:.2f}"]


def _at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def _at_least(value: float | None, limit: float) -> bool | None:
    return None if value is None else value >= limit


def all_non2xx(size: dict[str, Any]) -> int:
    """Non-2xx answers over every HTTP measurement of a size (must be 0)."""
    measured = [
        *(entry["rollup"] for entry in size["latency"]),
        *(entry["baseline"] for entry in size["latency"]),
        size["repeated"],
        *size["throughput"].values(),
        size["ingest"],
    ]
    return sum(figures["non2xx"] for figures in measured) + size["live"]["non2xx"]


def targets(size: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(figure, target, this run, met) for each target of issue 5."""
    rows: list[tuple[str, str, str, bool | None]] = []
    load = size["load"]
    rows.append(
        (
            "load_taps throughput",
            "≥ 200,000 taps/s",
            f"{number(load['taps_per_second'])} taps/s",
            _at_least(load["taps_per_second"], 200_000),
        )
    )
    rows.append(
        (
            "load_taps peak RSS",
            "≤ 250 MB",
            megabytes(load["peak_rss_bytes"]),
            _at_most(load["peak_rss_bytes"], 250 * MB),
        )
    )
    for entry in size["latency"]:
        if entry["query"].startswith("year-day-"):
            p50, p99 = _latency(entry["rollup"], "p50"), _latency(entry["rollup"], "p99")
            met = None if p50 is None or p99 is None else p50 <= 8 and p99 <= 25
            rows.append(
                (
                    f"{entry['title']}, cold",
                    "p50 ≤ 8 ms, p99 ≤ 25 ms",
                    f"{ms(p50)} / {ms(p99)} ms",
                    met,
                )
            )
    repeated = _latency(size["repeated"], "p50")
    rows.append(
        ("the same query repeated", "p50 ≤ 2 ms", f"{ms(repeated)} ms", _at_most(repeated, 2))
    )
    worst = max(
        size["latency"], key=lambda entry: _latency(entry["rollup"], "p99") or 0.0, default=None
    )
    worst_p99 = _latency(worst["rollup"], "p99") if worst else None
    rows.append(
        (
            "every query above, cold",
            "p99 ≤ 50 ms",
            f"worst {ms(worst_p99)} ms ({worst['title'] if worst else '–'})",
            _at_most(worst_p99, 50),
        )
    )
    for name, limit in (("distinct", 500), ("repeated", 1500)):
        rps = size["throughput"][name]["rps"]
        rows.append(
            (
                f"throughput, {name} month-by-day queries",
                f"≥ {limit:,} requests/s",
                f"{number(rps)} requests/s",
                _at_least(rps, limit),
            )
        )
    ingest = size["ingest"]["taps_per_second"]
    rows.append(
        ("ingest", "≥ 50,000 taps/s", f"{number(ingest)} taps/s", _at_least(ingest, 50_000))
    )
    live = size["live"]["from_response_ms"].get("p99")
    rows.append(
        (
            "live fan-out, from the ingest response",
            "p99 ≤ 100 ms",
            f"{ms(live)} ms",
            _at_most(live, 100),
        )
    )
    worker = max((w["rss_bytes"] or 0 for w in size["workers"]), default=None)
    rows.append(
        (
            "worker RSS after the run",
            "≤ 200 MB",
            f"largest {megabytes(worker)}",
            _at_most(worker, 200 * MB),
        )
    )
    bad = all_non2xx(size)
    rows.append(("non-2xx answers, every measurement", "0", str(bad), bad == 0))
    return rows


def latency_figures(size: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """query -> (title, wrk figures) of the rollup latencies, the repeated query included."""
    named = {entry["query"]: (entry["title"], entry["rollup"]) for entry in size["latency"]}
    named["repeated"] = ("the same query repeated", size["repeated"])
    return named


def growth_rows(small: dict[str, Any], large: dict[str, Any]) -> list[Row]:
    """Each latency p50 and p99 at the largest size over the same at the smallest."""
    before = latency_figures(small)
    rows: list[Row] = []
    for query, (title, after) in latency_figures(large).items():
        if query not in before:
            continue
        earlier = before[query][1]
        p50 = ratio(_latency(after, "p50"), _latency(earlier, "p50"))
        p99 = ratio(_latency(after, "p99"), _latency(earlier, "p99"))
        met = None if p50 is None or p99 is None else p50 <= 1.3 and p99 <= 1.3
        rows.append((title, times(p50), times(p99), "≤ 1.3", verdict(met)))
    return rows


def _mean(values: Sequence[float | None]) -> float | None:
    """The mean, or None if any value is missing."""
    present = [value for value in values if value is not None]
    return sum(present) / len(present) if present and len(present) == len(values) else None


def growth_check_rows(check: dict[str, Any]) -> list[Row]:
    """Each query's p50 at the two sizes in every round of the growth check, the p50
    ratio of each round, and the mean p50 and p99 ratios over the rounds."""
    small, large = check["sizes"]
    rounds = [
        {label: {entry["query"]: entry for entry in passes[label]} for label in (small, large)}
        for passes in check["rounds"]
    ]
    rows: list[Row] = []
    for entry in check["rounds"][0][small]:
        query = entry["query"]
        p50s = {
            label: [_latency(measured[label][query]["rollup"], "p50") for measured in rounds]
            for label in (small, large)
        }
        p50_ratios = [ratio(a, b) for a, b in zip(p50s[large], p50s[small], strict=True)]
        p99_ratios = [
            ratio(
                _latency(measured[large][query]["rollup"], "p99"),
                _latency(measured[small][query]["rollup"], "p99"),
            )
            for measured in rounds
        ]
        p50, p99 = _mean(p50_ratios), _mean(p99_ratios)
        # Judged by the p50: of 200 requests, the p99 is the second slowest, which on
        # this machine moved by half between rounds a minute apart.
        met = None if p50 is None else p50 <= 1.3
        rows.append(
            (
                entry["title"],
                ", ".join(ms(value) for value in p50s[small]),
                ", ".join(ms(value) for value in p50s[large]),
                ", ".join(times(value) for value in p50_ratios),
                times(p50),
                times(p99),
                "≤ 1.3",
                verdict(met),
            )
        )
    return rows


def _growth_check_section(check: dict[str, Any]) -> str:
    small, large = check["sizes"]
    rounds = len(check["rounds"])
    requests = check["rounds"][0][small][0]["rollup"]["requests"]
    return "\n\n".join(
        [
            f"## Growth, measured in turn: {large} over {small}",
            f"After the last size, {small} and {large} were served again in turn, "
            f"{rounds} times ({', '.join([small, large] * rounds)}), each pass as in its "
            f"size's run (the warm-up, then {requests} cold requests a query, without the "
            "baselines), with Redis emptied first: the two sizes' figures then come from "
            "the same minutes "
            "of the machine, whose speed drifts over a run. Ratios of the p50 in each "
            "round; the mean over the rounds, of the p50 and the p99; the target judged by "
            "the p50's, since a p99 of a few hundred requests is set by two or three slow ones "
            f"({check['seconds']:.0f} s).",
            table(
                [
                    "query",
                    f"{small} p50, ms",
                    f"{large} p50, ms",
                    "p50 ratio, each round",
                    "p50 ratio, mean",
                    "p99 ratio, mean",
                    "target",
                    "p50 met?",
                ],
                growth_check_rows(check),
            ),
        ]
    )


def _latency_cells(figures: dict[str, Any]) -> list[str]:
    return [str(figures["requests"]), *(ms(_latency(figures, p)) for p in ("p50", "p95", "p99"))]


def _probe_ms(probe: dict[str, float]) -> str:
    return f"{probe['python_ms']:.0f} / {probe['postgresql_ms']:.0f}"


def _run_section(meta: dict[str, Any]) -> str:
    git = meta["git"]
    machine = meta["machine"]
    load = meta["load_average"]
    rows = [
        ("command", f"`{meta['command']}`"),
        ("date", meta["date"]),
        (
            "commit",
            f"{git['commit'][:12]} ({git['branch']}{', dirty tree' if git['dirty'] else ''})",
        ),
        ("server", meta["server"]),
        ("data", meta["data"]),
        ("harness time", f"{meta['seconds']:.0f} s"),
        (
            "load average (1, 5, 15 min)",
            f"{load['start']} at the start, {load['end']} at the end",
        ),
    ]
    # Runs from before the probe have none.
    if probe := meta.get("speed_probe"):
        rows.append(
            (
                "speed probe: a Python loop / a PostgreSQL sum, a million numbers each "
                "(ms, median of 5)",
                f"{_probe_ms(probe['start'])} at the start, {_probe_ms(probe['end'])} at the end",
            )
        )
    versions = meta["versions"]
    return "\n\n".join(
        [
            table(["run", ""], rows),
            table(
                ["cores", "memory", "CPU", "kernel"],
                [
                    (
                        machine["cores"],
                        f"{machine['memory_bytes'] / 2**30:.1f} GiB",
                        machine["cpu"],
                        machine["kernel"],
                    )
                ],
            ),
            table(list(versions), [list(versions.values())]),
        ]
    )


def _size_section(size: dict[str, Any]) -> str:
    load, team, live = size["load"], size["team"], size["live"]
    data = size["data"]
    parts = [
        f"## {size['size']} taps",
        f"Data: `{data['generate']}` ({'cached' if data['cached'] else 'generated'}). "
        f"Queries and live taps as team {team['id']}, the team with the most taps: "
        f"{team['taps']:,} of {team['all_taps']:,}.",
        "### Load (`load_taps` into an empty database)",
        table(
            ["taps", "wall time", "taps/s", "peak RSS", "then VACUUM ANALYZE, CHECKPOINT"],
            [
                (
                    f"{load['taps']:,}",
                    f"{load['seconds']:.1f} s",
                    number(load["taps_per_second"]),
                    megabytes(load["peak_rss_bytes"]),
                    f"{load['vacuum_analyze_seconds']:.1f} s",
                )
            ],
        ),
        table(
            ["table", "rows (estimate)", "size with indexes"],
            [
                (f"`{name}`", number(figures["rows"]), megabytes(figures["bytes"]))
                for name, figures in size["tables"].items()
            ],
        ),
        "### Latency, cold: a new range on every request, 1 connection (ms)",
        "After a warm-up (every query shape for a second on ranges two years earlier, which "
        "opens each worker's database connections). Baseline: the same requests answered "
        "by `Trunc` + `Sum` over the raw taps table.",
        table(
            [
                "query",
                "requests",
                "p50",
                "p95",
                "p99",
                "baseline requests",
                "baseline p50",
                "baseline p99",
                "baseline / rollup p50",
            ],
            [
                (
                    entry["title"],
                    *_latency_cells(entry["rollup"]),
                    entry["baseline"]["requests"],
                    ms(_latency(entry["baseline"], "p50")),
                    ms(_latency(entry["baseline"], "p99")),
                    times(
                        ratio(_latency(entry["baseline"], "p50"), _latency(entry["rollup"], "p50"))
                    ),
                )
                for entry in size["latency"]
            ],
        ),
        "### The same query repeated, after one warm-up request (ms)",
        table(
            ["query", "requests", "p50", "p95", "p99"],
            [(size["repeated"]["title"], *_latency_cells(size["repeated"]))],
        ),
        "### Throughput at saturation",
        table(
            [
                "workload",
                "threads × connections",
                "seconds",
                "requests/s",
                "p50 ms",
                "p99 ms",
                "non-2xx",
                "socket errors",
            ],
            [
                (
                    f"{name} month-by-day queries",
                    f"{figures['threads']} × {figures['connections']}",
                    f"{figures['seconds']:.1f}",
                    number(figures["rps"]),
                    ms(_latency(figures, "p50")),
                    ms(_latency(figures, "p99")),
                    figures["non2xx"],
                    figures["socket_errors"],
                )
                for name, figures in size["throughput"].items()
            ],
        ),
        "### Ingest: `POST /v1/taps`, new ids",
        table(
            [
                "clients",
                "taps per request",
                "seconds",
                "taps/s",
                "requests",
                "p50 ms",
                "p99 ms",
                "non-2xx",
                "socket errors",
            ],
            [
                (
                    size["ingest"]["connections"],
                    size["ingest"]["batch"],
                    f"{size['ingest']['seconds']:.1f}",
                    number(size["ingest"]["taps_per_second"]),
                    size["ingest"]["requests"],
                    ms(_latency(size["ingest"], "p50")),
                    ms(_latency(size["ingest"], "p99")),
                    size["ingest"]["non2xx"],
                    size["ingest"]["socket_errors"],
                )
            ],
        ),
        "### CPU per request at saturation (µs)",
        "CPU time each part of the machine spent during the measurement (from /proc), over "
        "the requests served. Busy: how many of the machine's cores were in use on average. "
        "Other: the kernel's interrupts and whatever else ran.",
        table(
            ["workload", *cpu.PARTS, "busy"],
            [
                (workload, *_cpu_cells(figures))
                for workload, figures in (
                    *(
                        (f"{name} month-by-day queries", figures)
                        for name, figures in size["throughput"].items()
                    ),
                    (f"ingest, {size['ingest']['batch']} taps a request", size["ingest"]),
                )
            ],
        ),
        "### Live: websocket fan-out of taps posted one at a time (ms)",
        "From the response: receipt minus the ingest response's arrival (negative when the "
        "socket had the tap first: it is published at commit). From the request: receipt "
        "minus the request's sending. Client CPU: the client's CPU time over its wall time "
        "while posting (near 100%: its own queueing delays receipts).",
        table(
            [
                "sockets",
                "per worker",
                "closed by the server",
                "taps",
                "pairs received",
                "from response p50",
                "p99",
                "negative",
                "from request p50",
                "p99",
                "gaps",
                "non-2xx",
                "client CPU",
            ],
            [
                (
                    live["sockets"],
                    live["per_worker_text"],
                    live["sockets_closed_by_server"],
                    f"{live['taps_stored']} of {live['taps_wanted']}",
                    f"{live['pairs_received']:,} of {live['pairs_expected']:,}",
                    ms(live["from_response_ms"].get("p50")),
                    ms(live["from_response_ms"].get("p99")),
                    live["negative_from_response"],
                    ms(live["from_request_ms"].get("p50")),
                    ms(live["from_request_ms"].get("p99")),
                    live["gaps"],
                    live["non2xx"],
                    f"{live['client_cpu_share']:.0%}",
                )
            ],
        ),
        "### Server log",
        table(
            ["while", "answers by status", "warning lines", "error lines"],
            [
                (
                    {"measured": "during the measurements", "stopping": "after them, to the end"}[
                        when
                    ],
                    ", ".join(f"{status}: {n:,}" for status, n in log["statuses"].items()) or "–",
                    log["warnings"],
                    log["errors"],
                )
                for when, log in size["server_log"].items()
            ],
        ),
        "### Server processes at the end of the run (VmRSS)",
        table(
            ["process", "pid", "RSS"],
            [(w["role"], w["pid"], megabytes(w["rss_bytes"])) for w in size["workers"]],
        ),
        "### Targets of issue 5 (set for bench-10M)",
        table(
            ["figure", "target", "this run", "met?"],
            [(f, t, v, verdict(m)) for f, t, v, m in targets(size)],
        ),
    ]
    return "\n\n".join(parts)


def render(run: dict[str, Any]) -> str:
    """The whole of docs/BENCHMARKS.md for a run."""
    meta, sizes = run["meta"], run["sizes"]
    parts = [
        "# Benchmarks",
        "Written by `python -m bench run` from the figures of one run (raw figures: "
        "`bench/results/`). Analysis and notes live in hand-written docs, not here.",
    ]
    if meta["quick"]:
        parts.append(
            "**Smoke run (`--quick`): few requests per figure; it shows that the harness "
            "works, not how fast the service is.**"
        )
    parts.append(_run_section(meta))
    parts += [_size_section(size) for size in sizes]
    if len(sizes) > 1:
        small, large = min(sizes, key=lambda s: s["taps"]), max(sizes, key=lambda s: s["taps"])
        parts += [
            f"## Growth: {large['size']} over {small['size']}",
            table(["query", "p50 ratio", "p99 ratio", "target", "met?"], growth_rows(small, large)),
        ]
    if run.get("growth_check"):
        parts.append(_growth_check_section(run["growth_check"]))
    return "\n\n".join(parts) + "\n"

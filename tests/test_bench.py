"""The benchmark harness's pure parts (bench/): sizes, percentiles, the report, and the
baseline endpoint it serves beside the real one. The harness itself runs in CI as
``python -m bench run --sizes 100k --quick``; nothing here times anything."""

import copy
import os
import time
from typing import Any

import pytest
from django.http import QueryDict
from django.test import Client

from analytics.filters import read_tap_query
from bench import cpu, machine
from bench.baseline import trunc_sum
from bench.cli import parse_options
from bench.errors import BenchError
from bench.figures import parse_sizes, percentile, ratio, summarize
from bench.measure import log_lines
from bench.report import growth_check_rows, growth_rows, render, targets
from bench.scenarios import LATENCY_QUERIES, REPEATED_QUERY
from teams.keys import IssuedKey
from teams.models import Tag
from tests.conftest import add_taps, in_ci


def test_sizes_keep_their_order_and_labels() -> None:
    sizes = parse_sizes("100k, 1M,10M,2.5k,7")
    assert [size.taps for size in sizes] == [100_000, 1_000_000, 10_000_000, 2_500, 7]
    assert [size.label for size in sizes] == ["100k", "1M", "10M", "2.5k", "7"]
    assert [size.slug for size in sizes] == ["100k", "1m", "10m", "2_5k", "7"]


@pytest.mark.parametrize("text", ["", "10x", "0", "-5", "1M,1000k", "k", "1 M"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_sizes(text)


def test_the_command_line_refuses_a_database_prefix_postgres_would_need_quoted() -> None:
    assert parse_options(["run", "--db-prefix", "bench_h_"]).db_prefix == "bench_h_"
    with pytest.raises(SystemExit):
        parse_options(["run", "--db-prefix", "Bench-"])


def test_cpu_per_request_divides_each_part_by_the_requests() -> None:
    before = cpu.Snapshot(busy=10.0, parts={**dict.fromkeys(cpu.PARTS, 1.0), "redis": 2.0})
    after = cpu.Snapshot(
        busy=13.0,
        parts={"service": 2.5, "postgresql": 1.5, "redis": 2.1, "load generator": 1.4, "other": 0},
    )
    spent = cpu.spent(before, after, requests=1000, seconds=2.0)
    assert spent == pytest.approx(
        {"service_us": 1500, "postgresql_us": 500, "redis_us": 100, "load generator_us": 400,
         "other_us": 500, "busy_cores": 1.5}
    )  # fmt: skip
    assert cpu.spent(before, before, requests=0, seconds=0)["service_us"] == 0


def test_a_cpu_snapshot_counts_the_service_processes_it_is_given() -> None:
    def burn() -> float:
        deadline = time.process_time() + 0.2
        while time.process_time() < deadline:
            pass
        return time.process_time()

    before = cpu.snapshot([os.getpid()])
    burn()
    after = cpu.snapshot([os.getpid()])
    elsewhere = cpu.snapshot([])
    assert after.parts["service"] - before.parts["service"] >= 0.15
    assert elsewhere.parts["service"] == 0
    assert after.busy - before.busy >= 0.15


def test_percentiles_are_nearest_rank_samples() -> None:
    samples = list(range(100, 0, -1))  # 1..100, unsorted
    assert percentile(samples, 50) == 50
    assert percentile(samples, 95) == 95
    assert percentile(samples, 99) == 99
    assert percentile(samples, 100) == 100
    assert percentile([3.5, 1.0], 50) == 1.0
    assert percentile([7.0], 99) == 7.0


def test_a_percentile_needs_samples_and_a_sane_rank() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 0)


def test_summaries_keep_negative_samples() -> None:
    assert summarize([-2.0, 1.0, 4.0]) == {"n": 3, "min": -2.0, "p50": 1.0, "p95": 4.0,
                                           "p99": 4.0, "max": 4.0}  # fmt: skip
    assert summarize([]) == {"n": 0}


def test_ratios_need_both_figures() -> None:
    assert ratio(30.0, 10.0) == 3.0
    assert ratio(None, 10.0) is None
    assert ratio(30.0, None) is None
    assert ratio(30.0, 0.0) is None


def test_queries_switch_to_the_baseline_routes() -> None:
    year_by_day = LATENCY_QUERIES[0]
    assert year_by_day.wrk_args(baseline=False) == [
        "GET", "/v1/analytics/taps", "day", "UTC", "1669852800", "365", "",
    ]  # fmt: skip
    assert year_by_day.wrk_args(baseline=True)[:2] == ["GET", "/bench/baseline/taps"]
    seed = LATENCY_QUERIES[-1]
    assert seed.wrk_args(baseline=False)[:2] == ["POST", "/v1/api/tap/analytics"]
    assert seed.wrk_args(baseline=True)[:2] == ["POST", "/bench/baseline/seed"]
    grouped = [query for query in LATENCY_QUERIES if query.group_by_tag]
    assert {query.wrk_args(baseline=False)[-1] for query in grouped} == {"&group_by=tag"}
    one_tag = [query for query in LATENCY_QUERIES if query.one_tag]
    assert {query.wrk_args(baseline=False, tag=7)[-1] for query in one_tag} == {"&tag=7"}
    assert {query.wrk_args(baseline=True, tag=7)[1] for query in one_tag} == {
        "/bench/baseline/taps"
    }
    with pytest.raises(ValueError, match="needs a tag"):
        one_tag[0].wrk_args(baseline=False)
    assert len({query.slug for query in LATENCY_QUERIES}) == len(LATENCY_QUERIES) == 13


def http(p50: float, p95: float, p99: float, *, requests: int = 300, rps: float = 10.0,
         non2xx: int = 0) -> dict[str, Any]:  # fmt: skip
    return {
        "requests": requests, "seconds": 10.0, "rps": rps, "non2xx": non2xx,
        "socket_errors": 0, "threads": 1, "connections": 1,
        "latency_ms": {"min": p50 / 2, "mean": p50, "max": p99 * 2, "p50": p50, "p95": p95,
                       "p99": p99},
    }  # fmt: skip


def size_figures(*, scale: float = 1.0) -> dict[str, Any]:
    """One size's figures as cli.run_size returns them; latencies times ``scale``."""
    latency = [
        {
            "query": query.slug,
            "title": query.title,
            "rollup": http(5 * scale, 7 * scale, 9 * scale),
            "baseline": http(100.0, 120.0, 150.0, requests=50),
        }
        for query in LATENCY_QUERIES
    ]
    return {
        "size": "100k", "taps": 100_000,
        "data": {"generate": "generate_taps bench/cache/100k --taps 100000", "cached": True},
        "team": {"id": 1, "taps": 28_811, "all_taps": 112_953},
        "load": {"taps": 100_000, "seconds": 2.0, "taps_per_second": 50_000.0,
                 "peak_rss_bytes": 94_000_000, "vacuum_analyze_seconds": 0.5},
        "tables": {"analytics_tap": {"rows": 100_000, "bytes": 18_000_000}},
        "latency": latency,
        "repeated": {**http(1.5, 1.8, 2.5), "title": REPEATED_QUERY.title},
        "throughput": {"distinct": http(50, 80, 90, rps=600.0),
                       "repeated": {**http(20, 30, 40, rps=1200.0), "cpu": {
                           "service_us": 1210.4, "postgresql_us": 180.0, "redis_us": 45.5,
                           "load generator_us": 100.0, "other_us": 30.0, "busy_cores": 1.97}}},
        "ingest": {**http(400, 700, 800, requests=20), "batch": 1000,
                   "taps_per_second": 9_000.0},
        "live": {"sockets": 500, "per_worker_text": "260 + 240", "taps_stored": 200,
                 "taps_wanted": 200, "sockets_closed_by_server": 0, "client_cpu_share": 0.25,
                 "pairs_received": 100_000, "pairs_expected": 100_000,
                 "negative_from_response": 12, "gaps": 0, "non2xx": 0,
                 "from_response_ms": {"n": 100_000, "p50": 3.0, "p99": 40.0},
                 "from_request_ms": {"n": 100_000, "p50": 30.0, "p99": 90.0}},
        "workers": [{"role": "worker", "pid": 10, "rss_bytes": 120_000_000},
                    {"role": "worker", "pid": 11, "rss_bytes": 210_000_000}],
        "server_log": {"measured": {"statuses": {"200": 3000}, "warnings": 0, "errors": 0},
                       "stopping": {"statuses": {}, "warnings": 0, "errors": 2}},
    }  # fmt: skip


META = {
    "command": "python -m bench run --sizes 100k",
    "date": "2025-01-01 12:00 UTC",
    "quick": False,
    "machine": {"cores": 2, "memory_bytes": 24 * 2**30, "cpu": "AMD EPYC", "kernel": "6.1"},
    "versions": {"Python": "3.11.7", "Django": "5.2.19", "wrk": "wrk 4.1.0"},
    "git": {"commit": "0123456789abcdef", "branch": "bench-harness", "dirty": True},
    "server": "scripts/serve",
    "data": "generate_taps --taps N --tags 20000 --teams 50",
    "seconds": 321.0,
    "load_average": {"start": "0.50 0.40 0.30", "end": "2.00 1.00 0.50"},
    "speed_probe": {
        "start": {"python_ms": 61.4, "postgresql_ms": 88.6},
        "end": {"python_ms": 120.2, "postgresql_ms": 170.0},
    },
}


def test_the_report_tabulates_the_run() -> None:
    text = render({"meta": META, "sizes": [size_figures()]})
    assert "| command | `python -m bench run --sizes 100k` |" in text
    assert "| commit | 0123456789ab (bench-harness, dirty tree) |" in text
    assert "| 2 | 24.0 GiB | AMD EPYC | 6.1 |" in text
    assert "| 0.50 0.40 0.30 at the start, 2.00 1.00 0.50 at the end |" in text
    assert "(ms, median of 5) | 61 / 89 at the start, 120 / 170 at the end |" in text
    assert "| 3.11.7 | 5.2.19 | wrk 4.1.0 |" in text
    assert "| 100,000 | 2.0 s | 50,000 | 94 MB | 0.5 s |" in text
    assert "| a year by day, UTC | 300 | 5.00 | 7.00 | 9.00 | 50 | 100.0 | 150.0 | ×20 |" in text
    assert "| a year by day, UTC, 2023 | 300 | 1.50 | 1.80 | 2.50 |" in text
    assert (
        "| 500 | 260 + 240 | 0 | 200 of 200 | 100,000 of 100,000 | 3.00 | 40.0 | 12 | 30.0 | 90.0 "
        "| 0 | 0 | 25% |" in text
    )
    assert "| after them, to the end | – | 0 | 2 |" in text
    assert "| repeated month-by-day queries | 1,210 | 180 | 46 | 100 | 30 | 1.97 |" in text
    # runs from before the harness measured CPU render as such, not as zero
    assert "| distinct month-by-day queries | – | – | – | – | – | – |" in text
    assert "Smoke run" not in text
    assert "## Growth" not in text


def test_a_run_from_before_the_speed_probe_renders_without_it() -> None:
    meta = {key: value for key, value in META.items() if key != "speed_probe"}
    assert "speed probe" not in render({"meta": meta, "sizes": [size_figures()]})


def test_the_speed_probe_times_python_and_postgresql() -> None:
    # Real work on a real server: only that both are timed, not how fast.
    server_url = os.environ.get("TAPS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432")
    try:
        probe = machine.speed_probe(server_url)
    except BenchError as error:
        if in_ci():
            raise
        pytest.skip(str(error))
    assert probe["python_ms"] > 0
    assert probe["postgresql_ms"] > 0


def test_every_table_row_has_as_many_cells_as_its_header() -> None:
    sizes = [size_figures(), size_figures(scale=3.0)]
    check = growth_check((1.0, 2.0), (3.0, 3.0))
    text = render({"meta": META, "sizes": sizes, "growth_check": check})
    widths: list[int] = []
    for line in text.splitlines():
        if not line.startswith("|"):
            widths.clear()
            continue
        widths.append(line.count("|"))
        assert widths[-1] == widths[0], line


def test_a_quick_run_says_it_is_a_smoke_run() -> None:
    text = render({"meta": {**META, "quick": True}, "sizes": [size_figures()]})
    assert "**Smoke run (`--quick`)" in text


def test_targets_are_met_or_missed_by_the_figures() -> None:
    verdicts = {figure: met for figure, _, _, met in targets(size_figures())}
    assert verdicts["load_taps throughput"] is False  # 50,000 < 200,000
    assert verdicts["load_taps peak RSS"] is True
    assert verdicts["a year by day, UTC, cold"] is True  # 5 / 9 ms
    assert verdicts["the same query repeated"] is True  # 1.5 ms
    assert verdicts["every query above, cold"] is True
    assert verdicts["throughput, distinct month-by-day queries"] is True  # 600
    assert verdicts["throughput, repeated month-by-day queries"] is False  # 1200
    assert verdicts["ingest"] is False
    assert verdicts["live fan-out, from the ingest response"] is True
    assert verdicts["worker RSS after the run"] is False  # 210 MB
    assert verdicts["non-2xx answers, every measurement"] is True


def test_a_figure_equal_to_its_target_meets_it() -> None:
    figures = size_figures()
    figures["latency"][0]["rollup"] = http(8.0, 20.0, 25.0)
    figures["workers"] = [{"role": "worker", "pid": 10, "rss_bytes": 200_000_000}]
    figures["ingest"]["taps_per_second"] = 50_000.0
    verdicts = {figure: met for figure, _, _, met in targets(figures)}
    assert verdicts["a year by day, UTC, cold"] is True
    assert verdicts["worker RSS after the run"] is True
    assert verdicts["ingest"] is True


def test_any_non2xx_answer_misses_its_target() -> None:
    figures = size_figures()
    figures["latency"][3]["baseline"]["non2xx"] = 1
    verdicts = {figure: met for figure, _, _, met in targets(figures)}
    assert verdicts["non-2xx answers, every measurement"] is False


def test_a_query_with_no_answer_is_neither_met_nor_missed() -> None:
    figures = size_figures()
    figures["latency"][0]["rollup"]["requests"] = 0
    verdicts = {figure: met for figure, _, _, met in targets(figures)}
    assert verdicts["a year by day, UTC, cold"] is None


def test_growth_divides_the_largest_size_by_the_smallest() -> None:
    small, large = size_figures(), copy.deepcopy(size_figures(scale=2.0))
    large.update(size="10M", taps=10_000_000)
    rows = growth_rows(small, large)
    assert rows[0] == ("a year by day, UTC", "×2.00", "×2.00", "≤ 1.3", "**missed**")
    assert rows[-1] == ("the same query repeated", "×1.00", "×1.00", "≤ 1.3", "met")
    text = render({"meta": META, "sizes": [large, small]})
    assert "## Growth: 10M over 100k" in text


def growth_check(
    small_scales: tuple[float, ...], large_scales: tuple[float, ...]
) -> dict[str, Any]:
    """A growth check's figures as cli.growth_check returns them, a round per pair of
    scales."""
    rounds = [
        {"100k": size_figures(scale=small)["latency"], "10M": size_figures(scale=large)["latency"]}
        for small, large in zip(small_scales, large_scales, strict=True)
    ]
    return {"sizes": ["100k", "10M"], "rounds": rounds, "seconds": 200.0}


def test_the_growth_check_divides_within_each_round_then_averages_the_rounds() -> None:
    # Round one: 5 and 6 ms; round two, on a slower machine: 10 and 14 ms.
    rows = growth_check_rows(growth_check((1.0, 2.0), (1.2, 2.8)))
    assert rows[0] == (
        "a year by day, UTC", "5.00, 10.0", "6.00, 14.0", "×1.20, ×1.40", "×1.30", "×1.30",
        "≤ 1.3", "met",
    )  # fmt: skip
    assert len(rows) == len(LATENCY_QUERIES)
    assert growth_check_rows(growth_check((1.0, 1.0), (1.0, 1.7)))[0][-1] == "**missed**"


def test_the_growth_check_judges_by_the_p50() -> None:
    check = growth_check((1.0,), (1.0,))
    for entry in check["rounds"][0]["10M"]:
        entry["rollup"]["latency_ms"]["p99"] *= 3
    row = growth_check_rows(check)[0]
    assert row[4:] == ("×1.00", "×3.00", "≤ 1.3", "met")


def test_the_report_shows_the_growth_check_of_a_run_that_made_one() -> None:
    large = copy.deepcopy(size_figures(scale=2.0))
    large.update(size="10M", taps=10_000_000)
    sizes = [size_figures(), large]
    check = growth_check((1.0, 1.0), (1.1, 1.1))
    text = render({"meta": META, "sizes": sizes, "growth_check": check})
    assert "## Growth, measured in turn: 10M over 100k" in text
    assert "2 times (100k, 10M, 100k, 10M)" in text
    assert "| a year by day, UTC | 5.00, 5.00 | 5.50, 5.50 | ×1.10, ×1.10 | ×1.10 |" in text
    assert "measured in turn" not in render({"meta": META, "sizes": sizes})


def test_server_log_lines_are_counted_by_kind() -> None:
    text = "\n".join(
        [
            'INFO:     127.0.0.1:5 - "GET /healthz HTTP/1.1" 200 OK',
            'INFO:     127.0.0.1:5 - "POST /v1/taps HTTP/1.1" 201 Created',
            'INFO:     127.0.0.1:5 - "GET /v1/analytics/taps?x HTTP/1.1" 200 OK',
            "2025-01-01 10:00:00,000 WARNING analytics.live publish dropped",
            "ERROR:    Exception in ASGI application",
            "Traceback (most recent call last):",
        ]
    )
    assert log_lines(text) == {"statuses": {"200": 2, "201": 1}, "warnings": 1, "errors": 1}


@pytest.mark.urls("bench.urls")
def test_the_baseline_counts_what_the_service_counts(
    client: Client, read_key: IssuedKey, tag: Tag
) -> None:
    add_taps(
        (1, tag.uid, 2, "2023-01-01T10:00:00Z"),
        (2, tag.uid, 3, "2023-01-03T20:00:00Z"),  # 4 January in Kolkata
        (3, tag.uid, 4, "2023-03-26T00:30:00Z"),
    )
    query = "interval=week&start=2023-01-01&end=2023-12-31&tz=Asia/Kolkata"
    headers = {"HTTP_X_API_KEY": read_key.plaintext}
    service = client.get(f"/v1/analytics/taps?{query}", **headers).json()
    baseline = client.get(f"/bench/baseline/taps?{query}", **headers).json()
    assert baseline["results"] == [
        {"period": row["period"], "taps": row["taps"]} for row in service["results"] if row["taps"]
    ]
    seed = client.post(
        "/bench/baseline/seed",
        {"startDate": "2023-01-01", "endDate": "2023-12-31", "interval": "month"},
        content_type="application/json",
        **headers,
    )
    assert seed.json()["results"] == [
        {"period": "2023-01-01T00:00:00+00:00", "taps": 5},
        {"period": "2023-03-01T00:00:00+00:00", "taps": 4},
    ]


def test_the_baseline_groups_by_tag(read_key: IssuedKey, tag: Tag) -> None:
    other = Tag.objects.create(uid=1000009084, team=tag.team)
    add_taps((1, tag.uid, 2, "2023-01-01T10:00:00Z"), (2, other.uid, 3, "2023-01-01T11:00:00Z"))

    wanted = read_tap_query(
        QueryDict("start=2023-01-01&end=2023-01-01&tz=UTC&group_by=tag"), tag.team
    )
    assert trunc_sum(tag.team, wanted.query) == [
        {"period": "2023-01-01T00:00:00+00:00", "tag_id": tag.uid, "taps": 2},
        {"period": "2023-01-01T00:00:00+00:00", "tag_id": other.uid, "taps": 3},
    ]
    busiest = read_tap_query(
        QueryDict("start=2023-01-01&end=2023-01-01&tz=UTC&group_by=tag&limit=1"), tag.team
    )
    assert trunc_sum(tag.team, busiest.query) == [
        {"period": "2023-01-01T00:00:00+00:00", "tag_id": other.uid, "taps": 3},
    ]

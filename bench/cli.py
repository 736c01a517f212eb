"""``python -m bench run``: the command line, and one size's run from data to figures."""

import argparse
import json
import os
import secrets
import shlex
import signal
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import data, machine, measure, postgres
from bench.errors import BenchError
from bench.figures import Size, parse_sizes
from bench.report import render
from bench.scenarios import FULL, QUICK, Profile
from bench.server import ROOT, serve
from bench.wrk import wrk_binary
from tests.servers import free_port as tests_free_port

RESULTS = ROOT / "bench" / "results"
LOGS = data.CACHE / "logs"
PORTS = range(18100, 18200)
SETTINGS_MODULE = "bench.settings"
# Raised for the run so that the limiter never refuses, while still doing its Redis
# round trip on every request, as in production.
RATE_LIMIT = "1000000/second"
# Times the smallest and the largest size are served again, in turn, after the last size,
# and the requests per query then (issue 5 asks for at least 200).
GROWTH_ROUNDS = 2
GROWTH_REQUESTS = 200


@dataclass(frozen=True)
class Options:
    sizes: list[Size]
    out: Path
    quick: bool
    pg_url: str
    db_prefix: str
    redis_url: str
    port: int | None
    keep_db: bool


def parse_options(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the service (issue 5): load, latency, throughput, ingest, live.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="generate, load, serve and measure each size")

    def sizes(text: str) -> list[Size]:
        try:
            return parse_sizes(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    run.add_argument(
        "--sizes",
        type=sizes,
        default=parse_sizes("100k,1M,10M"),
        help="data set sizes in taps (default 100k,1M,10M)",
    )
    run.add_argument(
        "--out",
        type=Path,
        default=ROOT / "docs" / "BENCHMARKS.md",
        help="the Markdown report (default docs/BENCHMARKS.md)",
    )
    run.add_argument(
        "--quick", action="store_true", help="a smoke run: few requests, short runs (CI)"
    )
    run.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432"),
        help="PostgreSQL server, without a database (env BENCH_PG_URL)",
    )
    run.add_argument(
        "--db-prefix",
        default=os.environ.get("BENCH_DB_PREFIX", "bench_"),
        help="databases are <prefix><size>, dropped and created (env "
        "BENCH_DB_PREFIX, default bench_)",
    )
    run.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/3"),
        help="a Redis database for the server, emptied before each size (env "
        "BENCH_REDIS_URL, default db 3)",
    )
    run.add_argument("--port", type=int, help="the server's port (default: free in 18100-18199)")
    run.add_argument(
        "--keep-db",
        action="store_true",
        help="keep each size's database after its run (default: drop it)",
    )
    options = parser.parse_args(argv)
    if not postgres.PLAIN_NAME.fullmatch(f"{options.db_prefix}1m"):
        parser.error(f"--db-prefix {options.db_prefix!r}: use a-z, 0-9 and _ only")
    return Options(
        sizes=options.sizes,
        out=options.out,
        quick=options.quick,
        pg_url=options.pg_url,
        db_prefix=options.db_prefix,
        redis_url=options.redis_url,
        port=options.port,
        keep_db=options.keep_db,
    )  # fmt: skip


def free_port() -> int:
    try:
        return tests_free_port(PORTS)
    except RuntimeError as error:
        raise BenchError(f"{error}; give --port") from None


def server_env(options: Options) -> dict[str, str]:
    """The environment of every manage.py and server process of the run: production
    mode (PostgreSQL, Redis, DEBUG off) with the harness's settings module."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
        "REDIS_URL": options.redis_url,
        "CHANNELS_REDIS_URL": options.redis_url,
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "0",
        "TAPS_HTTPS": "0",  # plain HTTP on 127.0.0.1, as behind a TLS-terminating proxy
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "TAPS_LOAD_SAMPLE": "0",
        "WEB_CONCURRENCY": "2",
        "TAPS_RATE_LIMIT": RATE_LIMIT,
        "TAPS_INGEST_RATE_LIMIT": RATE_LIMIT,
    }


@dataclass(frozen=True)
class KeptSize:
    """A size's database, kept after its run for the growth check, with what serving it
    and asking it needs (the key stays out of the figures)."""

    label: str
    name: str
    env: dict[str, str]
    read_key: str
    tag: int


def run_size(
    size: Size, options: Options, profile: Profile, port: int, *, keep: bool = False
) -> tuple[dict[str, Any], KeptSize | None]:
    """One size's figures; with ``keep``, its database is left for the growth check
    (dropped here only if the run fails)."""
    started = time.monotonic()
    kept = None
    logs = LOGS / size.label
    logs.mkdir(parents=True, exist_ok=True)
    env = server_env(options)
    say(f"{size.label}: data set")
    directory, cached, generate_seconds = data.dataset(size, env)
    name = f"{options.db_prefix}{size.slug}"
    say(f"{size.label}: database {name}, migrate, load_taps")
    env["DATABASE_URL"] = postgres.recreate_database(options.pg_url, name)
    # A new database reuses the team ids and write versions of the last run's: its cached
    # answers would be found, and "cold" requests would be answered from them.
    machine.empty_redis(options.redis_url)
    try:
        data.manage("migrate", "--no-input", "--verbosity", "0", env=env)
        load = data.load(directory, env, logs=logs)
        vacuum_started = time.monotonic()
        postgres.vacuum_analyze(env["DATABASE_URL"])
        load["vacuum_analyze_seconds"] = time.monotonic() - vacuum_started
        team, team_taps, all_taps = postgres.busiest_team(env["DATABASE_URL"])
        tags = postgres.team_tags(env["DATABASE_URL"], team, limit=100)
        read_key = data.manage("issue_key", "--team", str(team), "--name", "bench", env=env)
        ingest_key = data.manage(
            "issue_key", "--team", str(team), "--name", "bench", "--scope", "ingest", env=env
        )
        read_key, ingest_key = read_key.strip(), ingest_key.strip()
        result: dict[str, Any] = {
            "size": size.label,
            "taps": size.taps,
            "data": {
                "generate": "generate_taps "
                + " ".join([str(directory.relative_to(ROOT)), *data.generate_arguments(size)]),
                "cached": cached,
                "generate_seconds": generate_seconds,
            },
            "database": name,
            "load": load,
            "tables": postgres.table_sizes(env["DATABASE_URL"]),
            "team": {"id": team, "taps": team_taps, "all_taps": all_taps},
        }
        say(f"{size.label}: serving on port {port}")
        with serve(env, port=port, log=logs / "server.log") as server:
            say(f"{size.label}: latency ({len(measure.LATENCY_QUERIES)} queries, then baseline)")
            result["latency"] = measure.latency(server, read_key, profile, tag=tags[0])
            result["repeated"] = measure.repeated(server, read_key, profile)
            say(f"{size.label}: throughput")
            result["throughput"] = measure.throughput(server, read_key, profile)
            say(f"{size.label}: ingest")
            result["ingest"] = measure.ingest(server, ingest_key, tags, profile)
            say(f"{size.label}: live ({profile.live_sockets} sockets)")
            result["live"] = measure.live(
                server,
                read_key=read_key,
                ingest_key=ingest_key,
                tags=tags,
                profile=profile,
                log=logs / "live.log",
            )
            result["workers"] = measure.processes(server)
            measured_bytes = server.log.stat().st_size
        result["server_log"] = measure.server_log(server.log, measured_bytes=measured_bytes)
        if keep:
            kept = KeptSize(size.label, name, env, read_key, tags[0])
    finally:
        if kept is None and not options.keep_db:
            postgres.drop_database(options.pg_url, name)
    result["seconds"] = time.monotonic() - started
    return result, kept


def growth_check(
    kept: list[KeptSize], options: Options, profile: Profile, port: int
) -> dict[str, Any]:
    """The latency queries again on the kept sizes, served in turn ``GROWTH_ROUNDS``
    times (100k, 10M, 100k, 10M), each pass as in its size's run but for the baselines:
    this machine's speed moved by half within one run, and the growth of a query over
    its few milliseconds at 100k moved with it. Each pass starts with Redis emptied, so
    every request is cold again; ``GROWTH_REQUESTS`` a query keep the check to about a
    minute a pass."""
    started = time.monotonic()
    profile = replace(profile, latency_requests=min(profile.latency_requests, GROWTH_REQUESTS))
    rounds = []
    for number in range(1, GROWTH_ROUNDS + 1):
        passes = {}
        for size in kept:
            say(f"growth check, round {number} of {GROWTH_ROUNDS}: {size.label}")
            machine.empty_redis(options.redis_url)
            log = LOGS / size.label / f"growth-{number}.log"
            with serve(size.env, port=port, log=log) as server:
                passes[size.label] = measure.latency(
                    server, size.read_key, profile, tag=size.tag, baseline=False
                )
        rounds.append(passes)
    return {
        "sizes": [size.label for size in kept],
        "rounds": rounds,
        "seconds": time.monotonic() - started,
    }


STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"bench [{time.monotonic() - STARTED:4.0f} s] {message}", file=sys.stderr, flush=True)


def run(options: Options, argv: list[str]) -> None:
    started = time.monotonic()
    wrk_binary()
    profile = QUICK if options.quick else FULL
    port = options.port or free_port()
    date = datetime.now(UTC)
    meta: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "bench", *argv]),
        "date": date.strftime("%Y-%m-%d %H:%M UTC"),
        "quick": options.quick,
        "machine": machine.machine(),
        "versions": machine.versions(pg_url=options.pg_url, redis_url=options.redis_url),
        "git": machine.commit(),
        "server": (
            f"`scripts/serve`, {SETTINGS_MODULE}, 2 uvicorn workers, DEBUG=0, PostgreSQL "
            f"(databases {options.db_prefix}<size>) and Redis, rate limits {RATE_LIMIT}"
        ),
        "data": f"generate_taps --taps N --tags {data.TAGS} --teams {data.TEAMS}",
        "profile": profile.__dict__,
        "load_average": {"start": machine.load_average()},
        "speed_probe": {"start": machine.speed_probe(options.pg_url)},
    }
    RESULTS.mkdir(exist_ok=True)
    ordered = sorted(options.sizes, key=lambda size: size.taps)
    # The growth check compares the smallest size with the largest: a run of more than
    # one size keeps their databases until it is done.
    compared = (ordered[0], ordered[-1]) if len(ordered) > 1 else ()
    kind = "-quick" if options.quick else ""
    run_figures: dict[str, Any] = {"meta": meta, "sizes": []}
    kept: list[KeptSize] = []
    try:
        for size in ordered:
            figures, kept_size = run_size(size, options, profile, port, keep=size in compared)
            run_figures["sizes"].append(figures)
            if kept_size is not None:
                kept.append(kept_size)
            path = RESULTS / f"{size.label}{kind}-{date:%Y%m%dT%H%M%SZ}.json"
            path.write_text(json.dumps({"meta": meta, **figures}, indent=1) + "\n")
            say(f"{size.label}: done in {figures['seconds']:.0f} s; figures in {path}")
        if kept:
            check = growth_check(kept, options, profile, port)
            run_figures["growth_check"] = check
            path = RESULTS / f"growth{kind}-{date:%Y%m%dT%H%M%SZ}.json"
            path.write_text(json.dumps({"meta": meta, **check}, indent=1) + "\n")
            say(f"growth check: done in {check['seconds']:.0f} s; figures in {path}")
    finally:
        if not options.keep_db:
            for kept_size in kept:
                postgres.drop_database(options.pg_url, kept_size.name)
    meta["seconds"] = time.monotonic() - started
    meta["load_average"]["end"] = machine.load_average()
    meta["speed_probe"]["end"] = machine.speed_probe(options.pg_url)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(render(run_figures))
    say(f"report in {options.out} ({meta['seconds']:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    options = parse_options(argv)
    # SIGTERM would end Python without running ``finally``: the server would outlive us.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        run(options, argv)
    except BenchError as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; the server was stopped", file=sys.stderr)
        return 130
    return 0

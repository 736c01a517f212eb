"""The loader on generated data: bounded memory, and interrupted loads that resume."""

import io
import os
import signal
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

from analytics.models import Tap
from analytics.rollup import find_rollup_differences

ROOT = Path(__file__).resolve().parents[2]


def generate(outdir: Path, taps: int) -> Path:
    call_command(
        "generate_taps", str(outdir), "--taps", str(taps), "--tags", "500", "--teams", "8",
        stdout=io.StringIO(),
    )  # fmt: skip
    return outdir


def peak_bytes_of_load(folder: Path) -> int:
    tracemalloc.start()
    try:
        call_command(
            "load_taps", "--tags", str(folder / "interview-tags.csv"),
            "--taps", str(folder / "interview-taps.csv"), "--batch-size", "10000",
            stdout=io.StringIO(),
        )  # fmt: skip
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
@pytest.mark.django_db
def test_loader_memory_stays_flat_as_the_file_grows(tmp_path: Path) -> None:
    small = peak_bytes_of_load(generate(tmp_path / "small", 20_000))
    Tap.objects.all().delete()
    large = peak_bytes_of_load(generate(tmp_path / "large", 200_000))

    assert Tap.objects.count() == 200_000
    # One 10,000-row batch is in memory at a time, whatever the file's size.
    assert large < 16 * 2**20
    assert large < small * 1.5


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        env["DATABASE_URL"] = (
            f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    else:
        env.pop("DATABASE_URL", None)
        env["TAPS_SQLITE_PATH"] = str(db["NAME"])
    return env


def start_load(folder: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable, "manage.py", "load_taps", "--verbosity", "2",
            "--batch-size", "500",
            "--tags", str(folder / "interview-tags.csv"),
            "--taps", str(folder / "interview-taps.csv"),
        ],
        cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=answer_sigint,
    )  # fmt: skip


def answer_sigint() -> None:
    # A test run started in the background (`cmd &` in a script) ignores SIGINT, and its
    # children inherit that: the loader would never see the interruption this test sends.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_committed_batches(process: subprocess.Popen[str], batches: int) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(f"batch {batches} committed"):
            return
    pytest.fail(f"the load ended before batch {batches}: {process.stderr.read()}")  # type: ignore[union-attr]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT])
def test_an_interrupted_load_run_again_ends_with_exact_totals(
    tmp_path: Path, stop: signal.Signals
) -> None:
    folder = generate(tmp_path, 40_000)
    process = start_load(folder)
    wait_for_committed_batches(process, 3)

    process.send_signal(stop)
    _, stderr = process.communicate(timeout=60)
    stored_before_rerun = Tap.objects.count()
    rerun = start_load(folder)
    out, err = rerun.communicate(timeout=300)

    assert 1_500 <= stored_before_rerun < 40_000
    if stop == signal.SIGINT:
        assert process.returncode == 130
        assert "Run the same command again to finish" in stderr
    assert rerun.returncode == 0, err
    assert err == ""
    assert f"taps loaded: {40_000 - stored_before_rerun}," in out
    assert f"duplicates: {stored_before_rerun}," in out
    assert Tap.objects.count() == 40_000
    assert find_rollup_differences()[0] == 0

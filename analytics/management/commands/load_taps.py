import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import OperationalError
from tqdm import tqdm

from analytics.loader import (
    FileFormatError,
    LoadReport,
    Problem,
    ProgressHandler,
    StrictLoadFailed,
    default_lanes,
    load_files,
)

DATA_DIR = Path(settings.BASE_DIR) / "data"


class Command(BaseCommand):
    help = (
        "Load tags and taps from the seed's CSV files (tag_uid,team_id,created_at and "
        "id,tag_uid,count,created_at). Idempotent: a tap id already stored for its team is "
        "skipped. Bad rows are reported as 'line N: reason' and the rest is loaded, unless "
        "--strict is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--tags", type=Path, default=DATA_DIR / "interview-tags.csv", help="tags CSV"
        )
        parser.add_argument(
            "--taps", type=Path, default=DATA_DIR / "interview-taps.csv", help="taps CSV"
        )
        parser.add_argument("--no-tags", action="store_true", help="load only the taps file")
        parser.add_argument("--no-taps", action="store_true", help="load only the tags file")
        parser.add_argument("--strict", action="store_true", help="load nothing if any row is bad")
        parser.add_argument(
            "--batch-size",
            type=int,
            default=50_000,
            help="rows per batch; each batch is one transaction (default 50000)",
        )
        parser.add_argument(
            "--lanes",
            type=int,
            help="database connections storing each batch at once, its teams split between "
            "them (default 2 on PostgreSQL; always 1 on SQLite and with --strict)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tags_path: Path | None = None if options["no_tags"] else options["tags"]
        taps_path: Path | None = None if options["no_taps"] else options["taps"]
        for path in (tags_path, taps_path):
            if path is not None:
                check_readable(path)
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        lanes: int = default_lanes() if options["lanes"] is None else options["lanes"]
        if lanes < 1:
            raise CommandError("--lanes must be at least 1")
        verbosity: int = options["verbosity"]
        started = time.monotonic()
        batches = 0
        current_file = ""
        bars: list[tqdm] = []

        def report_problem(problem: Problem) -> None:
            self.stderr.write(f"{current_file}line {problem.line}: {problem.reason}")

        def show_progress(path: str, size: int) -> ProgressHandler | None:
            nonlocal current_file
            current_file = f"{Path(path).name}: "
            if verbosity < 1:
                return None
            if not sys.stderr.isatty():
                return ProgressLines(Path(path).name, size, self.stdout.write)
            bar = tqdm(total=size, unit="B", unit_scale=True, desc=Path(path).name, leave=False)
            bars.append(bar)
            return bar.update

        def note_batch(report: LoadReport) -> None:
            nonlocal batches
            batches += 1
            if verbosity >= 2:
                self.stdout.write(
                    f"batch {batches} committed: {report.taps.accepted} taps loaded so far"
                )
                self.stdout.flush()

        try:
            report = load_files(
                tags_path=tags_path,
                taps_path=taps_path,
                strict=options["strict"],
                batch_size=options["batch_size"],
                on_problem=report_problem,
                progress=show_progress,
                on_batch=note_batch,
                lanes=lanes,
            )
        except FileFormatError as error:
            raise CommandError(f"{current_file}{error}") from None
        except OSError as error:
            raise CommandError(f"{current_file}cannot be read: {error.strerror or error}") from None
        except OperationalError as error:
            raise CommandError(
                f"the database did not answer ({str(error).strip()}); check DATABASE_URL and "
                "run the command again: what was committed is kept"
            ) from None
        except StrictLoadFailed as failure:
            raise CommandError(
                f"--strict: {failure.report.bad_rows} bad rows, nothing was loaded"
            ) from None
        except KeyboardInterrupt:
            raise CommandError(
                f"interrupted after {batches} committed batches; what they stored is kept. "
                "Run the same command again to finish: stored taps are skipped.",
                returncode=130,
            ) from None
        finally:
            for bar in bars:
                bar.close()
        if verbosity >= 1:
            self.stdout.write(report.summary(time.monotonic() - started))


def check_readable(path: Path) -> None:
    """Refuse a path that is no file to read before anything is loaded: a file of tags
    whose taps file cannot be read would be loaded alone."""
    if path.is_dir():
        raise CommandError(f"{path}: is a directory; give the path of the CSV file")
    if not path.exists():
        raise CommandError(f"{path}: no such file")
    if path.is_file():
        try:
            path.open("rb").close()
        except OSError as error:
            raise CommandError(f"{path}: cannot be read: {error.strerror or error}") from None


class ProgressLines:
    """Progress for a log rather than a terminal (a redirected stderr, a container): a
    line every ``every`` seconds saying how much of the file is read, where a terminal
    gets a bar."""

    def __init__(
        self, name: str, size: int, write: Callable[[str], Any], *, every: float = 10.0
    ) -> None:
        self.name, self.size, self.write, self.every = name, size, write, every
        self.done = 0
        self.started = self.last = time.monotonic()

    def __call__(self, chars: int) -> None:
        self.done += chars
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        share = f"{min(self.done / self.size, 1):.0%}" if self.size else "?"
        self.write(
            f"{self.name}: {share} read ({self.done / 1e6:,.0f} of {self.size / 1e6:,.0f} MB) "
            f"after {now - self.started:,.0f} s"
        )

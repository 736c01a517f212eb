import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from analytics.synthetic import write_dataset


class Command(BaseCommand):
    help = (
        "Write a deterministic synthetic dataset (interview-tags.csv and interview-taps.csv) "
        "into OUTDIR: the same options and seed always give the same files."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("outdir", type=Path, help="directory to write the CSV files into")
        parser.add_argument("--taps", type=int, default=5000, help="number of tap rows")
        parser.add_argument("--tags", type=int, default=60, help="number of tags")
        parser.add_argument("--teams", type=int, default=4, help="number of teams (<= tags)")
        parser.add_argument("--seed", type=int, default=1, help="random seed")
        parser.add_argument(
            "--start", default="2023-01-01", help="first day of taps, YYYY-MM-DD (UTC)"
        )
        parser.add_argument("--days", type=int, default=400, help="number of days with taps")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            start = date.fromisoformat(options["start"])
        except ValueError as error:
            raise CommandError(
                f"--start must be a date like 2023-01-01, got {options['start']!r}"
            ) from error

        # tqdm redraws with "\r", which self.stderr would break by appending newlines
        show_progress = options["verbosity"] >= 1 and sys.stderr.isatty()
        started = time.perf_counter()
        with tqdm(
            total=options["taps"],
            unit="tap",
            unit_scale=True,
            file=sys.stderr,
            disable=not show_progress,
        ) as bar:
            try:
                summary = write_dataset(
                    options["outdir"],
                    taps=options["taps"],
                    tags=options["tags"],
                    teams=options["teams"],
                    seed=options["seed"],
                    start=start,
                    days=options["days"],
                    progress=lambda written: bar.update(written - bar.n),
                )
            except ValueError as error:
                raise CommandError(str(error)) from error
            except OSError as error:
                raise CommandError(
                    f"{options['outdir']}: cannot write the files there: {error.strerror or error}"
                ) from None
        elapsed = time.perf_counter() - started

        if options["verbosity"] >= 1:
            self.stdout.write(
                f"wrote {summary.taps} taps over {summary.tags} tags of {summary.teams} teams "
                f"to {options['outdir']} in {elapsed:.1f} s"
            )

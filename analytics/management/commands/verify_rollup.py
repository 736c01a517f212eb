from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from analytics.rollup import find_rollup_differences
from teams.models import Team


def existing_team_ids(requested: list[int] | None) -> list[int] | None:
    if not requested:
        return None
    known = set(Team.objects.filter(pk__in=requested).values_list("pk", flat=True))
    unknown = sorted(set(requested) - known)
    if unknown:
        raise CommandError(f"no team with id {', '.join(map(str, unknown))}")
    return sorted(known)


class Command(BaseCommand):
    help = (
        "Recompute the rollups from the raw taps and report every bucket that differs. "
        "Exits with 1 if any does."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--team", type=int, action="append", help="only this team (repeatable)")

    def handle(self, *args: Any, **options: Any) -> None:
        team_ids = existing_team_ids(options["team"])
        total, sample = find_rollup_differences(team_ids, limit=50)
        for difference in sample:
            self.stderr.write(
                f"{difference.table} rollup: team {difference.team_id} at "
                f"{difference.bucket.isoformat()}: raw taps {difference.raw_taps}, "
                f"rollup {difference.rollup_taps}"
            )
        if total:
            raise CommandError(
                f"{total} rollup buckets differ from the raw taps; "
                "run rebuild_rollup to recompute them",
                returncode=1,
            )
        if options["verbosity"] >= 1:
            scope = "every team" if team_ids is None else f"team {', '.join(map(str, team_ids))}"
            self.stdout.write(f"rollups match the raw taps for {scope}")

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from analytics.management.commands.verify_rollup import existing_team_ids
from analytics.rollup import rebuild_rollups


class Command(BaseCommand):
    help = (
        "Recompute the rollups of a team (or all) from the raw taps. Writes of those taps "
        "wait while it runs."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--team", type=int, action="append", help="only this team (repeatable)")

    def handle(self, *args: Any, **options: Any) -> None:
        team_ids = existing_team_ids(options["team"])
        buckets = rebuild_rollups(team_ids)
        if options["verbosity"] >= 1:
            self.stdout.write(f"rebuilt {buckets} team buckets from the raw taps")

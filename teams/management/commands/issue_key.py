from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from teams.keys import create_key
from teams.models import Scope, Team


class Command(BaseCommand):
    help = (
        "Issue an API key for a team and print it. It is shown this once: only its hash is stored."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--team", type=int, required=True, help="the team's id")
        parser.add_argument("--name", default="default", help="a name for the key")
        parser.add_argument(
            "--scope", choices=Scope.values, default=Scope.READ, help="read (default) or ingest"
        )
        parser.add_argument(
            "--expires", type=int, metavar="DAYS", help="expire after this many days"
        )
        parser.add_argument(
            "--replace",
            action="store_true",
            help="revoke the team's other keys of the same name first",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            team = Team.objects.get(pk=options["team"])
        except Team.DoesNotExist:
            raise CommandError(
                f"no team with id {options['team']}; load_taps creates the teams of the "
                "tags file, or add one in the admin"
            ) from None
        name: str = options["name"].strip()
        if not name or len(name) > 50:
            raise CommandError("--name must be 1 to 50 characters")
        expires_at = None
        if options["expires"] is not None:
            if not 1 <= options["expires"] <= 36_500:
                raise CommandError("--expires must be a number of days from 1 to 36500")
            expires_at = timezone.now() + timedelta(days=options["expires"])
        issued = create_key(
            team,
            name=name,
            scope=options["scope"],
            expires_at=expires_at,
            revoke_same_name=options["replace"],
        )
        self.stdout.write(issued.plaintext)

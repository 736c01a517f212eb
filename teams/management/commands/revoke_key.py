from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from teams.keys import revoke_key
from teams.models import TeamAPIKey


class Command(BaseCommand):
    help = (
        "Revoke a team API key by its prefix (the part before the dot). It stops working "
        "on the very next request."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix", help="the key's prefix, e.g. Ab3dE6gH")

    def handle(self, *args: Any, **options: Any) -> None:
        prefix: str = options["prefix"].partition(".")[0]
        try:
            api_key = revoke_key(prefix)
        except TeamAPIKey.DoesNotExist:
            raise CommandError(f"no key with prefix {prefix!r}") from None
        if options["verbosity"] >= 1:
            self.stdout.write(
                f"revoked key {api_key.prefix} ({api_key.name!r}) of team {api_key.team_id}"
            )

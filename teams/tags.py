from datetime import datetime

from django.utils import timezone

from teams.models import Tag, Team


def move_tag(tag: Tag, team: Team, *, now: datetime | None = None) -> None:
    """Give a tag to another team. Its stored taps stay with the old team, and the new team
    gets only taps from ``now`` on (SPEC 1)."""
    if tag.team_id == team.pk:
        return
    tag.team = team
    tag.owner_since = now or timezone.now()
    tag.save(update_fields=["team", "owner_since"])

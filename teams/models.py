import zoneinfo
from functools import cache
from typing import Any, ClassVar

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone
from rest_framework_api_key.models import AbstractAPIKey, BaseAPIKeyManager

MAX_BIGINT = 2**63 - 1


@cache
def time_zone_names() -> frozenset[str]:
    """The IANA zones this host knows. Debian's zone directory also holds ``localtime``,
    the host's own zone: the same name would mean another zone on another server. IANA's
    ``Factory`` is no place's time but a marker for a zone not yet set (its abbreviation
    is ``-00``), which would answer in UTC under another name."""
    return frozenset(zoneinfo.available_timezones()) - {"localtime", "Factory"}


def validate_time_zone(name: str) -> None:
    if name not in time_zone_names():
        raise ValidationError(
            f"{name!r} is not an IANA time zone; use a name such as Europe/Paris or UTC."
        )


class Team(models.Model):
    """A customer team. Its id is the ``team_id`` of the CSV files."""

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(max_length=200)
    time_zone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[validate_time_zone],
        help_text="IANA zone for bucket boundaries when a query gives no tz.",
    )
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.name} (#{self.id})"


class Tag(models.Model):
    """An NFC tag, identified by the uid printed in the CSV files.

    ``owner_since`` is when the current team got the tag (null: since it was created).
    Taps older than that are refused, so that no team sees taps from before it owned the
    tag (SPEC 1).
    """

    uid = models.BigIntegerField(
        primary_key=True,
        validators=[MinValueValidator(1)],
        verbose_name="tag uid",
    )
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="tags")
    created_at = models.DateTimeField(default=timezone.now)
    owner_since = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["uid"]
        constraints = [
            models.CheckConstraint(condition=models.Q(uid__gte=1), name="tag_uid_positive"),
        ]

    def __str__(self) -> str:
        return str(self.uid)

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Save the tag, unless that would give it another team without moving it: a
        plain save (the shell, a script) left ``owner_since`` as it was, and the new team
        got the tag's past taps (SPEC 1). ``teams.tags.move_tag`` moves a tag."""
        stored = Tag.objects.filter(pk=self.pk).values("team_id", "owner_since").first()
        if (
            stored is not None
            and stored["team_id"] != self.team_id
            and stored["owner_since"] == self.owner_since
        ):
            raise ValidationError(
                f"Tag {self.uid} belongs to team {stored['team_id']}; move it with "
                "teams.tags.move_tag (or in the admin), which gives the new team only the "
                "tag's taps from then on."
            )
        super().save(*args, **kwargs)


class Scope(models.TextChoices):
    READ = "read", "read (analytics and websocket)"
    INGEST = "ingest", "ingest (posting taps)"


class TeamAPIKeyManager(BaseAPIKeyManager):
    def get_usable_keys(self) -> models.QuerySet:
        now = timezone.now()
        return self.filter(revoked=False).filter(
            models.Q(expiry_date__isnull=True) | models.Q(expiry_date__gt=now)
        )


class TeamAPIKey(AbstractAPIKey):
    """A team's API key: stored hashed (SHA-512 of a 32-character random secret)."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="api_keys")
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.READ)

    objects: ClassVar[TeamAPIKeyManager] = TeamAPIKeyManager()  # type: ignore[assignment]

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "team API key"
        verbose_name_plural = "team API keys"

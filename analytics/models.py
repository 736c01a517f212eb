"""Raw taps and their rollups.

Every row carries ``team_id`` and every unique key and index leads with it, so the tables
can be distributed by team (Citus, SPEC 12) without a schema change. Rows are written only
by ``analytics.ingest``, which keeps the rollups exactly in step with the raw taps.
"""

from datetime import timedelta

from django.db import models

from teams.models import Tag, Team

# Foreign keys below have no database constraint: the write path joins every tap with its
# tag and team before storing it, so per-row foreign-key triggers would only repeat that
# check, and on bulk loads they cost more than the insert itself. The ORM still applies
# on_delete.

# Every IANA offset in use is a whole multiple of 15 minutes, so 15-minute buckets can be
# regrouped into hours, days, weeks, ... of any time zone.
ROLLUP_STEP = timedelta(minutes=15)


class Tap(models.Model):
    """One record of the CSV or the ingest API: ``count`` taps on a tag at an instant.

    ``team`` is the tag's owner when the tap was stored; moving the tag later does not
    move the tap (SPEC 1).
    """

    pk = models.CompositePrimaryKey("team_id", "tap_id")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, db_constraint=False, db_index=False)
    tap_id = models.BigIntegerField()
    tag = models.ForeignKey(Tag, on_delete=models.PROTECT, db_constraint=False, db_index=False)
    count = models.IntegerField()
    created_at = models.DateTimeField()
    # The team's stream position (SPEC 8): see ``TapSequence``.
    seq = models.BigIntegerField()

    class Meta:
        indexes = [
            # Minute queries, a range's raw edges, rollup checks and the tag day level sum
            # raw taps by time (and tag): with ``count`` and ``tag`` in the index they need
            # not visit the table, whose pages hold every team's taps (a day by minute at
            # bench-10M read 280 table pages, 12-15 ms; from the index alone, 25-50 pages,
            # 2-3.5 ms). SQLite ignores ``include``.
            models.Index(
                fields=["team", "created_at"], name="tap_team_time", include=["count", "tag"]
            ),
            # The ``tag`` filter reads a tag's taps, and the tag day level is rebuilt from a
            # day's taps, here rather than from a (tag, quarter hour) rollup: with 20,000
            # tags such a rollup held a row for nearly every tap (1.3 GB at bench-10M,
            # against 2.0 GB of taps), and keeping it up to date cost more than this index
            # (bench-10M load 161 -> 137 s, 1M 21.6 -> 16.2 s).
            models.Index(
                fields=["team", "tag", "created_at"], name="tap_team_tag_time", include=["count"]
            ),
            # websocket resume reads a team's taps after a seq
            models.Index(fields=["team", "seq"], name="tap_team_seq"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(tap_id__gte=1), name="tap_id_positive"),
            models.CheckConstraint(condition=models.Q(count__gte=1), name="tap_count_positive"),
        ]

    def __str__(self) -> str:
        return f"tap {self.tap_id} of team {self.team_id}"


class TapSequence(models.Model):
    """The last ``seq`` given to a tap of a team.

    The write path bumps this row (locking it) in the transaction that stores the team's
    taps, so the team's writers commit one after another in ``seq`` order: once a tap with
    ``seq`` n is visible, every tap of the team numbered below n is visible too, and a
    client resuming ``after`` n cannot skip a tap committed late (SPEC 8). Numbers given
    to ids that turn out to be duplicates are skipped: ``seq`` grows, with gaps.
    """

    team = models.OneToOneField(
        Team, on_delete=models.CASCADE, primary_key=True, db_constraint=False
    )
    last_seq = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"team {self.team_id} at seq {self.last_seq}"


class TeamRollup(models.Model):
    """Taps per team per 15-minute bucket (``bucket`` is the bucket's UTC start)."""

    pk = models.CompositePrimaryKey("team_id", "bucket")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, db_constraint=False, db_index=False)
    bucket = models.DateTimeField()
    taps = models.BigIntegerField()

    def __str__(self) -> str:
        return f"team {self.team_id} at {self.bucket:%Y-%m-%d %H:%M}Z: {self.taps}"


class DayLevel(models.Model):
    """One row per team and UTC day, built from a 15-minute rollup by the write path."""

    pk = models.CompositePrimaryKey("team_id", "day")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, db_constraint=False, db_index=False)
    day = models.DateField()
    taps = models.BigIntegerField()

    class Meta:
        abstract = True


class TeamDay(DayLevel):
    """A team's taps over one UTC day, with the day's 96 quarter-hour counts in one row.

    Kept by the write path for every day a batch touches (``analytics.day_additions``;
    ``rebuild_rollup`` derives it from ``TeamRollup``), so a year of any zone
    reads 366 rows instead of 35,000: a local day, week or month starts on a quarter
    hour, and the taps before it in its UTC day are one entry of the running totals in
    ``quarters`` (``analytics.rollup.pack_quarters``).
    """

    quarters = models.BinaryField()

    def __str__(self) -> str:
        return f"team {self.team_id} on {self.day}: {self.taps}"


class TagDay(DayLevel):
    """A team's taps by tag over one UTC day: each tag's taps over the day in ``tags``,
    and every (tag, quarter hour) with taps in ``cells``, packed as columns
    (``analytics.rollup.pack_tag_cells``).

    Kept by the write path for every day a batch touches (``analytics.day_additions``;
    ``rebuild_rollup`` builds it from the day's raw taps). A month of a team with
    thousands of tags is 31 rows of bytes instead of 100,000 rows: the tags are ranked
    from ``tags``, and only the shown tags' cells are read.
    """

    tags = models.BinaryField()
    cells = models.BinaryField()

    def __str__(self) -> str:
        return f"tags of team {self.team_id} on {self.day}: {self.taps}"


class MinuteDay(DayLevel):
    """A team's taps over one UTC day by minute: every minute with taps, packed in
    ``minutes`` (``analytics.rollup.pack_minutes``).

    Kept by the write path for every day a batch touches, so a day by minute reads one
    row (two in a zone whose days straddle UTC's) instead of every tap of the day: at
    bench-10M a busy day of team 1 is 5,000 taps over 30 to 80 index pages, which a cold
    request read from disk.
    """

    minutes = models.BinaryField()

    def __str__(self) -> str:
        return f"minutes of team {self.team_id} on {self.day}: {self.taps}"


class TapRecord(models.Model):
    """The raw tap table seen by the Django admin, which cannot list composite keys yet.

    Read-only: the admin registers it without add, change or delete.
    """

    tap_id = models.BigIntegerField(primary_key=True)
    team = models.ForeignKey(Team, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False)
    tag = models.ForeignKey(Tag, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False)
    count = models.IntegerField()
    created_at = models.DateTimeField()

    class Meta:
        managed = False
        db_table = "analytics_tap"
        verbose_name = "tap"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"tap {self.tap_id} of team {self.team_id}"

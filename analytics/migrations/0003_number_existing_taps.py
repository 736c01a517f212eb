"""Give taps stored before ``seq`` existed their numbers, in time order per team, and start
each team's counter after them. Set-based: one UPDATE and one INSERT, whatever the size."""

from django.db import migrations

NUMBER_TAPS = """
    UPDATE analytics_tap SET seq = numbered.seq
    FROM (
        SELECT team_id, tap_id,
               row_number() OVER (PARTITION BY team_id ORDER BY created_at, tap_id) AS seq
        FROM analytics_tap
    ) AS numbered
    WHERE analytics_tap.team_id = numbered.team_id AND analytics_tap.tap_id = numbered.tap_id
"""

START_COUNTERS = """
    INSERT INTO analytics_tapsequence (team_id, last_seq)
    SELECT team_id, max(seq) FROM analytics_tap GROUP BY team_id
"""

UNNUMBER_TAPS = "UPDATE analytics_tap SET seq = NULL"
DROP_COUNTERS = "DELETE FROM analytics_tapsequence"


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0002_add_tap_seq"),
    ]

    operations = [
        migrations.RunSQL(NUMBER_TAPS, UNNUMBER_TAPS, elidable=False),
        migrations.RunSQL(START_COUNTERS, DROP_COUNTERS, elidable=False),
    ]

"""Each tag day gets a directory of its tags (``TagDay.tags``): every tag's taps over
the day and where its cells end, so that a month with ``group_by=tag`` ranks the tags
from the directories and reads only the shown tags' cells. The cells no longer repeat
their tag.

Every tag day is rebuilt from the raw taps, for every day the team day level holds: at
bench-10M (20,000 days, 10 million taps) that took about a minute on PostgreSQL.
"""

from django.db import migrations, models


def rebuild_tag_days(apps, schema_editor):
    from analytics.rollup import TAG_DAY_LEVEL, refresh_tag_days_in_sql

    connection = schema_editor.connection
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
                "WHERE name = 'default_toast_compression'"
            )
            if cursor.fetchone()[0]:
                cursor.execute("ALTER TABLE analytics_tagday ALTER COLUMN tags SET COMPRESSION lz4")
            refresh_tag_days_in_sql(cursor, "SELECT team_id, day FROM analytics_teamday")
        return
    # A day whose taps are all gone keeps its row, with an empty directory and no cells.
    TagDay = apps.get_model("analytics", "TagDay")
    TagDay.objects.update(cells=b"")
    TAG_DAY_LEVEL.write(TAG_DAY_LEVEL.build(TAG_DAY_LEVEL.fine_rows()))


class Migration(migrations.Migration):
    dependencies = [("analytics", "0011_compress_day_cells_with_lz4")]

    operations = [
        migrations.AddField(
            model_name="tagday",
            name="tags",
            field=models.BinaryField(default=bytes(4)),
            preserve_default=False,
        ),
        migrations.RunPython(rebuild_tag_days, migrations.RunPython.noop),
    ]

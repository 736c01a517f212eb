import django.db.models.deletion
from django.db import migrations, models


def fill_minute_days(apps, schema_editor):
    from analytics.rollup import MINUTE_DAY_LEVEL, refresh_minute_days_in_sql

    connection = schema_editor.connection
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            refresh_minute_days_in_sql(cursor, "SELECT team_id, day FROM analytics_teamday")
        return
    MINUTE_DAY_LEVEL.write(MINUTE_DAY_LEVEL.build(MINUTE_DAY_LEVEL.fine_rows()))


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0009_read_tags_from_taps"),
        ("teams", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="MinuteDay",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "team_id",
                        "day",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("day", models.DateField()),
                ("taps", models.BigIntegerField()),
                ("minutes", models.BinaryField()),
                (
                    "team",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        to="teams.team",
                    ),
                ),
            ],
            options={"abstract": False},
        ),
        migrations.RunPython(fill_minute_days, migrations.RunPython.noop),
    ]

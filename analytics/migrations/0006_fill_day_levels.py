from django.db import migrations


def fill_day_levels(apps, schema_editor):
    from analytics.rollup import TAG_DAY_LEVEL, TEAM_DAY_LEVEL

    for level in (TEAM_DAY_LEVEL, TAG_DAY_LEVEL):
        level.write(level.build(level.fine_rows()))


class Migration(migrations.Migration):
    dependencies = [("analytics", "0005_day_levels")]

    operations = [migrations.RunPython(fill_day_levels, migrations.RunPython.noop)]

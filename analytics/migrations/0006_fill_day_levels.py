from django.db import migrations


def fill_day_levels(apps, schema_editor):
    from analytics.rollup import DAY_LEVELS

    for level in DAY_LEVELS:
        level.write(level.build(level.fine_rows()))


class Migration(migrations.Migration):
    dependencies = [("analytics", "0005_day_levels")]

    operations = [migrations.RunPython(fill_day_levels, migrations.RunPython.noop)]

from django.db import migrations


def fill_day_levels(apps, schema_editor):
    # The tag day level is filled by 0012, which packs it as the code now does.
    from analytics.rollup import TEAM_DAY_LEVEL

    TEAM_DAY_LEVEL.write(TEAM_DAY_LEVEL.build(TEAM_DAY_LEVEL.fine_rows()))


class Migration(migrations.Migration):
    dependencies = [("analytics", "0005_day_levels")]

    operations = [migrations.RunPython(fill_day_levels, migrations.RunPython.noop)]

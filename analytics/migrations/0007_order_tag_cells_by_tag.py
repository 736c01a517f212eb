from django.db import migrations


def order_tag_cells_by_tag(apps, schema_editor):
    # Tag days packed before this release held their cells by quarter hour, and
    # verify_rollup would report every such day as different. 0012 rebuilds the tag day
    # level as the code now packs it, so only the team day level is refreshed here.
    from analytics.rollup import TEAM_DAY_LEVEL, refresh_all_day_levels

    refresh_all_day_levels([TEAM_DAY_LEVEL])


class Migration(migrations.Migration):
    dependencies = [("analytics", "0006_fill_day_levels")]

    operations = [migrations.RunPython(order_tag_cells_by_tag, migrations.RunPython.noop)]

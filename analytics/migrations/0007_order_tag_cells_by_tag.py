from django.db import migrations


def order_tag_cells_by_tag(apps, schema_editor):
    # Days packed before this release hold their cells by quarter hour; counts stay the
    # same, and verify_rollup would report every such day as different.
    from analytics.rollup import TAG_DAY_LEVEL, TEAM_DAY_LEVEL, refresh_all_day_levels

    refresh_all_day_levels([TEAM_DAY_LEVEL, TAG_DAY_LEVEL])


class Migration(migrations.Migration):
    dependencies = [("analytics", "0006_fill_day_levels")]

    operations = [migrations.RunPython(order_tag_cells_by_tag, migrations.RunPython.noop)]

from django.db import migrations

from analytics.rollup import day_levels


def fill_day_level(apps, schema_editor):
    TeamRollup = apps.get_model("analytics", "TeamRollup")
    TeamDay = apps.get_model("analytics", "TeamDay")
    fine = TeamRollup.objects.order_by("team_id", "bucket").values_list("team_id", "bucket", "taps")
    TeamDay.objects.bulk_create(
        (
            TeamDay(team_id=team_id, day=day, taps=taps, quarters=quarters)
            for team_id, day, taps, quarters in day_levels(fine.iterator())
        ),
        batch_size=1000,
    )


class Migration(migrations.Migration):
    dependencies = [("analytics", "0005_team_day")]

    operations = [migrations.RunPython(fill_day_level, migrations.RunPython.noop)]

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0003_number_existing_taps"),
    ]

    operations = [
        migrations.AlterField(
            model_name="tap",
            name="seq",
            field=models.BigIntegerField(),
        ),
    ]

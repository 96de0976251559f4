from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.CreateModel(
            name="TaskRecord",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("actor_name", models.CharField(max_length=255)),
                ("queue_name", models.CharField(max_length=255)),
                ("duration", models.FloatField(help_text="Seconds, middleware included.")),
                (
                    "outcome",
                    models.CharField(
                        choices=[
                            ("success", "Success"),
                            ("retry", "Retry"),
                            ("failed", "Failed"),
                            ("handled", "Handled"),
                            ("skipped", "Skipped"),
                        ],
                        max_length=16,
                    ),
                ),
                ("retries", models.PositiveIntegerField(default=0)),
                ("message_id", models.CharField(max_length=64)),
                ("trace_id", models.CharField(blank=True, default="", max_length=32)),
                ("timestamp", models.DateTimeField(db_index=True)),
            ],
            options={
                "ordering": ["-timestamp"],
                "indexes": [models.Index(fields=["actor_name", "timestamp"], name="dramatiq_rec_actor_time")],
            },
        ),
    ]

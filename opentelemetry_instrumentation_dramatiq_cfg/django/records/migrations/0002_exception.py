from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("dramatiq_otel_records", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="taskrecord",
            name="exception_type",
            field=models.CharField(
                blank=True, default="", help_text="Class of the exception the attempt raised.", max_length=255
            ),
        ),
        migrations.AddField(
            model_name="taskrecord",
            name="exception_message",
            field=models.TextField(
                blank=True, default="", help_text="Its message, truncated, credentials in URLs redacted."
            ),
        ),
        migrations.AddIndex(
            model_name="taskrecord",
            index=models.Index(fields=["outcome", "timestamp"], name="dramatiq_rec_outcome_time"),
        ),
    ]

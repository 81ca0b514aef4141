from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []
    operations = [
        migrations.CreateModel(
            name="Order",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("item", models.CharField(max_length=100)),
                ("status", models.CharField(default="placed", max_length=20)),
                ("created", models.DateTimeField(auto_now_add=True)),
                ("receipt", models.TextField(blank=True, default="")),
            ],
        ),
    ]

from django.db import models


class Order(models.Model):
    item = models.CharField(max_length=100)
    status = models.CharField(max_length=20, default="new")
    note = models.TextField(blank=True, default="")

    class Meta:
        app_label = "djtestapp"

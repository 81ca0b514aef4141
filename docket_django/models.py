"""No tables: an unmanaged model only hangs the dashboard (and its permissions) on the
admin index."""

from django.db import models


class Dashboard(models.Model):
    class Meta:
        managed = False
        verbose_name = "task dashboard"
        verbose_name_plural = "task dashboard"
        default_permissions = ("view",)
        permissions = [("manage_docket", "Can cancel tasks and strike tasks")]

from __future__ import annotations

from django.apps import AppConfig


class DocketDjangoConfig(AppConfig):
    name = "docket_django"
    label = "docket_django"
    verbose_name = "Docket"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        # Imports only: no Redis, no database. Here rather than at the top: Django
        # imports this module while it is still loading the apps, and autodiscovery
        # imports the apps' task modules, which import their models.
        from . import checks  # noqa: F401  (registers the system checks)
        from .discovery import autodiscover

        autodiscover()

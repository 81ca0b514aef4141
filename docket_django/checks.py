"""System checks: settings, task registrations, and (``--deploy`` only) Redis."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from docket.integration import SUPPORTED_SCHEMES, validate_name

from .conf import aliases, all_settings
from .health import ping
from .registry import registrations


@checks.register("docket")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    try:
        configured = all_settings()
    except (ImproperlyConfigured, TypeError, ValueError) as error:
        return [checks.Error(f"Invalid DOCKET setting: {error}", id="docket_django.E001")]
    messages: list[checks.CheckMessage] = []
    names: dict[tuple[str, str], str] = {}
    for alias, config in configured.items():
        scheme = config.url.partition("://")[0]
        if scheme not in SUPPORTED_SCHEMES:
            messages.append(
                checks.Error(
                    f"DOCKET[{alias!r}] URL has scheme {scheme!r}; "
                    f"supported: {', '.join(SUPPORTED_SCHEMES)}",
                    id="docket_django.E002",
                )
            )
        try:
            validate_name(config.name)
        except ValueError as error:
            messages.append(
                checks.Error(f"DOCKET[{alias!r}] NAME: {error}", id="docket_django.E003")
            )
        other = names.setdefault((config.url, config.name), alias)
        if other != alias:
            messages.append(
                checks.Warning(
                    f"DOCKET aliases {other!r} and {alias!r} are the same docket "
                    f"({config.name!r} on the same URL)",
                    id="docket_django.W004",
                )
            )
        if config.serializer not in ("pickle", "json"):
            messages.append(
                checks.Error(
                    f"DOCKET[{alias!r}] SERIALIZER must be 'pickle' or 'json'",
                    id="docket_django.E005",
                )
            )
    return messages


@checks.register("docket")
def check_tasks(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    try:
        known = set(aliases())
    except ImproperlyConfigured:
        known = set()
    by_name: dict[tuple[str, str], list[str]] = defaultdict(list)
    for registration in registrations():
        where = f"{registration.module}.{registration.qualname}"
        by_name[(registration.alias, registration.name)].append(where)
        if "<locals>" in registration.qualname:
            messages.append(
                checks.Error(
                    f"Task {registration.name!r} ({where}) is not a module-level function; "
                    "workers could not import it",
                    id="docket_django.E011",
                )
            )
        if known and registration.alias not in known:
            messages.append(
                checks.Error(
                    f"Task {registration.name!r} ({where}) uses queue {registration.alias!r}, "
                    f"which is not a DOCKET alias (configured: {sorted(known)})",
                    id="docket_django.E012",
                )
            )
    for (alias, name), places in by_name.items():
        if len(places) > 1:
            messages.append(
                checks.Error(
                    f"Task name {name!r} is declared more than once on docket {alias!r}: "
                    f"{', '.join(places)}",
                    hint="Give one of them another name: @docket_django.task(name=...)",
                    id="docket_django.E010",
                )
            )
    return messages


@checks.register("docket", deploy=True)
def check_redis(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Only under ``check --deploy``: can each docket's Redis be reached?"""
    messages: list[checks.CheckMessage] = []
    try:
        configured = all_settings()
    except ImproperlyConfigured:
        return messages
    for alias, config in configured.items():
        error = ping(alias, timeout=5.0)
        if error is not None:
            messages.append(
                checks.Error(
                    f"DOCKET[{alias!r}]: cannot reach Redis: {error}", id="docket_django.E020"
                )
            )
        if config.signing_key is False:
            messages.append(
                checks.Warning(
                    f"DOCKET[{alias!r}] has SIGNING_KEY=False: payloads are not signed",
                    id="docket_django.W021",
                )
            )
    return messages

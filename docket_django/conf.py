"""The ``DOCKET`` setting: one docket or several aliases, read lazily and without IO.

Single docket::

    DOCKET = {"URL": "redis://localhost:6379/0", "NAME": "myproject"}

Aliases::

    DOCKET = {
        "default": {"URL": "redis://localhost:6379/0", "NAME": "myproject"},
        "reports": {"URL": "redis://localhost:6379/1", "NAME": "reports"},
    }

Missing keys fall back to docket's defaults. The ``DOCKET_URL`` environment variable
overrides the default alias's URL, ``DOCKET_URL_<ALIAS>`` (upper-cased) any alias's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULT_ALIAS = "default"

DOCKET_KEYS = frozenset(
    {
        "URL",
        "NAME",
        "TASK_MODULES",
        "EXECUTION_TTL",
        "RESULT_TTL",
        "HEARTBEAT_INTERVAL",
        "MISSED_HEARTBEATS",
        "SIGNING_KEY",
        "SERIALIZER",
        "MAX_PAYLOAD_BYTES",
        "ENQUEUE_ON_COMMIT",
        "DATABASE",
        "WORKER",
    }
)

WORKER_KEYS = frozenset(
    {
        "NAME",
        "CONCURRENCY",
        "SYNC_THREADS",
        "REDELIVERY_TIMEOUT",
        "RECONNECTION_DELAY",
        "MINIMUM_CHECK_INTERVAL",
        "SCHEDULING_RESOLUTION",
        "SCHEDULE_AUTOMATIC_TASKS",
        "MESSAGE_BATCH",
        "MAX_DELIVERIES",
        "FALLBACK_TASK",
        "DEPENDENCIES",
        "TASKS",
    }
)


def _duration(value: Any, key: str) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    raise ImproperlyConfigured(f"DOCKET {key} must be a timedelta or a number of seconds")


@dataclass(frozen=True)
class WorkerSettings:
    name: str | None = None
    concurrency: int = 10
    sync_threads: int | None = None  # None: as many as ``concurrency``
    redelivery_timeout: timedelta = timedelta(minutes=5)
    reconnection_delay: timedelta = timedelta(seconds=5)
    minimum_check_interval: timedelta = timedelta(milliseconds=250)
    scheduling_resolution: timedelta = timedelta(milliseconds=250)
    schedule_automatic_tasks: bool = True
    message_batch: int = 1000
    max_deliveries: int = 5
    fallback_task: str | None = None
    dependencies: str | None = None
    tasks: tuple[str, ...] = ()


@dataclass(frozen=True)
class DocketSettings:
    """One alias of the ``DOCKET`` setting, resolved."""

    alias: str
    url: str
    name: str
    task_modules: tuple[str, ...] = ("tasks",)
    execution_ttl: timedelta = timedelta(minutes=15)
    result_ttl: timedelta = timedelta(days=1)
    heartbeat_interval: timedelta = timedelta(seconds=2)
    missed_heartbeats: int = 5
    signing_key: str | bytes | bool | None = None  # None: derived from SECRET_KEY
    serializer: str = "pickle"
    max_payload_bytes: int | None = 16 * 1024 * 1024
    enqueue_on_commit: bool = True
    database: str = "default"
    worker: WorkerSettings = field(default_factory=WorkerSettings)


def raw_setting() -> dict[str, dict[str, Any]]:
    """The ``DOCKET`` setting as ``{alias: options}``, whichever shape it was given in."""
    value = getattr(settings, "DOCKET", None)
    if value is None:
        return {DEFAULT_ALIAS: {}}
    if not isinstance(value, dict):
        raise ImproperlyConfigured("DOCKET must be a dict")
    if not value:
        return {DEFAULT_ALIAS: {}}
    if any(key in DOCKET_KEYS for key in value):
        return {DEFAULT_ALIAS: value}
    if all(isinstance(options, dict) for options in value.values()):
        if DEFAULT_ALIAS not in value:
            raise ImproperlyConfigured(
                f"DOCKET aliases must include {DEFAULT_ALIAS!r} (got {sorted(value)})"
            )
        return value
    raise ImproperlyConfigured(
        "DOCKET must be either one docket's options ({'URL': ..., 'NAME': ...}) or a dict "
        "of aliases ({'default': {...}, ...})"
    )


def _env_url(alias: str) -> str | None:
    specific = os.environ.get(f"DOCKET_URL_{alias.upper()}")
    if specific:
        return specific
    if alias == DEFAULT_ALIAS:
        return os.environ.get("DOCKET_URL") or None
    return None


def _build(alias: str, options: dict[str, Any]) -> DocketSettings:
    unknown = set(options) - DOCKET_KEYS
    if unknown:
        raise ImproperlyConfigured(
            f"DOCKET[{alias!r}] has unknown keys {sorted(unknown)}; known: {sorted(DOCKET_KEYS)}"
        )
    worker_options = dict(options.get("WORKER") or {})
    unknown = set(worker_options) - WORKER_KEYS
    if unknown:
        raise ImproperlyConfigured(
            f"DOCKET[{alias!r}]['WORKER'] has unknown keys {sorted(unknown)}; "
            f"known: {sorted(WORKER_KEYS)}"
        )
    worker_kwargs: dict[str, Any] = {}
    for key, value in worker_options.items():
        attribute = key.lower()
        if key in {
            "REDELIVERY_TIMEOUT",
            "RECONNECTION_DELAY",
            "MINIMUM_CHECK_INTERVAL",
            "SCHEDULING_RESOLUTION",
        }:
            value = _duration(value, f"WORKER.{key}")
        elif key == "TASKS":
            value = tuple(value)
        elif key in {"CONCURRENCY", "SYNC_THREADS", "MESSAGE_BATCH", "MAX_DELIVERIES"} and (
            value is not None and (not isinstance(value, int) or value < 1)
        ):
            raise ImproperlyConfigured(f"DOCKET WORKER.{key} must be a positive integer")
        worker_kwargs[attribute] = value

    kwargs: dict[str, Any] = {}
    for key in ("EXECUTION_TTL", "RESULT_TTL", "HEARTBEAT_INTERVAL"):
        if key in options:
            kwargs[key.lower()] = _duration(options[key], key)
    if "TASK_MODULES" in options:
        modules = options["TASK_MODULES"]
        if isinstance(modules, str) or not all(isinstance(m, str) for m in modules):
            raise ImproperlyConfigured("DOCKET TASK_MODULES must be a list of module names")
        kwargs["task_modules"] = tuple(modules)
    for key in (
        "MISSED_HEARTBEATS",
        "SIGNING_KEY",
        "SERIALIZER",
        "MAX_PAYLOAD_BYTES",
        "ENQUEUE_ON_COMMIT",
        "DATABASE",
    ):
        if key in options:
            kwargs[key.lower()] = options[key]
    url = _env_url(alias) or options.get("URL") or "redis://localhost:6379/0"
    name = options.get("NAME") or ("docket" if alias == DEFAULT_ALIAS else alias)
    return DocketSettings(
        alias=alias, url=url, name=name, worker=WorkerSettings(**worker_kwargs), **kwargs
    )


_cache: dict[str, DocketSettings] | None = None


def all_settings() -> dict[str, DocketSettings]:
    """Every alias, resolved (cached until the setting changes)."""
    global _cache
    if _cache is None:
        _cache = {alias: _build(alias, options) for alias, options in raw_setting().items()}
    return _cache


def docket_settings(alias: str = DEFAULT_ALIAS) -> DocketSettings:
    configured = all_settings()
    try:
        return configured[alias]
    except KeyError:
        raise ImproperlyConfigured(
            f"No docket alias {alias!r} in DOCKET (configured: {sorted(configured)})"
        ) from None


def aliases() -> list[str]:
    return list(all_settings())


def task_module_names() -> list[str]:
    """Module names to autodiscover in every installed app (union over aliases)."""
    try:
        configured = all_settings().values()
    except ImproperlyConfigured:
        return ["tasks"]
    names: list[str] = []
    for config in configured:
        for module in config.task_modules:
            if module not in names:
                names.append(module)
    return names


def reset() -> None:
    global _cache
    _cache = None


@receiver(setting_changed)
def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in {"DOCKET", "SECRET_KEY"}:
        reset()

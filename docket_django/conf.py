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

from docket import WorkerOptions
from docket.integration import OptionSpec, option_specs, validate_partitions

DEFAULT_ALIAS = "default"

# The keys of one docket's options, by how each is read.
_DURATION_KEYS = ("EXECUTION_TTL", "RESULT_TTL", "HEARTBEAT_INTERVAL")
_PLAIN_KEYS = (
    "MISSED_HEARTBEATS",
    "SIGNING_KEY",
    "SERIALIZER",
    "MAX_PAYLOAD_BYTES",
    "PARTITIONS",
    "ENQUEUE_ON_COMMIT",
    "DATABASE",
)
DOCKET_KEYS = frozenset({"URL", "NAME", "TASK_MODULES", *_DURATION_KEYS, *_PLAIN_KEYS, "WORKER"})

# Django's own worker settings, beside one per WorkerOptions field.
DJANGO_WORKER_KEYS = frozenset({"SYNC_THREADS", "TASKS"})
WORKER_KEYS = frozenset(spec.name.upper() for spec in option_specs()) | DJANGO_WORKER_KEYS


def _duration(value: Any, key: str) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    raise ImproperlyConfigured(f"DOCKET {key} must be a timedelta or a number of seconds")


@dataclass(frozen=True, kw_only=True)
class WorkerSettings(WorkerOptions):
    """``DOCKET["WORKER"]``: every ``WorkerOptions`` field, plus Django's own.

    The ``module:name`` options (``fallback_task``, ``dependencies``) may be given as
    paths: those are kept in ``import_paths`` and imported only when a worker is built
    (``worker_options``), so reading the settings imports no project code.
    """

    sync_threads: int | None = None  # None: as many as ``concurrency``
    tasks: tuple[str, ...] = ()
    import_paths: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        paths = dict(self.import_paths)
        for spec in option_specs():
            value = getattr(self, spec.name)
            if spec.kind != "import":
                continue
            if isinstance(value, str):
                paths[spec.name] = value
                object.__setattr__(self, spec.name, None)
            elif value is not None:
                paths.pop(spec.name, None)  # an object given now wins over an earlier path
        object.__setattr__(self, "import_paths", tuple(sorted(paths.items())))
        super().__post_init__()
        threads = self.sync_threads
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
        ):
            raise ValueError(f"sync_threads must be a whole number of at least 1, got {threads!r}")

    def worker_options(self) -> WorkerOptions:
        """What to build the ``Worker`` with: these options, the paths imported now."""
        return WorkerOptions.imported(**(self.as_kwargs() | dict(self.import_paths)))


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
    partitions: int | None = None  # None: DOCKET_PARTITIONS, else 1
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


_SPECS: dict[str, OptionSpec] = {spec.name: spec for spec in option_specs()}


def _worker_value(name: str, value: Any) -> Any:
    """One ``DOCKET["WORKER"]`` value read for its option's kind; counts and durations
    are left to ``WorkerOptions``, which checks those itself."""
    if name == "tasks":
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise TypeError(f"tasks must be a list of 'module:name' collections, got {value!r}")
        return tuple(value)
    spec = _SPECS.get(name)
    kind = spec.kind if spec is not None else None
    if kind == "flag" and not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    if kind == "text" and not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {value!r}")
    if kind == "import":
        if not isinstance(value, str) or not (":" in value or "." in value):
            raise TypeError(f"{name} must be a 'package.module:name' path, got {value!r}")
        if ":" not in value:
            # Django settings name things by dotted path ('myapp.tasks.fallback'), and
            # this setting always took that form too.
            module, _, member = value.rpartition(".")
            value = f"{module}:{member}"
    return value


def _worker_settings(alias: str, given: Any) -> WorkerSettings:
    where = f"DOCKET[{alias!r}]['WORKER']"
    if not given:
        given = {}
    if not isinstance(given, dict):
        raise ImproperlyConfigured(f"{where} must be a dict, got {given!r}")
    unknown = set(given) - WORKER_KEYS
    if unknown:
        raise ImproperlyConfigured(
            f"{where} has unknown keys {sorted(unknown)}; known: {sorted(WORKER_KEYS)}"
        )
    values: dict[str, Any] = {}
    for key, value in given.items():
        if value is None:
            continue  # as if not given: the option's default
        name = key.lower()
        try:
            values[name] = _worker_value(name, value)
            # Alone first, so that an error names the key it is about.
            WorkerSettings(**{name: values[name]})
        except (TypeError, ValueError) as error:
            raise ImproperlyConfigured(f"{where}[{key!r}]: {error}") from None
    try:
        return WorkerSettings(**values)
    except (TypeError, ValueError) as error:
        raise ImproperlyConfigured(f"{where}: {error}") from None


def _build(alias: str, options: dict[str, Any]) -> DocketSettings:
    unknown = set(options) - DOCKET_KEYS
    if unknown:
        raise ImproperlyConfigured(
            f"DOCKET[{alias!r}] has unknown keys {sorted(unknown)}; known: {sorted(DOCKET_KEYS)}"
        )
    kwargs: dict[str, Any] = {}
    for key in _DURATION_KEYS:
        if key in options:
            kwargs[key.lower()] = _duration(options[key], key)
    if "TASK_MODULES" in options:
        modules = options["TASK_MODULES"]
        if isinstance(modules, str) or not all(isinstance(m, str) for m in modules):
            raise ImproperlyConfigured("DOCKET TASK_MODULES must be a list of module names")
        kwargs["task_modules"] = tuple(modules)
    for key in _PLAIN_KEYS:
        if key in options:
            kwargs[key.lower()] = options[key]
    if "partitions" in kwargs:
        try:
            validate_partitions(kwargs["partitions"])
        except ValueError as error:
            raise ImproperlyConfigured(f"DOCKET[{alias!r}]['PARTITIONS']: {error}") from None
    url = _env_url(alias) or options.get("URL") or "redis://localhost:6379/0"
    name = options.get("NAME") or ("docket" if alias == DEFAULT_ALIAS else alias)
    return DocketSettings(
        alias=alias,
        url=url,
        name=name,
        worker=_worker_settings(alias, options.get("WORKER")),
        **kwargs,
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

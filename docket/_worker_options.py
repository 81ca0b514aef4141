"""The worker's options, written once.

``Worker`` takes them as keyword arguments; ``Worker.run``, ``docket worker``, Django's
``DOCKET["WORKER"]`` and ``manage.py docket_worker``, and Starlette's ``WorkerOptions``
are all derived from the fields below, so an option added here appears everywhere at
once (``tests/test_worker_options.py`` holds each entry point to that).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, Self

from ._imports import import_object

OptionKind = Literal["text", "count", "duration", "flag", "import"]


@dataclass(frozen=True)
class OptionSpec:
    """How one option reads from a command line, an environment variable or a setting."""

    name: str
    kind: OptionKind
    help: str
    default: Any
    # The released ``Worker.run``/``docket worker`` check for work every 100 ms, against
    # 250 ms in the constructor; the command-line entry points keep that difference.
    command_line_default: Any

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def envvar(self) -> str:
        return "DOCKET_WORKER_" + self.name.upper()


def _about(
    kind: OptionKind, help: str, *, command_line_default: Any = dataclasses.MISSING
) -> dict[str, Any]:
    return {"kind": kind, "help": help, "command_line_default": command_line_default}


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class WorkerOptions:
    """Everything a ``Worker`` can be told besides its docket, validated on creation.

    Settings files and command lines name ``fallback_task`` and ``dependencies`` by
    ``module:name`` path: ``imported`` reads those.
    """

    name: str | None = field(
        default=None, metadata=_about("text", "The worker's name [default: hostname#pid]")
    )
    concurrency: int = field(default=10, metadata=_about("count", "How many tasks run at once"))
    redelivery_timeout: timedelta = field(
        default=timedelta(minutes=5),
        metadata=_about(
            "duration",
            "How long a task may go without its worker renewing its lease before another "
            "worker takes it over",
        ),
    )
    reconnection_delay: timedelta = field(
        default=timedelta(seconds=5),
        metadata=_about("duration", "How long to wait before trying Redis again after an error"),
    )
    minimum_check_interval: timedelta = field(
        default=timedelta(milliseconds=250),
        metadata=_about(
            "duration",
            "How often to look for work when the docket is quiet",
            command_line_default=timedelta(milliseconds=100),
        ),
    )
    scheduling_resolution: timedelta = field(
        default=timedelta(milliseconds=250),
        metadata=_about("duration", "How often to move tasks that have come due onto the stream"),
    )
    schedule_automatic_tasks: bool = field(
        default=True,
        metadata=_about(
            "flag", "Schedule the automatic Perpetual tasks of the registered collections"
        ),
    )
    enable_internal_instrumentation: bool = field(
        default=False, metadata=_about("flag", "Trace the worker's internal Redis polling too")
    )
    fallback_task: Callable[..., Any] | None = field(
        default=None,
        metadata=_about(
            "import",
            "A task (module:name) that runs messages for tasks this worker does not know, "
            "instead of dead-lettering them",
        ),
    )
    dependencies: Mapping[str, Any] | Sequence[Any] | None = field(
        default=None,
        metadata=_about(
            "import",
            "Worker dependencies (module:name), a mapping or sequence such as [Depends(fn)], "
            "resolved around every task",
        ),
    )
    message_batch: int = field(
        default=1000, metadata=_about("count", "The most messages one read from Redis may claim")
    )
    max_deliveries: int = field(
        default=5,
        metadata=_about(
            "count",
            "How many times a message may be delivered without settling (its worker died or "
            "hung each time) before it is dead-lettered instead of run again",
        ),
    )
    max_tasks: int | None = field(
        default=None,
        metadata=_about(
            "count",
            "Stop after starting this many runs (they finish first), so a process manager "
            "starts a fresh process: a guard against slow leaks",
        ),
    )

    def __post_init__(self) -> None:
        for spec in option_specs():
            value = getattr(self, spec.name)
            if spec.kind == "count" and not (value is None and spec.default is None):
                _positive(spec.name, value)
            elif spec.kind == "duration":
                if isinstance(value, int | float) and not isinstance(value, bool):
                    value = timedelta(seconds=value)
                    object.__setattr__(self, spec.name, value)
                if not isinstance(value, timedelta):
                    raise TypeError(
                        f"{spec.name} must be a timedelta or a number of seconds, got {value!r}"
                    )
                if value < timedelta(0):
                    raise ValueError(f"{spec.name} must not be negative, got {value}")
        if self.redelivery_timeout <= timedelta(0):
            raise ValueError("redelivery_timeout must be positive")
        if self.fallback_task is not None and not callable(self.fallback_task):
            # A module:name path belongs in WorkerOptions.imported.
            raise TypeError(
                f"fallback_task must be a function, got {type(self.fallback_task).__name__}"
            )

    @classmethod
    def imported(cls, **values: Any) -> Self:
        """Options whose ``module:name`` paths (``fallback_task``, ``dependencies``) are
        imported first; other values are taken as they are."""
        for spec in option_specs():
            value = values.get(spec.name)
            if spec.kind == "import" and isinstance(value, str):
                what = spec.name.replace("_", " ")
                values[spec.name] = import_object(value, what) if value else None
        return cls(**values)

    def as_kwargs(self) -> dict[str, Any]:
        """The options as ``Worker``'s keyword arguments."""
        return {spec.name: getattr(self, spec.name) for spec in option_specs()}

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)


def option_specs() -> Iterator[OptionSpec]:
    """The worker's options in declaration order, for entry points to derive theirs."""
    for item in dataclasses.fields(WorkerOptions):
        yield OptionSpec(
            name=item.name,
            kind=item.metadata["kind"],
            help=item.metadata["help"],
            default=item.default,
            command_line_default=(
                item.default
                if item.metadata["command_line_default"] is dataclasses.MISSING
                else item.metadata["command_line_default"]
            ),
        )


OPTION_NAMES = frozenset(item.name for item in dataclasses.fields(WorkerOptions))

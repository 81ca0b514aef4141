"""Dependency injection for docket tasks.

A task declares what it needs as parameter defaults (``retry: Retry = Retry(3)``) or
``Annotated[T, dependency]`` metadata; the worker resolves them around each run.
"""

from __future__ import annotations

from ._arguments import CallArgument, TaskArgument
from ._base import (
    AdmissionBlocked,
    CompletionHandler,
    Dependency,
    FailureHandler,
    Runtime,
    TaskOutcome,
    current_docket,
    current_execution,
    current_worker,
    format_duration,
)
from ._concurrency import ConcurrencyBlocked, ConcurrencyLimit
from ._contextual import CurrentDocket, CurrentExecution, CurrentWorker, TaskKey
from ._cooldown import Cooldown
from ._cron import CRON_NICKNAMES, Cron, next_cron_time
from ._debounce import Debounce
from ._frames import CycleError
from ._functional import DependencyFunction, Depends, Shared, SharedScope, _Depends
from ._perpetual import Perpetual, get_perpetual
from ._plans import _plans as _parameter_cache
from ._plans import (
    declared_dependencies,
    forget_plan,
    get_annotation_dependencies,
    get_dependency_parameters,
)
from ._progress import Progress
from ._rate_limit import RateLimit
from ._resolution import (
    FailedDependency,
    ResolvedDependencies,
    get_single_dependency_of_type,
    get_single_dependency_parameter_of_type,
    resolved_dependencies,
    validate_dependencies,
    validate_worker_dependencies,
)
from ._retry import ExponentialRetry, ForcedRetry, Retry
from ._task_logger import TaskLogger, TaskLoggerAdapter
from ._timeout import Timeout

__all__ = [
    "CRON_NICKNAMES",
    "AdmissionBlocked",
    "CallArgument",
    "CompletionHandler",
    "ConcurrencyBlocked",
    "ConcurrencyLimit",
    "Cooldown",
    "Cron",
    "CurrentDocket",
    "CurrentExecution",
    "CurrentWorker",
    "CycleError",
    "Debounce",
    "Dependency",
    "DependencyFunction",
    "Depends",
    "ExponentialRetry",
    "FailedDependency",
    "FailureHandler",
    "ForcedRetry",
    "Perpetual",
    "Progress",
    "RateLimit",
    "ResolvedDependencies",
    "Retry",
    "Runtime",
    "Shared",
    "SharedScope",
    "TaskArgument",
    "TaskKey",
    "TaskLogger",
    "TaskLoggerAdapter",
    "TaskOutcome",
    "Timeout",
    "_Depends",
    "_parameter_cache",
    "current_docket",
    "current_execution",
    "current_worker",
    "declared_dependencies",
    "forget_plan",
    "format_duration",
    "get_annotation_dependencies",
    "get_dependency_parameters",
    "get_perpetual",
    "get_single_dependency_of_type",
    "get_single_dependency_parameter_of_type",
    "next_cron_time",
    "resolved_dependencies",
    "validate_dependencies",
    "validate_worker_dependencies",
]

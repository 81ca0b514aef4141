"""Dependency injection for docket tasks.

A task declares what it needs as parameter defaults (``retry: Retry = Retry(3)``) or
``Annotated[T, dependency]`` metadata; the worker resolves them around each run.
"""

from __future__ import annotations

from uncalled_for import CycleError, Provider, get_annotation_dependencies

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
from ._declarations import declared_dependencies
from ._functional import (
    DependencyFunction,
    Depends,
    Shared,
    SharedContext,
    _Depends,
    _parameter_cache,
    get_dependency_parameters,
)
from ._perpetual import Perpetual, get_perpetual
from ._progress import Progress
from ._rate_limit import RateLimit
from ._resolution import (
    DependencyExceptionGroup,
    FailedDependency,
    ResolvedDependencies,
    WorkerShared,
    get_single_dependency_of_type,
    get_single_dependency_parameter_of_type,
    resolved_dependencies,
    validate_dependencies,
    validate_task,
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
    "DependencyExceptionGroup",
    "DependencyFunction",
    "Depends",
    "ExponentialRetry",
    "FailedDependency",
    "FailureHandler",
    "ForcedRetry",
    "Perpetual",
    "Progress",
    "Provider",
    "RateLimit",
    "ResolvedDependencies",
    "Retry",
    "Runtime",
    "Shared",
    "SharedContext",
    "TaskArgument",
    "TaskKey",
    "TaskLogger",
    "TaskLoggerAdapter",
    "TaskOutcome",
    "Timeout",
    "WorkerShared",
    "_Depends",
    "_parameter_cache",
    "current_docket",
    "current_execution",
    "current_worker",
    "declared_dependencies",
    "format_duration",
    "get_annotation_dependencies",
    "get_dependency_parameters",
    "get_perpetual",
    "get_single_dependency_of_type",
    "get_single_dependency_parameter_of_type",
    "next_cron_time",
    "resolved_dependencies",
    "validate_dependencies",
    "validate_task",
    "validate_worker_dependencies",
]

"""docket: a distributed background task system for Python, async first, on Redis.

Scheduling work for later is as easy as running it now.
"""

from . import tasks, testing
from ._partition_layout import PartitionMismatch
from ._priority import Priority
from ._version import __version__
from .agenda import Agenda
from .annotations import Logged
from .dependencies import (
    CallArgument,
    ConcurrencyLimit,
    Cooldown,
    Cron,
    CurrentDocket,
    CurrentExecution,
    CurrentWorker,
    CycleError,
    Debounce,
    Depends,
    ExponentialRetry,
    Perpetual,
    Progress,
    RateLimit,
    Retry,
    Shared,
    TaskArgument,
    TaskKey,
    TaskLogger,
    Timeout,
)
from .docket import Docket, DocketSnapshot, TaskHandle, WorkerInfo
from .execution import (
    Disposition,
    Execution,
    ExecutionCancelled,
    ExecutionProgress,
    ExecutionState,
    TaskCall,
)
from .serialization import PayloadTooLarge
from .strikes import StrikeList
from .worker import Worker, WorkerOptions

__all__ = [
    "Agenda",
    "CallArgument",
    "ConcurrencyLimit",
    "Cooldown",
    "Cron",
    "CurrentDocket",
    "CurrentExecution",
    "CurrentWorker",
    "CycleError",
    "Debounce",
    "Depends",
    "Disposition",
    "Docket",
    "DocketSnapshot",
    "Execution",
    "ExecutionCancelled",
    "ExecutionProgress",
    "ExecutionState",
    "ExponentialRetry",
    "Logged",
    "PartitionMismatch",
    "PayloadTooLarge",
    "Perpetual",
    "Priority",
    "Progress",
    "RateLimit",
    "Retry",
    "Shared",
    "StrikeList",
    "TaskArgument",
    "TaskCall",
    "TaskHandle",
    "TaskKey",
    "TaskLogger",
    "Timeout",
    "Worker",
    "WorkerInfo",
    "WorkerOptions",
    "__version__",
    "tasks",
    "testing",
]

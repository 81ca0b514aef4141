"""What a worker's rooms share: made by the ``Worker`` and handed to each room, so no
room reaches into the Worker's private attributes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._worker_loops import Trouble
from .instrumentation import WorkerMetrics, internal

if TYPE_CHECKING:
    from .execution import Execution


@dataclass(kw_only=True)
class WorkerState:
    """The runs in flight, whether the worker is stopping, its metrics and its policy
    for Redis trouble, plus the two Worker steps rooms call back into."""

    metrics: WorkerMetrics
    trouble: Trouble
    """What the run loop, the scheduler and the settler do when Redis fails them."""
    start: Callable[[Execution], None]
    """Start a claimed run (``Worker._start``)."""
    claim_budget: Callable[[int], int]
    """How many messages the next read or reclaim may claim, given free slots."""
    traced_internals: bool = False
    active: dict[str, tuple[Execution, asyncio.Task[None]]] = field(default_factory=dict)
    """The runs in flight, by message id."""
    slot_freed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set whenever a run ends (or the worker stops), for the read loop waiting on one."""
    stopping: bool = False

    def internal(self, name: str) -> AbstractContextManager[None]:
        """Scope one internal Redis operation: traced only with internal instrumentation
        enabled, otherwise hidden from instrumented clients."""
        return internal(self.traced_internals, name, self.metrics.base)

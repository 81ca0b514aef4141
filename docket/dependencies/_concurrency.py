"""ConcurrencyLimit: at most n runs at once, per task or per argument value.

A run that finds every slot taken is *parked*: one script moves its message into the
task's record, puts its key in a FIFO of waiters and acks the stream message. It holds
no worker slot and nothing polls for it; when a holder releases its slot, the release
script reserves the slot for the longest waiter and queues its message again. Slots are
leased for the worker's redelivery timeout and renewed while the run lasts, so the slot
of a worker that died is freed by the next sweep once its lease runs out.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypedDict, overload

from redis.exceptions import RedisError

from .._priority import Priority
from .._redis import scripts
from .._text import as_text
from ._base import AdmissionBlocked, Dependency, current_docket, current_execution, current_worker
from ._windows import scope_within, validate_scope

if TYPE_CHECKING:
    from ..docket import Docket
    from ..execution import Execution
    from ..worker import Worker

logger = logging.getLogger("docket.dependencies")

GROUP = "docket-workers"

# The slot held by the current run (a run declares at most one ConcurrencyLimit).
_held: ContextVar[tuple[str, str] | None] = ContextVar("docket_concurrency_slot", default=None)

# Slots each worker's running tasks hold, for lease renewal: {task key: holders key}.
_slots_by_worker: weakref.WeakKeyDictionary[Worker, dict[str, str]] = weakref.WeakKeyDictionary()
# The loop renewing each worker's leases and sweeping expired slots.
_maintainers: weakref.WeakKeyDictionary[Worker, asyncio.Task[None]] = weakref.WeakKeyDictionary()


def _ensure_maintained(docket: Docket, worker: Worker) -> None:
    """Start the worker's maintenance loop if it is not running: from the worker's
    lifecycle when it starts, or from the first acquire of a task registered later."""
    task = _maintainers.get(worker)
    if task is None or task.done():
        _maintainers[worker] = asyncio.get_running_loop().create_task(
            _maintain(docket, worker), name=f"{worker.name}-concurrency"
        )


class ConcurrencyBlocked(AdmissionBlocked):
    """The run was parked until a slot frees; the worker has nothing more to do."""

    def __init__(self, execution: Execution, limit_key: str, max_concurrent: int) -> None:
        self.limit_key = limit_key
        self.max_concurrent = max_concurrent
        super().__init__(
            execution,
            reason=f"concurrency limit ({max_concurrent} at once) on {limit_key}",
            handled=True,
        )


class ConcurrencyLimit(Dependency["ConcurrencyLimit"]):
    """At most ``max_concurrent`` runs at once, per value of ``argument_name`` (or per
    task when no argument is named). Blocked runs wait in FIFO order without holding a
    worker slot.

    ::

        async def sync_customer(
            customer_id: int,
            limit: ConcurrencyLimit = ConcurrencyLimit("customer_id", max_concurrent=1),
        ): ...

        async def sync_customer(customer_id: Annotated[int, ConcurrencyLimit(1)]): ...

        async def rebuild_index(limit: ConcurrencyLimit = ConcurrencyLimit(max_concurrent=2)): ...

    ``scope`` names the group of slots, so different tasks can share one limit.
    """

    single = True

    @overload
    def __init__(self, max_concurrent: int, /, *, scope: str | None = None) -> None: ...

    @overload
    def __init__(
        self, argument_name: str, max_concurrent: int = 1, scope: str | None = None
    ) -> None: ...

    @overload
    def __init__(self, *, max_concurrent: int = 1, scope: str | None = None) -> None: ...

    def __init__(
        self,
        argument_name: str | int | None = None,
        max_concurrent: int = 1,
        scope: str | None = None,
    ) -> None:
        if isinstance(argument_name, int) and not isinstance(argument_name, bool):
            max_concurrent, argument_name = argument_name, None
        if max_concurrent < 1:
            raise ValueError(f"ConcurrencyLimit needs max_concurrent >= 1, got {max_concurrent}")
        validate_scope(scope)
        self.argument_name = argument_name if isinstance(argument_name, str) else None
        self.max_concurrent = max_concurrent
        self.scope = scope
        self._value: Any = None
        self._bound = False
        self._concurrency_key: str | None = None

    @property
    def concurrency_key(self) -> str:
        """The Redis key of the slots this run holds (only on the value a run receives)."""
        if self._concurrency_key is None:
            raise RuntimeError(
                "ConcurrencyLimit not initialized - use within task context: only the "
                "value injected into a running task knows its concurrency key"
            )
        return self._concurrency_key

    def __repr__(self) -> str:
        return f"ConcurrencyLimit({self.argument_name!r}, max_concurrent={self.max_concurrent}" + (
            f", scope={self.scope!r})" if self.scope else ")"
        )

    def bind_to_parameter(self, name: str, value: Any) -> ConcurrencyLimit:
        bound = ConcurrencyLimit(self.argument_name or name, self.max_concurrent, self.scope)
        # Limited by the annotated parameter's own value, unless the declaration names
        # another argument (``Annotated[int, ConcurrencyLimit("tenant", 2)]``): that
        # one's value is read from the run like a parameter-default limit's.
        if self.argument_name in (None, name):
            bound._value = value
            bound._bound = True
        return bound

    def _limit_key(self, docket: Docket, execution: Execution) -> str:
        scope = scope_within(docket, self.scope) if self.scope else ""
        base = f"{docket.prefix}:concurrency:{scope}"
        if self.argument_name is None:
            return f"{base}:task:{execution.function_name}"
        if self._bound:
            value = self._value
        else:
            try:
                value = execution.get_argument(self.argument_name)
            except KeyError:
                raise ValueError(
                    f"ConcurrencyLimit on {execution.function_name} names the argument "
                    f"{self.argument_name!r}, which the task was not called with"
                ) from None
        return f"{base}:arg:{self.argument_name}:{value!r}"

    async def __aenter__(self) -> ConcurrencyLimit:
        execution = current_execution.get()
        docket = current_docket.get()
        worker = current_worker.get()
        holders = self._limit_key(docket, execution)
        lease = worker.redelivery_timeout.total_seconds()
        if docket.partitions > 1:
            outcome = await _take_partitioned(
                docket, worker, execution, holders, self.max_concurrent, lease
            )
        else:
            limit_keys = _limit_keys(docket, holders)
            # The run's message is on its level's stream.
            limit_keys["stream"] = execution.lane.stream
            outcome = await docket.engine.scripts.send(
                scripts.ConcurrencyAcquire(
                    **limit_keys,
                    record=docket.keys.record(execution.key),
                    group=GROUP,
                    worker=worker.name,
                    key=execution.key,
                    max_concurrent=self.max_concurrent,
                    lease=lease,
                    mid=execution.message_id or "",
                    deliveries=execution.deliveries,
                    generation=execution.generation,
                )
            )
        _ensure_maintained(docket, worker)
        if int(outcome) == 1:
            _held.set((holders, execution.key))
            _slots_by_worker.setdefault(worker, {})[execution.key] = holders
            # The value injected for this run knows the slot it holds; the declaration,
            # shared by every run, stays as declared.
            held = copy.copy(self)
            held._concurrency_key = holders
            return held
        if int(outcome) == 0:
            logger.debug("⏳ %s parked: all %d slots taken", execution.key, self.max_concurrent)
        raise ConcurrencyBlocked(execution, holders, self.max_concurrent)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        held = _held.get()
        if held is None:
            return
        _held.set(None)
        holders, task_key = held
        docket = current_docket.get()
        worker = current_worker.get()
        _slots_by_worker.get(worker, {}).pop(task_key, None)
        # Released even when the run was cancelled (shutdown), so the slot is not held
        # for a whole lease by a run that is gone.
        await asyncio.shield(_release(docket, worker, holders, task_key))

    @classmethod
    @asynccontextmanager
    async def worker_lifecycle(cls, docket: Docket, worker: Worker) -> AsyncIterator[None]:
        """Renew this worker's slot leases and sweep expired slots while it runs."""
        _ensure_maintained(docket, worker)
        try:
            yield
        finally:
            task = _maintainers.pop(worker, None)
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task


class _LimitState(TypedDict):
    """A limit's own keys, all in the control partition (what a partitioned docket's
    limit steps are told)."""

    holders: str
    waiters: str
    registry: str
    limits: str


def _limit_state(docket: Docket, holders: str) -> _LimitState:
    control = docket.keys
    return _LimitState(
        holders=holders,
        waiters=f"{holders}:waiters",
        registry=control.concurrency_registry,
        limits=control.concurrency_limits,
    )


class _LimitKeys(_LimitState):
    """What an unpartitioned docket's taking a slot and releasing one are both told: the
    limit's own keys, and the docket's keys that a slot changing hands reaches."""

    stream: str
    events_prefix: str


def _limit_keys(docket: Docket, holders: str) -> _LimitKeys:
    control = docket.keys
    return _LimitKeys(
        **_limit_state(docket, holders),
        stream=control.stream,
        events_prefix=control.events_prefix,
    )


async def _release(docket: Docket, worker: Worker, holders: str, task_key: str) -> int:
    if docket.partitions > 1:
        woken = await _free_partitioned(docket, worker, holders, task_key)
    else:
        woken = int(
            await docket.engine.scripts.send(
                scripts.ConcurrencyRelease(
                    **_limit_keys(docket, holders),
                    # A woken waiter goes back to its level's stream.
                    high_stream=docket.keys.level_stream(Priority.HIGH),
                    low_stream=docket.keys.level_stream(Priority.LOW),
                    key=task_key,
                    lease=worker.redelivery_timeout.total_seconds(),
                    record_prefix=docket.keys.record_prefix,
                )
            )
        )
    if woken:
        docket.engine.connection.notify_activity()
    return woken


# A partitioned docket's runs live in their own partitions (on a Cluster, on other
# shards than the limit), so no one script can both hold the limit and move a run's
# message: taking a slot and releasing one are two steps each, the limit's in the
# control partition and the run's in its own (see concurrency_take, _park, _free and
# _wake.lua for how a release between the two steps, or a worker dying there, is met).


async def _take_partitioned(
    docket: Docket,
    worker: Worker,
    execution: Execution,
    holders: str,
    max_concurrent: int,
    lease: float,
) -> int:
    """Take a slot, or park the run: 1 held, 0 parked, -1 the message is not ours."""
    took = await docket.engine.scripts.send(
        scripts.ConcurrencyTake(
            **_limit_state(docket, holders),
            key=execution.key,
            max_concurrent=max_concurrent,
            lease=lease,
        )
    )
    if int(took) == 1:
        return 1
    # The run's own partition, ``stream`` naming its level's.
    keys = execution.lane
    return int(
        await docket.engine.scripts.send(
            scripts.ConcurrencyPark(
                stream=keys.stream,
                record=keys.record(execution.key),
                group=GROUP,
                worker=worker.name,
                key=execution.key,
                mid=execution.message_id or "",
                deliveries=execution.deliveries,
                generation=execution.generation,
                holders=holders,
                events_prefix=keys.events_prefix,
            )
        )
    )


async def _free_partitioned(docket: Docket, worker: Worker, holders: str, task_key: str) -> int:
    """Give ``task_key``'s slot back ('' to only sweep) and wake the runs the freed slots
    went to, each in its own partition; a run that is gone gives its slot back in turn.
    Returns how many were woken."""
    waking = f"{holders}:waking"
    lease = worker.redelivery_timeout.total_seconds()
    woken = 0
    giving_back = [task_key]
    while giving_back:
        runs = await docket.engine.scripts.send(
            scripts.ConcurrencyFree(
                **_limit_state(docket, holders),
                waking=waking,
                key=giving_back.pop(),
                lease=lease,
            )
        )
        for raw in runs:
            key = as_text(raw) or ""
            keys = docket.keys_for(key)
            alive = await docket.engine.scripts.send(
                scripts.ConcurrencyWake(
                    stream=keys.stream,
                    record=keys.record(key),
                    high_stream=keys.level_stream(Priority.HIGH),
                    low_stream=keys.level_stream(Priority.LOW),
                    key=key,
                    holders=holders,
                    events_prefix=keys.events_prefix,
                )
            )
            await docket.engine.scripts.send(
                scripts.ConcurrencyWoken(
                    **_limit_state(docket, holders),
                    waking=waking,
                    key=key,
                )
            )
            if int(alive):
                woken += 1
            else:
                giving_back.append(key)
    return woken


async def _maintain(docket: Docket, worker: Worker) -> None:
    interval = max(worker.redelivery_timeout.total_seconds() / 4, 0.05)
    lease = worker.redelivery_timeout.total_seconds()
    # Ends with the worker: a loop started by an acquire has no lifecycle to stop it.
    while worker.entered:
        await asyncio.sleep(interval)
        try:
            held = dict(_slots_by_worker.get(worker, {}))
            if held:
                slots = [scripts.HeldSlot(holders=h, key=key) for key, h in held.items()]
                await docket.engine.scripts.send(scripts.ConcurrencyRenew(lease=lease, slots=slots))
            client = docket.engine.connection.client
            for member in await client.smembers(docket.keys.concurrency_registry):
                holders = member.decode() if isinstance(member, bytes) else str(member)
                await _release(docket, worker, holders, "")
        except (RedisError, OSError) as error:
            logger.warning("Could not maintain concurrency slots: %s", error)

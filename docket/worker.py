"""The consumer side: claim, run, settle; leases, redelivery and the scheduler loop."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager, AsyncExitStack, nullcontext, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from opentelemetry.trace import INVALID_SPAN, SpanKind, Status, StatusCode
from redis.exceptions import RedisError, ResponseError

from ._fallback import default_fallback_task
from ._messages import PoisonMessage, parse_fields
from ._redis.client import BLOCK_SECONDS
from ._redis.keys import GROUP
from ._redis.scripts import script_source
from ._redis.wire import Wire, is_noscript
from ._text import as_text
from ._worker_options import WorkerOptions
from .dependencies import (
    AdmissionBlocked,
    TaskOutcome,
    WorkerShared,
    declared_dependencies,
    get_perpetual,
    resolved_dependencies,
    validate_worker_dependencies,
)
from .dependencies._base import format_duration
from .docket import Docket
from .execution import Disposition, Execution, ExecutionState, from_entry
from .instrumentation import (
    DEAD_LETTERED,
    TASK_DURATION,
    TASK_PUNCTUALITY,
    TASKS_COMPLETED,
    TASKS_FAILED,
    TASKS_PERPETUATED,
    TASKS_REDELIVERED,
    TASKS_RETRIED,
    TASKS_STARTED,
    TASKS_STRICKEN,
    TASKS_SUCCEEDED,
    TASKS_SUPERSEDED,
    WorkerMetrics,
    internal,
    links_for,
    metrics_collected,
    register_worker,
    tracer,
    tracing_active,
    unregister_worker,
)
from .logging import DEFERRABLE

logger = logging.getLogger("docket.worker")

__all__ = ["Worker", "WorkerOptions", "default_fallback_task"]

MOVE_BATCH = 1000
DEFAULT_MAX_DELIVERIES = 5
ADMISSION_RETRY_DELAY = timedelta(milliseconds=100)
_name_counter = itertools.count()


@dataclass
class _Settlement:
    execution: Execution
    state: str  # completed | failed | cancelled | ack
    error: str = ""
    result: bytes = b""


_eager_task = asyncio.create_eager_task_factory(asyncio.Task)


def _log_info(message: str, args: tuple[Any, ...], extra: dict[str, Any]) -> None:
    """``logger.info`` for the two lines every run logs, minus the caller lookup (a stack
    walk that costs as much as the rest of the record): the caller is always
    ``_run_started`` in this file, and one frame up gives its line."""
    line = sys._getframe(1).f_lineno
    record = logger.makeRecord(
        logger.name, logging.INFO, __file__, line, message, args, None, "_run_started", extra
    )
    # Strings and numbers only: a batching handler may format it at the end of the turn.
    setattr(record, DEFERRABLE, True)
    logger.handle(record)


def _default_name() -> str:
    base = f"{socket.gethostname()}#{os.getpid()}"
    n = next(_name_counter)
    return base if n == 0 else f"{base}-{n}"


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class Worker:
    """Runs a docket's tasks: ``async with Worker(docket) as w: await w.run_forever()``."""

    def __init__(
        self,
        docket: Docket,
        name: str | None = None,
        concurrency: int = 10,
        redelivery_timeout: timedelta = timedelta(minutes=5),
        reconnection_delay: timedelta = timedelta(seconds=5),
        minimum_check_interval: timedelta = timedelta(milliseconds=250),
        scheduling_resolution: timedelta = timedelta(milliseconds=250),
        schedule_automatic_tasks: bool = True,
        enable_internal_instrumentation: bool = False,
        fallback_task: Callable[..., Any] | None = None,
        dependencies: Mapping[str, Any] | Sequence[Any] | None = None,
        message_batch: int = 1000,
        *,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        max_tasks: int | None = None,
    ) -> None:
        # The parameters keep the released order; WorkerOptions validates them and is
        # what every other entry point derives its options from.
        self.options = WorkerOptions(
            name=name,
            concurrency=concurrency,
            redelivery_timeout=redelivery_timeout,
            reconnection_delay=reconnection_delay,
            minimum_check_interval=minimum_check_interval,
            scheduling_resolution=scheduling_resolution,
            schedule_automatic_tasks=schedule_automatic_tasks,
            enable_internal_instrumentation=enable_internal_instrumentation,
            fallback_task=fallback_task,
            dependencies=dependencies,
            message_batch=message_batch,
            max_deliveries=max_deliveries,
            max_tasks=max_tasks,
        )
        options = self.options
        self.docket = docket
        self.name = options.name or _default_name()
        self.concurrency = options.concurrency
        self.redelivery_timeout = options.redelivery_timeout
        self.reconnection_delay = options.reconnection_delay
        self.minimum_check_interval = options.minimum_check_interval
        self.scheduling_resolution = options.scheduling_resolution
        self.schedule_automatic_tasks = options.schedule_automatic_tasks
        self.enable_internal_instrumentation = options.enable_internal_instrumentation
        self.fallback_task = options.fallback_task
        self.message_batch = options.message_batch
        self.max_deliveries = options.max_deliveries
        self.max_tasks = options.max_tasks
        """Stop claiming after starting this many runs (None: never); see ``tasks_started``."""
        self.tasks_started = 0
        """How many runs this worker has started."""
        self.dependencies = validate_worker_dependencies(options.dependencies)
        self.shared = WorkerShared()
        """The values of this worker's ``Shared`` dependencies (closed when it exits)."""

        self._active: dict[str, tuple[Execution, asyncio.Task[None]]] = {}
        self._slot_freed = asyncio.Event()
        self._stopping = False
        self._entered = False
        self._background: list[asyncio.Task[None]] = []
        self._settlements: list[_Settlement] = []
        self._settle_wanted = asyncio.Event()
        self._settle_idle = asyncio.Event()
        self._settle_idle.set()
        self._scheduler_wake = asyncio.Event()
        self._user_cancelled: set[str] = set()
        self._begun: set[str] = set()
        self._run_limits: dict[str, int] = {}
        self._run_counts: dict[str, int] = {}
        # Message ids of the runs that used up their key's run_at_most budget.
        self._last_runs: set[str] = set()
        # Of those, the ones whose body is over, for _execute to clean up after.
        self._spent_keys: set[str] = set()
        self._crashes: list[Exception] = []
        self._reclaim_cursor = "0-0"
        self._metrics = WorkerMetrics(docket.name, self.name)
        self._traced_internals = enable_internal_instrumentation
        # Health (see is_healthy): the run loop is going, its last read reached Redis,
        # and so did the last heartbeat, recently.
        self._running_loop = False
        self._reads_ok = True
        self._read_since: float | None = None
        self._heartbeat_ok = False
        self._heartbeat_at: float | None = None
        self._aborting = False
        self._reader_id: int | None = None
        self._reader_generation = 0
        self._unblocking = False
        # The newest of this worker's pending entries claim_delivered.lua has looked at:
        # what a read delivers comes after it (see _read_and_claim). None until read
        # from the group, at the first read and after the group was recreated.
        self._watermark: str | None = None

    def __repr__(self) -> str:
        return f"Worker({self.name!r}, docket={self.docket.name!r}, concurrency={self.concurrency})"

    def labels(self) -> dict[str, str]:
        """The metric labels (and span attributes) of everything this worker does."""
        return dict(self._metrics.base)

    def _internal(self, name: str) -> AbstractContextManager[None]:
        """Scope one internal Redis operation: traced only with internal instrumentation
        enabled, otherwise hidden from instrumented clients."""
        return internal(self._traced_internals, name, self._metrics.base)

    # -- lifetime -------------------------------------------------------------------

    async def __aenter__(self) -> Worker:
        if self._entered:
            raise RuntimeError("A Worker is not re-entrant")
        self._entered = True
        self._stopping = False
        self._traced_internals = (
            self.enable_internal_instrumentation or self.docket.enable_internal_instrumentation
        )
        for task_name in self.docket.tasks:
            self._metrics.running.setdefault(task_name, 0)
        register_worker(self._metrics)
        self._background = [
            asyncio.create_task(self._settler(), name=f"{self.name}-settle"),
            asyncio.create_task(self._heartbeat_loop(), name=f"{self.name}-heartbeat"),
            asyncio.create_task(self._listen(), name=f"{self.name}-listen"),
            asyncio.create_task(self._renew_loop(), name=f"{self.name}-renew"),
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stopping = True
        await self._drain()
        for task in self._background:
            task.cancel()
        for task in self._background:
            with suppress(asyncio.CancelledError, Exception):
                await task
        self._background = []
        with suppress(RedisError, OSError):
            await self.docket._scripts.worker_gone(
                keys=[self.docket.keys.workers, self.docket.keys.worker_tasks(self.name)],
                args=[self.name],
            )
        await self.shared.aclose()
        unregister_worker(self._metrics)
        self._heartbeat_ok = False
        self._entered = False

    async def _drain(self) -> None:
        """Let in-flight runs finish and their outcomes reach Redis."""
        if self._aborting:
            for _, task in list(self._active.values()):
                task.cancel()
        while self._active:
            await asyncio.gather(
                *(task for _, task in self._active.values()), return_exceptions=True
            )
            # Gathering finished tasks does not yield, so drop those whose cleanup never
            # ran (cancelled before their first step) here rather than spin on them.
            for mid, (_, task) in list(self._active.items()):
                if task.done():
                    del self._active[mid]
        await self._flush_settlements()

    def stop(self) -> None:
        """Stop taking new work; the run loop returns once in-flight runs have finished."""
        if not self._stopping and self._active:
            logger.info("Shutdown requested, finishing %d active tasks...", len(self._active))
        self._stopping = True
        self._slot_freed.set()
        self._scheduler_wake.set()
        self.docket._connection.notify_activity()
        if self._reader_id is not None and not self._unblocking:
            self._unblocking = True
            asyncio.get_running_loop().create_task(self._unblock_reader(self._reader_id))

    async def _unblock_reader(self, reader_id: int) -> None:
        # Ends a blocking XREADGROUP early, as if it had timed out, so no delivered message
        # is dropped. Best effort: a least-privilege ACL may forbid CLIENT; then the read
        # simply runs out its block time.
        try:
            await self.docket._connection.client.client_unblock(reader_id)
        except (RedisError, OSError):
            pass
        finally:
            self._unblocking = False

    def abort(self) -> None:
        """Stop now: in-flight runs are cancelled and left unsettled, so other workers
        run them again after the redelivery timeout."""
        self._aborting = True
        self.stop()
        for _, task in list(self._active.values()):
            task.cancel()

    # -- run modes ------------------------------------------------------------------

    async def run_forever(self) -> None:
        await self._run(forever=True)

    async def run_until_finished(self) -> None:
        """Run until nothing is queued or scheduled (so never, while a Perpetual lives)."""
        await self._run(forever=False)

    async def run_at_most(self, iterations_by_key: Mapping[str, int]) -> None:
        """Like ``run_until_finished``, but each listed key runs at most n times."""
        self._run_limits = dict(iterations_by_key)
        self._run_counts = {}
        try:
            await self._run(forever=False)
        finally:
            self._run_limits = {}
            self._last_runs.clear()
            self._spent_keys.clear()

    async def _run(self, forever: bool) -> None:
        if not self._entered:
            async with self:
                await self._run(forever)
            return
        self._stopping = False
        await self._ensure_group()
        if self.schedule_automatic_tasks:
            await self._schedule_automatic_tasks()
        self._running_loop = True
        try:
            await self._run_loops(forever)
        except asyncio.CancelledError:
            if self._aborting:
                raise
            # As released: cancelling the task that runs a worker asks it to stop. What
            # it had in flight was drained on the way out (_run_loops), so the run ends
            # normally instead of raising into its caller.
            logger.info("Worker %s was cancelled; stopped after finishing its runs", self.name)
        finally:
            self._running_loop = False

    async def _run_loops(self, forever: bool) -> None:
        async with AsyncExitStack() as lifecycles:
            for cls in self._lifecycle_classes():
                manager = cls.worker_lifecycle(self.docket, self)  # type: ignore[attr-defined]
                if manager is not None:
                    await lifecycles.enter_async_context(manager)
            loops = [
                asyncio.create_task(self._scheduler_loop(), name=f"{self.name}-scheduler"),
                asyncio.create_task(self._reclaim_loop(), name=f"{self.name}-reclaim"),
            ]
            try:
                await self._consume(forever)
            except asyncio.CancelledError:
                if self._active and not self._aborting and not self._stopping:
                    logger.info(
                        "Shutdown requested, finishing %d active tasks...", len(self._active)
                    )
                raise
            finally:
                for task in loops:
                    task.cancel()
                for task in loops:
                    with suppress(asyncio.CancelledError, Exception):
                        await task
                await self._drain()

    def _lifecycle_classes(self) -> list[type[Any]]:
        """Dependency classes, used by a registered task or the worker, that want a
        ``worker_lifecycle(docket, worker)`` context around the worker's run (background
        subscribers and the like); each is entered once."""
        seen: dict[type[Any], None] = {}
        dependencies: list[Any] = list(self.dependencies.values())
        for function in self.docket.tasks.values():
            dependencies += declared_dependencies(function)
        for dependency in dependencies:
            cls = type(dependency)
            if hasattr(cls, "worker_lifecycle"):
                seen.setdefault(cls, None)
        return list(seen)

    async def _consume(self, forever: bool) -> None:
        connection = self.docket._connection
        wire = connection.dedicated_wire()
        client = connection.client if wire is not None else connection.dedicated()
        try:
            await self._consume_with(client, wire, forever)
        finally:
            self._reader_id = None
            if wire is not None:
                await wire.aclose()
            elif client is not connection.client:
                with suppress(RedisError, OSError):
                    await client.aclose()

    async def _read(
        self, client: Any, count: int, block: float | None
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Up to ``count`` new messages through redis-py, waiting at most ``block`` seconds
        (None: no wait, for the memory engine, which cannot block)."""
        stream = self.docket.keys.stream
        if block is not None and self._reader_id is None:
            self._reader_id = int(await client.client_id())
        if block is None:
            reply = await client.xreadgroup(GROUP, self.name, {stream: ">"}, count=count)
        else:
            reply = await client.xreadgroup(
                GROUP, self.name, {stream: ">"}, count=count, block=int(block * 1000)
            )
        return reply[0][1] if reply else []

    async def _read_and_claim(
        self, wire: Wire, count: int, block: float
    ) -> tuple[list[tuple[str, dict[bytes, bytes], str]], list[tuple[str, dict[bytes, bytes]]]]:
        """Up to ``count`` new messages, read and claimed in one round trip: the claimed
        ones with their start times, and those read but left unclaimed.

        The blocking ``XREADGROUP`` and the script that claims what it delivered
        (``claim_delivered.lua``) are sent together; Redis runs the script the moment the
        read returns, and both replies come back at once.
        """
        if self._reader_id is None or self._reader_generation != wire.generation:
            # The id CLIENT UNBLOCK needs, fetched again after any reconnect.
            self._reader_id = int(await wire.call("CLIENT", "ID"))
            self._reader_generation = wire.generation
        keys = self.docket.keys
        if self._watermark is None:
            self._watermark = await self._last_delivered(wire)
        sha = self.docket._scripts.claim_delivered.sha
        read: tuple[Any, ...] = ("XREADGROUP", "GROUP", GROUP, self.name, "COUNT", count)
        read += ("BLOCK", int(block * 1000), "STREAMS", keys.stream, ">")
        args = (GROUP, self.name, self._watermark, count, keys.events_prefix, keys.record_prefix)
        delivered, reply = await wire.pipeline([read, ("EVALSHA", sha, 1, keys.stream, *args)])
        if isinstance(delivered, ResponseError):
            raise delivered
        if isinstance(reply, ResponseError):
            if not is_noscript(reply):
                raise reply
            # The server lost its scripts (a restart): load it, and claim what was read.
            reply = await wire.evalsha(sha, script_source("claim_delivered"), [keys.stream], args)
        watermark, entries = reply
        self._watermark = as_text(watermark) or self._watermark
        claimed: list[tuple[str, dict[bytes, bytes], str]] = []
        unclaimed: list[tuple[str, dict[bytes, bytes]]] = []
        for raw_mid, flat, started in entries:
            mid = as_text(raw_mid) or ""
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            if started is None:
                unclaimed.append((mid, fields))
            else:
                claimed.append((mid, fields, as_text(started) or ""))
        return claimed, unclaimed

    async def _last_delivered(self, wire: Wire) -> str:
        """The consumer group's last delivered id. Entries pending for this worker's
        name from before it are not this process's deliveries: left to redelivery, which
        counts them, rather than claimed by its reads (a worker restarted under the
        same name must not rerun a crashing task without the count going up)."""
        try:
            groups = await wire.call("XINFO", "GROUPS", self.docket.keys.stream)
        except ResponseError as error:
            if "no such key" not in str(error).lower():
                raise
            # The stream is gone (a Redis restart lost it): the read that follows fails
            # with NOGROUP, which recreates the group and asks again.
            return "0-0"
        for flat in groups:
            info = dict(zip(flat[::2], flat[1::2], strict=True))
            if info.get(b"name") == GROUP.encode():
                return as_text(info.get(b"last-delivered-id")) or "0-0"
        return "0-0"

    async def _dispatch_claimed(
        self,
        claimed: list[tuple[str, dict[bytes, bytes], str]],
        unclaimed: list[tuple[str, dict[bytes, bytes]]],
    ) -> None:
        """Start what ``_read_and_claim`` claimed; the rest goes the usual way."""
        poison: list[Any] = []
        for mid, fields, started_at in claimed:
            try:
                execution = self._decode(mid, fields, 1, False)
            except Exception as error:
                poison += [mid, self._poison_reason(mid, 1, error), 1]
                continue
            self._start_claimed(execution, started_at)
        if poison:
            await self._dead_letter(poison)
        if unclaimed:
            await self._dispatch([(mid, fields, 1, False) for mid, fields in unclaimed])

    async def _consume_with(self, client: Any, wire: Wire | None, forever: bool) -> None:
        connection = self.docket._connection
        check = max(_seconds(self.minimum_check_interval), 0.001)
        while not self._stopping:
            if self._crashes:
                crashes, self._crashes = self._crashes, []
                raise ExceptionGroup(f"Worker {self.name} could not run its tasks", crashes)
            try:
                free = self.concurrency - len(self._active)
                if free <= 0:
                    self._slot_freed.clear()
                    if self.concurrency - len(self._active) <= 0:
                        await self._slot_freed.wait()
                    continue
                count = self._claim_budget(free)
                wait = BLOCK_SECONDS if forever else check
                self._read_since = time.monotonic()
                claimed: list[tuple[str, dict[bytes, bytes], str]] = []
                unclaimed: list[tuple[str, dict[bytes, bytes]]] = []
                entries: list[tuple[bytes, dict[bytes, bytes]]] = []
                with self._internal("docket.read"):
                    if wire is not None:
                        claimed, unclaimed = await self._read_and_claim(wire, count, wait)
                    else:
                        block = None if connection.is_memory else wait
                        entries = await self._read(client, count, block)
                self._read_since = None
                self._reads_ok = True
                if entries and connection.is_memory:
                    # The in-process engine answers without suspending: without this, a
                    # steady supply of work (a Perpetual with no interval) would keep this
                    # loop from ever giving the event loop back.
                    await asyncio.sleep(0)
                if claimed or unclaimed:
                    await self._dispatch_claimed(claimed, unclaimed)
                    continue
                if entries:
                    await self._dispatch(
                        [(as_text(mid) or "", fields, 1, False) for mid, fields in entries]
                    )
                    continue
                if not forever:
                    with self._internal("docket.finished"):
                        finished = await self._finished()
                    if finished:
                        return
                if connection.is_memory and connection.activity is not None:
                    await connection.activity.wait(wait)
            except ResponseError as error:
                self._read_since = None
                if "NOGROUP" in str(error):
                    logger.warning("The consumer group is gone (Redis restarted?); recreating it")
                    self._watermark = None
                    await self._recover(self._ensure_group)
                else:
                    self._reads_ok = False
                    await self._redis_trouble(error)
            except (RedisError, OSError) as error:
                self._read_since = None
                self._reads_ok = False
                self._reader_id = None
                await self._redis_trouble(error)

    async def _redis_trouble(self, error: BaseException) -> None:
        delay = _seconds(self.reconnection_delay)
        logger.error("Redis error in worker %s: %s; retrying in %.1fs", self.name, error, delay)
        await asyncio.sleep(delay)

    async def _recover(self, action: Callable[[], Awaitable[Any]]) -> None:
        try:
            await action()
        except (RedisError, OSError) as error:
            await self._redis_trouble(error)

    async def _ensure_group(self) -> None:
        await self.docket._scripts.ensure_group(keys=[self.docket.keys.stream], args=[GROUP])

    async def _finished(self) -> bool:
        if self._active or self._settlements or not self._settle_idle.is_set():
            return False
        client = self.docket._connection.client
        async with client.pipeline(transaction=False) as pipe:
            pipe.zcard(self.docket.keys.queue)
            pipe.xlen(self.docket.keys.stream)
            # Runs parked behind a concurrency limit are neither scheduled nor queued.
            pipe.scard(self.docket.keys.concurrency_registry)
            scheduled, queued, limited = await pipe.execute()
        return int(scheduled) == 0 and int(queued) == 0 and int(limited) == 0

    # -- claiming -------------------------------------------------------------------

    def _decode(
        self, mid: str, fields: dict[bytes, bytes], deliveries: int, redelivered: bool
    ) -> Execution:
        raw_name = fields.get(b"function") or b""
        function = self.docket.tasks.get(raw_name.decode(errors="replace"))
        if function is None:
            if self.fallback_task is None:
                # Malformed entries are reported as such, not as an unknown task.
                message = parse_fields(fields)
                raise PoisonMessage(f"unknown task {message.function_name[:200]!r}")
            function = self.fallback_task
        execution = from_entry(
            self.docket, fields, function, message_id=mid, redelivered=redelivered
        )
        execution.deliveries = deliveries
        return execution

    @staticmethod
    def _poison_reason(mid: str, deliveries: int, error: Exception) -> str:
        # Whatever goes wrong decoding one entry is that entry's problem alone.
        reason = (
            str(error)
            if isinstance(error, PoisonMessage)
            else f"cannot decode ({type(error).__name__}: {error})"
        )
        logger.error("Dead-lettering message %s (delivery %d): %s", mid, deliveries, reason)
        return reason

    async def _dead_letter(self, poison: list[Any]) -> None:
        """Move entries that can never run to the dead-letter stream: ``poison`` holds
        id, reason and delivery count for each."""
        docket = self.docket
        keys = docket.keys
        with self._internal("docket.dead_letter"):
            await docket._scripts.dead_letter(
                keys=[keys.stream, keys.dead_letters],
                args=[
                    GROUP,
                    self.name,
                    keys.record_prefix,
                    keys.events_prefix,
                    docket.execution_ttl.total_seconds(),
                    *poison,
                ],
            )
        DEAD_LETTERED.add(len(poison) // 3, self._metrics.base)

    async def _dispatch(self, entries: list[tuple[str, dict[bytes, bytes], int, bool]]) -> None:
        docket = self.docket
        keys = docket.keys
        runnable: list[Execution] = []
        poison: list[Any] = []
        for mid, fields, deliveries, redelivered in entries:
            try:
                runnable.append(self._decode(mid, fields, deliveries, redelivered))
            except Exception as error:
                poison += [mid, self._poison_reason(mid, deliveries, error), deliveries]
        if poison:
            await self._dead_letter(poison)
        if not runnable:
            return
        claim_args: list[Any] = [GROUP, self.name, keys.events_prefix, keys.record_prefix]
        for execution in runnable:
            claim_args += [
                execution.message_id,
                execution.generation,
                int(execution.redelivered),
                execution.deliveries,
            ]
        # Scoped to the script alone: the runs started below must not inherit it.
        with self._internal("docket.claim"):
            started = await docket._scripts.run(
                "claim", [keys.stream, *(keys.record(e.key) for e in runnable)], claim_args
            )
        for execution, started_at in zip(runnable, started, strict=True):
            if isinstance(started_at, int):
                if started_at < 0:
                    logger.warning(
                        "Lost %s to another worker before starting it", execution.call_repr()
                    )
                else:
                    # A stale copy (replaced, cancelled or superseded) was acked away.
                    TASKS_SUPERSEDED.add(1, self._metrics.task_labels(execution.function_name))
                continue
            self._start_claimed(execution, started_at)

    def _start_claimed(self, execution: Execution, started_at: str | bytes) -> None:
        """Start a run claim.lua or claim_delivered.lua made RUNNING at ``started_at``."""
        execution.state = ExecutionState.RUNNING
        execution.worker = self.name
        execution.started_at = datetime.fromtimestamp(float(started_at), UTC)
        self._start(execution)

    def _claim_budget(self, free: int) -> int:
        """How many messages the next read may claim: no more than free slots, the
        batch size, or (with ``max_tasks``) the runs left before the worker recycles."""
        budget = min(free, self.message_batch)
        if self.max_tasks is not None:
            budget = min(budget, max(self.max_tasks - self.tasks_started, 1))
        return budget

    def _start(self, execution: Execution) -> None:
        mid = execution.message_id
        assert mid is not None
        self.tasks_started += 1
        if self.max_tasks is not None and self.tasks_started >= self.max_tasks:
            if not self._stopping:
                logger.info("Worker %s started %d runs: recycling", self.name, self.tasks_started)
            self.stop()
        # Started eagerly: the run goes as far as its first await right here, so one that
        # never awaits finishes without a trip through the event loop.
        task = _eager_task(
            asyncio.get_running_loop(), self._execute(execution), name=f"docket:{execution.key}"
        )
        if task.done():
            self._begun.discard(mid)
            self._note_crash(task)
            return
        self._active[mid] = (execution, task)
        # A task cancelled before its first step (a cancel or an abort right after the
        # claim) never runs _execute's ``finally``; without this its entry would stay
        # and _drain would spin on it forever.
        task.add_done_callback(lambda done: self._forget(mid, done))

    def _note_crash(self, task: asyncio.Task[None]) -> None:
        """_execute handles everything a task can do; what still escapes it is a bug in
        the worker itself, which stops the run loop (raised from it as an
        ExceptionGroup, as the released worker's task group does) instead of being lost.
        The message stays pending, so another worker runs it after the redelivery
        timeout."""
        if not task.cancelled() and isinstance(error := task.exception(), Exception):
            self._crashes.append(error)
            self._slot_freed.set()

    def _forget(self, mid: str, task: asyncio.Task[None]) -> None:
        self._begun.discard(mid)
        self._note_crash(task)
        entry = self._active.get(mid)
        if entry is not None and entry[1] is task:
            del self._active[mid]
            self._slot_freed.set()

    def _blocked_reason(self, execution: Execution) -> str | None:
        if execution.key in self._user_cancelled:
            self._user_cancelled.discard(execution.key)
            return "cancelled"
        strikes = self.docket.strike_list
        if strikes and strikes.is_stricken(execution.function_name, execution.arguments_by_name()):
            return "struck"
        limit = self._run_limits.get(execution.key)
        if limit is not None and self._run_counts.get(execution.key, 0) >= limit:
            return "run limit reached"
        return None

    # -- running --------------------------------------------------------------------

    async def _execute(self, execution: Execution) -> None:
        assert execution.message_id is not None
        self._begun.add(execution.message_id)
        try:
            settlement = await self._run_task(execution)
            if settlement is None:
                return
            self._settle(settlement)
            if self._spent_keys and execution.message_id in self._spent_keys:
                self._spent_keys.discard(execution.message_id)
                # The last run of its key that run_at_most allows scheduled no successor
                # (its completion handler was skipped), but a retry or its body may have
                # added or replaced one: withdraw that, so run_at_most ends instead of
                # waiting for it.
                # Never this run itself: its own settlement may not have landed yet.
                await self.docket._cancel(execution.key, other_than=execution.generation)
        except asyncio.CancelledError:
            # Cancelled by a hard shutdown: leave the message pending so another worker
            # picks it up after the redelivery timeout.
            raise
        except Exception:
            logger.exception("Worker %s failed to finish %s", self.name, execution.call_repr())
        finally:
            assert execution.message_id is not None
            self._active.pop(execution.message_id, None)
            self._slot_freed.set()
            if self._user_cancelled and execution.key in self._user_cancelled:
                self._drop_cancel_mark(execution.key)

    async def _run_task(self, execution: Execution) -> _Settlement | None:
        metric_labels = self._metrics.task_labels(execution.function_name)
        blocked = self._blocked_reason(execution)
        if blocked is not None:
            logger.info("Skipping %s: %s", execution.call_repr(), blocked)
            if blocked == "struck":
                TASKS_STRICKEN.add(1, metric_labels)
            return _Settlement(execution, "cancelled", blocked)

        running = self._metrics.running
        task_name = execution.function_name
        running[task_name] = running.get(task_name, 0) + 1
        try:
            return await self._run_started(execution, metric_labels)
        finally:
            running[task_name] -= 1

    def _count_run(self, execution: Execution) -> None:
        """Count a run against its key's run_at_most budget as it starts, not as it
        ends: the key's next run (a Perpetual's successor) may be claimed before this one
        has finished, and must already see the budget used up."""
        limit = self._run_limits.get(execution.key)
        if limit is None:
            return
        count = self._run_counts.get(execution.key, 0) + 1
        self._run_counts[execution.key] = count
        if count == limit:
            assert execution.message_id is not None
            self._last_runs.add(execution.message_id)

    @staticmethod
    def _count_start(execution: Execution, labels: dict[str, str], punctuality: float) -> None:
        TASKS_STARTED.add(1, labels)
        if execution.redelivered:
            TASKS_REDELIVERED.add(1, labels)
        TASK_PUNCTUALITY.record(punctuality, labels)

    async def _run_started(
        self, execution: Execution, metric_labels: dict[str, str]
    ) -> _Settlement | None:
        function = execution.function
        assert function is not None
        # Per-task logging is the costliest thing a no-op run does: build the lines' parts
        # only when INFO is on.
        logged = logger.isEnabledFor(logging.INFO)
        call_repr = execution.call_repr() if logged else ""
        started = time.perf_counter()
        punctuality = (execution.started_at or datetime.now(UTC)) - execution.when
        # Metrics count a run as started once admitted (or once it failed on the way
        # there), and then as completed however it ends; a run an admission gate turns
        # away (parked, rescheduled or dropped) is neither, like the start log line.
        admitted = False
        log_context = {
            "docket": self.docket.name,
            "worker": self.name,
            "task": execution.function_name,
            "key": execution.key,
            "attempt": execution.attempt,
        }
        try:
            with (
                tracer.start_as_current_span(
                    execution.function_name,
                    kind=SpanKind.CONSUMER,
                    links=links_for(execution.trace_context),
                    attributes={
                        "docket.name": self.docket.name,
                        "docket.task": execution.function_name,
                        "docket.key": execution.key,
                        "docket.attempt": execution.attempt,
                        "docket.when": execution.when.isoformat(),
                        "code.function.name": execution.function_name,
                        "docket.worker": self.name,
                    },
                )
                if tracing_active()
                else nullcontext(INVALID_SPAN)
            ) as span:
                resolution = resolved_dependencies(self, execution, self.dependencies)
                result: Any = None
                error: BaseException | None = None
                try:
                    # The run's exception leaves the ``async with`` so generator dependencies
                    # see it; a DependencyExceptionGroup from entering lands here too, and the
                    # resolution still holds its handlers (a Retry retries broken deps).
                    async with resolution:
                        # Logged once admitted, inside the run's context: a run an admission
                        # gate turns away has not started, and worker dependencies (a
                        # restored request id, say) already apply to this line.
                        admitted = True
                        if self._run_limits:
                            self._count_run(execution)
                        self._count_start(execution, metric_labels, punctuality.total_seconds())
                        if logged:
                            _log_info(
                                "↪ [%s] %s",
                                (format_duration(punctuality.total_seconds()), call_repr),
                                log_context,
                            )
                        kwargs = {**execution.kwargs, **resolution.arguments}
                        if resolution.runtime is not None:
                            result = await resolution.runtime.run(
                                execution, function, execution.args, kwargs
                            )
                        else:
                            result = function(*execution.args, **kwargs)
                            if inspect.isawaitable(result):
                                result = await result
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    by_body = current is not None and current.cancelling() == 0
                    # Not a cancel of this run (docket.cancel) nor one the body raised
                    # itself: the worker is shutting down hard; leave the message
                    # pending for another worker.
                    if execution.key not in self._user_cancelled and not by_body:
                        raise
                    self._user_cancelled.discard(execution.key)
                    duration = time.perf_counter() - started
                    logger.info(
                        "✗ [%s] %s cancelled",
                        format_duration(duration),
                        execution.call_repr(),
                        extra=log_context,
                    )
                    return _Settlement(execution, "cancelled", "cancelled")
                except AdmissionBlocked as refusal:
                    return await self._admission_blocked(execution, refusal, log_context)
                except Exception as exc:
                    error = exc
                    if not admitted:
                        admitted = True
                        if self._run_limits:
                            self._count_run(execution)
                        self._count_start(execution, metric_labels, punctuality.total_seconds())

                # The body is over: a cancel arriving from here on only marks the run, as
                # cancelling it now would leave its message unsettled until redelivery.
                self._begun.discard(execution.message_id or "")
                # The last run run_at_most allows for its key ends with its own outcome:
                # no successor (a Perpetual's next run) is scheduled for a run that may
                # not happen. A retry is this run going on, so it is scheduled, then
                # withdrawn by _execute, and the key ends cancelled, as released.
                last_run = bool(self._last_runs) and execution.message_id in self._last_runs
                if last_run:
                    self._last_runs.discard(execution.message_id or "")
                    self._spent_keys.add(execution.message_id or "")
                outcome = TaskOutcome(
                    duration=timedelta(seconds=time.perf_counter() - started),
                    result=result,
                    exception=error,
                )
                duration_text = format_duration(outcome.duration.total_seconds()) if logged else ""
                if error is not None:
                    TASKS_FAILED.add(1, metric_labels)
                    span.record_exception(error)
                    span.set_status(Status(StatusCode.ERROR, str(error)))
                    handler = resolution.failure_handler
                    if handler is not None and await handler.handle_failure(execution, outcome):
                        self._count_successor(execution, TASKS_RETRIED, metric_labels)
                        return _Settlement(execution, "ack")
                else:
                    TASKS_SUCCEEDED.add(1, metric_labels)
                    if span.is_recording():
                        span.set_status(Status(StatusCode.OK))
                completion = resolution.completion_handler if not last_run else None
                if completion is not None and await completion.on_complete(execution, outcome):
                    self._count_successor(execution, TASKS_PERPETUATED, metric_labels)
                    return _Settlement(execution, "ack")
                if error is not None:
                    logger.error(
                        "✗ [%s] %s",
                        format_duration(outcome.duration.total_seconds()),
                        execution.call_repr(),
                        exc_info=error,
                        extra=log_context,
                    )
                    return self._failed(execution, error)
                if logged:
                    _log_info("↩ [%s] %s", (duration_text, call_repr), log_context)
                return self._completed(execution, result)
        finally:
            if admitted:
                TASKS_COMPLETED.add(1, metric_labels)
                TASK_DURATION.record(time.perf_counter() - started, metric_labels)

    @staticmethod
    def _count_successor(execution: Execution, counter: Any, labels: dict[str, str]) -> None:
        """Count what a Retry or Perpetual did when it took a run's outcome over."""
        rescheduled = execution._rescheduled
        if rescheduled is Disposition.SCHEDULED:
            counter.add(1, labels)
        elif rescheduled is Disposition.SUPERSEDED:
            TASKS_SUPERSEDED.add(1, labels)
        elif rescheduled is Disposition.STRUCK:
            TASKS_STRICKEN.add(1, labels)

    async def _admission_blocked(
        self, execution: Execution, blocked: AdmissionBlocked, log_context: dict[str, Any]
    ) -> _Settlement | None:
        if blocked.handled:
            # The dependency already dealt with the message (parked it, say).
            return None
        if blocked.reschedule:
            delay = blocked.retry_delay or ADMISSION_RETRY_DELAY
            logger.debug(
                "⏳ %s blocked by %s; trying again in %s",
                execution.call_repr(),
                blocked.reason,
                delay,
                extra=log_context,
            )
            await self.docket._reschedule(execution, datetime.now(UTC) + delay)
            return _Settlement(execution, "ack")
        logger.info("⏭ %s dropped: %s", execution.call_repr(), blocked.reason, extra=log_context)
        return _Settlement(execution, "cancelled", f"dropped: {blocked.reason}")

    def _completed(self, execution: Execution, result: Any) -> _Settlement:
        data = b""
        if result is not None and self.docket.execution_ttl > timedelta(0):
            try:
                data = self.docket._dump_result(execution.key, result)
            except TypeError as error:
                return _Settlement(execution, "failed", str(error))
        return _Settlement(execution, "completed", "", data)

    def _failed(self, execution: Execution, error: BaseException) -> _Settlement:
        data = b""
        if self.docket.execution_ttl > timedelta(0):
            with suppress(Exception):
                data = self.docket._dump_result(execution.key, error)
        return _Settlement(execution, "failed", f"{type(error).__name__}: {error}", data)

    # -- settling -------------------------------------------------------------------

    def _settle(self, settlement: _Settlement) -> None:
        self._settlements.append(settlement)
        self._settle_idle.clear()
        self._settle_wanted.set()

    async def _flush_settlements(self) -> None:
        while self._settlements or not self._settle_idle.is_set():
            if not self._background:
                await self._settle_batch()
                continue
            await self._settle_idle.wait()

    async def _settler(self) -> None:
        while True:
            await self._settle_wanted.wait()
            self._settle_wanted.clear()
            while self._settlements:
                await self._settle_batch()
            self._settle_idle.set()

    async def _settle_batch(self) -> None:
        batch, self._settlements = self._settlements, []
        if not batch:
            self._settle_idle.set()
            return
        docket = self.docket
        if docket._results.external:
            await self._store_results(batch)
        keys = docket.keys
        script_keys = [keys.stream]
        args: list[Any] = [
            GROUP,
            self.name,
            docket.execution_ttl.total_seconds(),
            keys.events_prefix,
            keys.record_prefix,
        ]
        for item in batch:
            execution = item.execution
            script_keys += [
                keys.record(execution.key),
                keys.result(execution.key, execution.generation),
            ]
            args += [
                execution.message_id,
                execution.generation,
                execution.deliveries,
                item.state,
                item.error,
                item.result,
            ]
        while True:
            try:
                with self._internal("docket.settle"):
                    outcomes = await docket._scripts.run("settle", script_keys, args)
                break
            except (RedisError, OSError) as error:
                if self._stopping and not self._background:
                    raise
                await self._redis_trouble(error)
        for item, outcome in zip(batch, outcomes, strict=True):
            if int(outcome) == 0:
                logger.warning(
                    "Lost the lease on %s before settling it; another worker owns it now",
                    item.execution.call_repr(),
                )

    async def _store_results(self, batch: list[_Settlement]) -> None:
        """Put the batch's results in the docket's own result_storage before their final
        states are settled, so a run reads as finished only once its result is there. A
        failed put keeps the final state; the run's record says the result was lost."""
        results = self.docket._results
        pending = [item for item in batch if item.result]
        saved = await asyncio.gather(
            *(results.save(item.execution, item.result) for item in pending)
        )
        for item, (marker, problem) in zip(pending, saved, strict=True):
            item.result = marker
            if problem and item.state == "completed":
                item.error = problem

    # -- background loops -----------------------------------------------------------

    async def _scheduler_loop(self) -> None:
        docket = self.docket
        keys = docket.keys
        while not self._stopping:
            try:
                with self._internal("docket.move_due"):
                    moved, delay_text = await docket._scripts.run(
                        "move_due",
                        [keys.queue, keys.stream],
                        [keys.record_prefix, MOVE_BATCH, keys.events_prefix],
                    )
                if int(moved):
                    docket._connection.notify_activity()
                if int(moved) >= MOVE_BATCH:
                    continue
                delay = float(delay_text)
                # Pub/sub wakes the scheduler for earlier tasks; the resolution bounds how
                # late a task can be if such a wake-up is ever missed.
                cap = max(_seconds(self.scheduling_resolution), 0.001)
                sleep_for = cap if delay < 0 else min(delay, cap)
                self._scheduler_wake.clear()
                if sleep_for > 0:
                    with suppress(TimeoutError):
                        await asyncio.wait_for(self._scheduler_wake.wait(), sleep_for)
            except (RedisError, OSError) as error:
                await self._redis_trouble(error)

    async def _reclaim_loop(self) -> None:
        interval = max(min(_seconds(self.redelivery_timeout) / 4, 5.0), 0.05)
        while not self._stopping:
            try:
                await self._reclaim()
            except ResponseError as error:
                # A stream lost with its group (Redis restarted): the read loop says so and
                # recreates it; until then there is nothing to reclaim.
                if "NOGROUP" not in str(error):
                    await self._redis_trouble(error)
            except (RedisError, OSError) as error:
                await self._redis_trouble(error)
            await asyncio.sleep(interval)

    async def _reclaim(self) -> None:
        free = self.concurrency - len(self._active)
        if free <= 0 or self._stopping:
            return
        docket = self.docket
        keys = docket.keys
        with self._internal("docket.reclaim"):
            cursor, claimed, deleted, dead = await docket._scripts.reclaim(
                keys=[keys.stream, keys.dead_letters],
                args=[
                    GROUP,
                    self.name,
                    int(_seconds(self.redelivery_timeout) * 1000),
                    self._reclaim_cursor,
                    self._claim_budget(free),
                    self.max_deliveries,
                    keys.record_prefix,
                    keys.events_prefix,
                    docket.execution_ttl.total_seconds(),
                ],
            )
        self._reclaim_cursor = as_text(cursor) or "0-0"
        if int(dead):
            DEAD_LETTERED.add(int(dead), self._metrics.base)
            logger.error("Dead-lettered %d message(s) that kept failing to finish", int(dead))
        for mid in deleted:
            logger.debug("Pending message %s was deleted before it finished", as_text(mid))
        entries: list[tuple[str, dict[bytes, bytes], int, bool]] = []
        for item in claimed:
            mid, deliveries, *flat = item
            fields = {flat[i]: flat[i + 1] for i in range(0, len(flat) - 1, 2)}
            entries.append((as_text(mid) or "", fields, int(deliveries), True))
        if entries:
            logger.warning("Redelivering %d task(s) from unresponsive workers", len(entries))
            await self._dispatch(entries)

    async def _renew_loop(self) -> None:
        interval = max(_seconds(self.redelivery_timeout) / 4, 0.01)
        while True:
            await asyncio.sleep(interval)
            if not self._active:
                continue
            args: list[Any] = [GROUP, self.name]
            for mid, (execution, _) in list(self._active.items()):
                args += [mid, execution.deliveries]
            try:
                with self._internal("docket.renew"):
                    lost = await self.docket._scripts.renew(
                        keys=[self.docket.keys.stream], args=args
                    )
            except (RedisError, OSError) as error:
                logger.warning("Could not renew leases: %s", error)
                continue
            for mid in lost:
                entry = self._active.get(as_text(mid) or "")
                if entry is not None:
                    logger.warning(
                        "Lease on %s was taken over by another worker", entry[0].call_repr()
                    )

    async def _heartbeat_loop(self) -> None:
        docket = self.docket
        interval = max(_seconds(docket.heartbeat_interval), 0.01)
        window = interval * docket.missed_heartbeats
        while True:
            try:
                with self._internal("docket.heartbeat"):
                    await docket._scripts.heartbeat(
                        keys=[docket.keys.workers, docket.keys.worker_tasks(self.name)],
                        args=[self.name, window, *sorted(docket.tasks)],
                    )
                    self._heartbeat_ok = True
                    self._heartbeat_at = time.monotonic()
                    if metrics_collected():
                        await self._sample_depths()
                    if self.schedule_automatic_tasks and not self._stopping:
                        await self._schedule_automatic_tasks()
            except (RedisError, OSError) as error:
                self._heartbeat_ok = False
                logger.warning("Heartbeat failed: %s", error)
            await asyncio.sleep(interval)

    async def _sample_depths(self) -> None:
        """Sample the queue and schedule depths for the gauges (read on collection).
        Best effort: a failed sample keeps the last one and never fails the heartbeat."""
        keys = self.docket.keys
        client = self.docket._connection.client
        try:
            seconds, micros = await client.time()
            now = seconds + micros / 1_000_000
            async with client.pipeline(transaction=False) as pipe:
                pipe.xlen(keys.stream)
                pipe.xpending(keys.stream, GROUP)
                pipe.zcount(keys.queue, "-inf", now)
                pipe.zcount(keys.queue, f"({now}", "+inf")
                length, pending, overdue, future = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as error:
            logger.debug("Could not sample queue depths: %s", error)
            return
        if isinstance(length, Exception) or isinstance(overdue, Exception):
            return
        # Entries delivered but not yet settled are running, not waiting (an error here
        # means no consumer group yet, so nothing is delivered).
        claimed = int(pending["pending"]) if isinstance(pending, dict) else 0
        self._metrics.queue_depth = max(int(length) - claimed, 0) + int(overdue)
        if not isinstance(future, Exception):
            self._metrics.schedule_depth = int(future)

    async def _schedule_automatic_tasks(self) -> None:
        # Internal: traced only with internal instrumentation enabled, and counted only
        # when it scheduled something (not every time it finds the task in place).
        with self._internal("docket.schedule_automatic"):
            for name, function in list(self.docket.tasks.items()):
                perpetual = get_perpetual(function)
                if perpetual is None or not perpetual.automatic:
                    continue
                # What ``docket.add(function, when=..., key=name)()`` does, flagged.
                resolved, task_name = self.docket._resolve(function)
                await self.docket._schedule(
                    "add", resolved, perpetual.initial_when, name, (), {}, task_name, automatic=True
                )

    async def _listen(self) -> None:
        """Pub/sub: wake the scheduler for earlier tasks, and cancel running ones."""
        keys = self.docket.keys
        while True:
            try:
                pubsub = self.docket._connection.client.pubsub()
                with self._internal("docket.listen"):
                    await pubsub.subscribe(keys.wake_channel, keys.cancel_channel)
                try:
                    while True:
                        with self._internal("docket.listen"):
                            message = await pubsub.get_message(
                                ignore_subscribe_messages=True, timeout=1.0
                            )
                        if message is None:
                            continue
                        channel = as_text(message["channel"])
                        if channel == keys.wake_channel:
                            self._scheduler_wake.set()
                        elif channel == keys.cancel_channel:
                            self._cancel_running(as_text(message["data"]) or "")
                finally:
                    await pubsub.aclose()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as error:
                logger.warning("Worker %s lost its pub/sub connection: %s", self.name, error)
                await asyncio.sleep(_seconds(self.reconnection_delay))

    def _drop_cancel_mark(self, key: str) -> None:
        """Forget a cancel aimed at a run of ``key`` that is over (it came too late to
        stop it), unless another run of the key is still here to see it."""
        if all(execution.key != key for execution, _ in self._active.values()):
            self._user_cancelled.discard(key)

    def _cancel_running(self, key: str) -> None:
        for mid, (execution, task) in list(self._active.items()):
            if execution.key == key:
                self._user_cancelled.add(key)
                # A run that has not taken its first step is not cancelled from outside:
                # it would vanish without settling its message. It sees the mark instead.
                if mid in self._begun:
                    task.cancel()

    # -- command-line entry ---------------------------------------------------------

    @classmethod
    async def run(
        cls,
        docket_name: str = "docket",
        url: str = "redis://localhost:6379/0",
        name: str | None = None,
        concurrency: int = 10,
        redelivery_timeout: timedelta = timedelta(minutes=5),
        reconnection_delay: timedelta = timedelta(seconds=5),
        minimum_check_interval: timedelta = timedelta(milliseconds=100),
        scheduling_resolution: timedelta = timedelta(milliseconds=250),
        schedule_automatic_tasks: bool = True,
        enable_internal_instrumentation: bool = False,
        until_finished: bool = False,
        healthcheck_port: int | None = None,
        metrics_port: int | None = None,
        tasks: list[str] = ["docket.tasks:standard_tasks"],  # noqa: B006 - never mutated
        fallback_task: str | Callable[..., Any] | None = None,
        message_batch: int = 1000,
        dependencies: Mapping[str, Any] | Sequence[Any] | str | None = None,
        **options: Any,
    ) -> None:
        """Run a worker the way the CLI does (the arguments keep the released order;
        ``options`` takes any other ``WorkerOptions`` field, such as ``max_deliveries``
        or ``max_tasks``).

        ``tasks`` are ``module:name`` task collections to register; ``fallback_task``
        and ``dependencies`` may be given as ``module:name`` paths. SIGTERM/SIGINT stop
        claiming and drain in-flight tasks; a second signal exits at once.
        ``healthcheck_port`` serves ``is_healthy()`` as 200/503; ``metrics_port`` serves
        Prometheus text and raises ``MetricsUnavailable`` (saying how to install the
        ``metrics`` extra) when it cannot. Embedded in another framework, use
        ``run_forever()`` inside ``async with Worker(...)`` instead: it installs no
        signal handlers.
        """
        from ._worker_run import run_worker

        worker_options = WorkerOptions.imported(
            name=name,
            concurrency=concurrency,
            redelivery_timeout=redelivery_timeout,
            reconnection_delay=reconnection_delay,
            minimum_check_interval=minimum_check_interval,
            scheduling_resolution=scheduling_resolution,
            schedule_automatic_tasks=schedule_automatic_tasks,
            enable_internal_instrumentation=enable_internal_instrumentation,
            fallback_task=fallback_task or None,
            dependencies=dependencies or None,
            message_batch=message_batch,
            **options,
        )
        await run_worker(
            cls,
            worker_options,
            docket_name=docket_name,
            url=url,
            until_finished=until_finished,
            healthcheck_port=healthcheck_port,
            metrics_port=metrics_port,
            tasks=tasks,
        )

    def is_healthy(self) -> bool:
        """Whether the worker loop is alive and Redis reachable: it is running (or
        draining), its last read from the stream succeeded and no read hangs, and its
        last heartbeat succeeded within the window other workers judge liveness by
        (``heartbeat_interval * missed_heartbeats``)."""
        return self.health_problem() is None

    def health_problem(self) -> str | None:
        """Why the worker is not healthy, or None when it is."""
        if not self._running_loop:
            return "the worker loop is not running"
        if not self._reads_ok:
            return "the last read from Redis failed"
        if not self._heartbeat_ok:
            return "the last heartbeat failed" if self._heartbeat_at else "no heartbeat yet"
        now = time.monotonic()
        heartbeat = _seconds(self.docket.heartbeat_interval)
        window = max(heartbeat * self.docket.missed_heartbeats, heartbeat + BLOCK_SECONDS)
        if self._heartbeat_at is None or now - self._heartbeat_at > window:
            return f"no heartbeat reached Redis in {window:g}s"
        read_since = self._read_since
        if read_since is not None and now - read_since > BLOCK_SECONDS * 3:
            return f"a read from Redis has hung for {now - read_since:.0f}s"
        return None

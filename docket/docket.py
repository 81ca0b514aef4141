"""The producer side of a docket: add, replace, cancel, strike, and look around."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext, suppress
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from opentelemetry.trace import Span, SpanKind
from redis.exceptions import AuthenticationError, RedisError

from . import _snapshot, serialization
from ._imports import import_object
from ._messages import PoisonMessage, open_payload
from ._redis import scripts
from ._redis.client import Connection, check_credentials, redact_url
from ._redis.keys import GROUP, Keys, validate_name
from ._redis.scripts import Scripts
from ._results import Results

# Importable from here, as released (and SNAPSHOT_BATCH, as the tests read it).
from ._snapshot import SNAPSHOT_BATCH as SNAPSHOT_BATCH
from ._snapshot import DocketSnapshot as DocketSnapshot
from ._snapshot import RunningExecution as RunningExecution
from ._snapshot import WorkerInfo as WorkerInfo
from ._strike_sync import StrikeSync
from ._text import as_text
from ._uuid7 import uuid7_str
from .execution import (
    Disposition,
    Execution,
    ExecutionState,
    TaskCall,
    TaskFunction,
    placeholder_for,
    timestamp,
)
from .instrumentation import (
    TASKS_ADDED,
    TASKS_CANCELLED,
    TASKS_REPLACED,
    TASKS_SCHEDULED,
    TASKS_STRICKEN,
    capture_trace_context,
    parse_trace_context,
    suppressed,
    tracer,
    tracing_active,
)
from .strikes import Operator, StrikeList

if TYPE_CHECKING:
    from key_value.aio.protocols.key_value import AsyncKeyValue

logger = logging.getLogger("docket")

P = ParamSpec("P")
R = TypeVar("R")

# An execution and its schedule script's call (None when struck).
_Prepared = tuple[Execution, scripts.Schedule | None]


def _aware(when: datetime | None) -> datetime:
    if when is None:
        return datetime.now(UTC)
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when


CLEAR_BATCH = 1000
"""How many scheduled (and how many queued) tasks one call of the clear script cancels."""


class TaskHandle(Generic[P, R]):
    """A registered task, callable to add it: ``await handle(*a, **kw)`` runs it now,
    ``await handle.schedule(*a, key=..., when=..., **kw)`` with a key and/or a time."""

    def __init__(
        self,
        docket: Docket,
        function: Callable[P, R],
        task_name: str,
        when: datetime | None = None,
        key: str | None = None,
        mode: str = "add",
    ) -> None:
        self.docket = docket
        self.fn = function
        self.task_name = task_name
        self._when = when
        self._key = key
        self._mode = mode
        self.__name__ = getattr(function, "__name__", "task")
        self.__doc__ = getattr(function, "__doc__", None)
        self.__wrapped__ = function

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Execution:
        return await self.docket._schedule(
            self._mode, self.fn, self._when, self._key, args, kwargs, self.task_name
        )

    async def schedule(
        self,
        *args: Any,
        key: str | None = None,
        when: datetime | None = None,
        **kwargs: Any,
    ) -> Execution:
        return await self.docket._schedule(
            self._mode, self.fn, when or self._when, key or self._key, args, kwargs, self.task_name
        )

    def __repr__(self) -> str:
        return f"<docket task {self.__name__} on {self.docket.name!r}>"


class Docket:
    """A named, shared schedule of tasks in Redis (or in-process on ``memory://``)."""

    def __init__(
        self,
        name: str = "docket",
        url: str | None = None,
        heartbeat_interval: timedelta = timedelta(seconds=2),
        missed_heartbeats: int = 5,
        execution_ttl: timedelta = timedelta(minutes=15),
        result_storage: AsyncKeyValue | None = None,
        enable_internal_instrumentation: bool = False,
        credential_provider: Any = None,
        *,
        signing_key: str | bytes | None = None,
        serializer: str | serialization.Serializer = "pickle",
        max_payload_bytes: int | None = serialization.DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        self.name = validate_name(name)
        self.url = url or os.environ.get("DOCKET_URL") or "redis://localhost:6379/0"
        self.heartbeat_interval = heartbeat_interval
        self.missed_heartbeats = missed_heartbeats
        if execution_ttl < timedelta(0):
            raise ValueError("execution_ttl must be zero (keep nothing) or positive")
        self.execution_ttl = execution_ttl
        self.enable_internal_instrumentation = enable_internal_instrumentation
        check_credentials(self.url, credential_provider)
        self.credential_provider = credential_provider
        if signing_key is None:
            signing_key = os.environ.get("DOCKET_SIGNING_KEY") or None
        self.signing_key: bytes | None = (
            signing_key.encode() if isinstance(signing_key, str) else signing_key
        )
        self.serializer = serialization.get_serializer(serializer)
        if max_payload_bytes is not None and max_payload_bytes < 1:
            raise ValueError("max_payload_bytes must be positive, or None for no limit")
        self.max_payload_bytes = max_payload_bytes
        self.keys = Keys(self.name)
        self._results = Results(self, result_storage)
        # The given store, or (by default) a view of the results kept in this docket's
        # Redis; either way an AsyncKeyValue with each result under Execution.result_key.
        self.result_storage: AsyncKeyValue = self._results.store
        self.tasks: dict[str, TaskFunction] = {}
        self.strike_list = StrikeList()
        self._entered = False
        self._strikes = StrikeSync(self)
        self._labels: dict[str, str] = {"docket.name": self.name}
        self._labels_by_task: dict[str, dict[str, str]] = {}

        from .tasks import standard_tasks

        for task in standard_tasks:
            self.register(task)

    def __repr__(self) -> str:
        return f"Docket(name={self.name!r}, url={redact_url(self.url)!r})"

    # -- the Redis layout, by the released docket's names --------------------------------

    @property
    def prefix(self) -> str:
        """What every key and channel of this docket starts with: ``{name}``, a hash tag,
        so all of it lives in one Redis Cluster slot."""
        return self.keys.prefix

    def key(self, suffix: str) -> str:
        """A key of your own under this docket's prefix (same hash slot), for data that
        lives beside the docket's (FastMCP keeps its task metadata here). The docket never
        reads, writes, clears or expires anything under it."""
        return self.keys.external(suffix)

    @property
    def queue_key(self) -> str:
        """The sorted set of scheduled tasks' keys, scored by when they are due."""
        return self.keys.queue

    @property
    def stream_key(self) -> str:
        """The stream of tasks due now, which workers read as ``worker_group_name``."""
        return self.keys.stream

    @property
    def worker_group_name(self) -> str:
        return GROUP

    def runs_key(self, task_key: str) -> str:
        """The hash recording a task's state (``state``, ``worker``, ``error``...)."""
        return self.keys.record(task_key)

    def known_task_key(self, task_key: str) -> str:
        """Unused here: a task's record (``runs_key``) is what makes its key known."""
        return self.keys.unused(f"known:{task_key}")

    def parked_task_key(self, task_key: str) -> str:
        """Unused here: a scheduled task's call is kept in its record (``runs_key``)."""
        return self.keys.unused(f"parked:{task_key}")

    def stream_id_key(self, task_key: str) -> str:
        """Unused here: a queued task's stream id is kept in its record (``runs_key``)."""
        return self.keys.unused(f"stream-id:{task_key}")

    def cancel_channel(self, task_key: str) -> str:
        """Unused here: workers hear every cancellation on one channel per docket."""
        return self.keys.unused(f"cancel:{task_key}")

    @property
    def results_collection(self) -> str:
        """The collection results live in by default (``<collection>:<result_key>``)."""
        return self.keys.results

    @property
    def workers_set(self) -> str:
        """The sorted set of workers, scored by their last heartbeat."""
        return self.keys.workers

    def worker_tasks_set(self, worker_name: str) -> str:
        """The set of task names a worker can run."""
        return self.keys.worker_tasks(worker_name)

    def task_workers_set(self, task_name: str) -> str:
        """Unused here: which workers run a task is read from ``worker_tasks_set``."""
        return self.keys.unused(f"task-workers:{task_name}")

    @property
    def redelivery_sweep_key(self) -> str:
        """Unused here: workers reclaim stalled tasks without a shared lock."""
        return self.keys.unused("redelivery-sweep")

    def labels(self) -> dict[str, str]:
        """The metric labels (and span attributes) of everything this docket does."""
        return self._labels

    def _task_labels(self, task: str) -> dict[str, str]:
        labels = self._labels_by_task.get(task)
        if labels is None:
            labels = self._labels_by_task[task] = {**self._labels, "docket.task": task}
        return labels

    def _count_scheduled(self, mode: str, execution: Execution, *, quiet: bool = False) -> None:
        """The producer counters for one add or replace (``quiet``: a worker's own
        re-add of an automatic task, counted only when it scheduled something)."""
        disposition = execution.disposition
        if quiet and disposition is not Disposition.SCHEDULED:
            return
        labels = self._task_labels(execution.function_name)
        if disposition is Disposition.STRUCK:
            TASKS_STRICKEN.add(1, {**labels, "docket.where": "docket"})
            return
        if disposition in (Disposition.FAILED, Disposition.SUPERSEDED):
            return
        if mode == "replace":
            # As released: a replace counts as a cancel of what it replaces, too.
            TASKS_REPLACED.add(1, labels)
            TASKS_CANCELLED.add(1, labels)
        else:
            TASKS_ADDED.add(1, labels)
        if disposition is Disposition.SCHEDULED:
            TASKS_SCHEDULED.add(1, labels)

    def _producer_span(
        self, name: str, attributes: dict[str, str]
    ) -> AbstractContextManager[Span | None]:
        """A PRODUCER span, unless instrumentation is suppressed (a worker's internal
        re-adds of automatic tasks)."""
        if suppressed() or not tracing_active():
            return nullcontext()
        return tracer.start_as_current_span(name, kind=SpanKind.PRODUCER, attributes=attributes)

    # -- lifetime -------------------------------------------------------------------

    async def __aenter__(self) -> Docket:
        if self._entered:
            raise RuntimeError("A Docket is not re-entrant; open it once with `async with`")
        self._entered = True
        self._connection = Connection(self.url, self.credential_provider)
        self._scripts = Scripts(self._connection.client, self._connection.wire)
        try:
            await self._scripts.send(scripts.EnsureGroup(stream=self.keys.stream, group=GROUP))
            await self._strikes.load()
        except AuthenticationError:
            # As released, credentials are not checked on entering: the first command
            # raises redis-py's own error. A provider's credentials may also start
            # working later; workers create the group and the monitor loads strikes.
            pass
        except (RedisError, OSError) as error:
            await self._connection.aclose()
            self._entered = False
            raise ConnectionError(
                f"Cannot reach Redis at {redact_url(self.url)}: {error}"
            ) from error
        try:
            await self._results.open()
        except BaseException:
            await self._connection.aclose()
            self._entered = False
            raise
        self._strikes.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._strikes.stop()
        await self._connection.aclose()
        self._entered = False

    @asynccontextmanager
    async def redis(self) -> AsyncIterator[Any]:
        """The raw redis-py client (shared connection pool)."""
        yield self._connection.client

    # -- registry -------------------------------------------------------------------

    def register(self, function: TaskFunction, names: Sequence[str] | None = None) -> None:
        """Make ``function`` runnable by name; its dependencies are checked now."""
        if isinstance(function, TaskHandle):
            function = function.fn
        from .dependencies import validate_task

        validate_task(function)
        for name in names or [function.__name__]:
            self.tasks[name] = function

    def register_collection(self, collection_path: str) -> None:
        """Register every task in ``"package.module:iterable"``."""
        for function in import_object(collection_path, "task collection"):
            self.register(function)

    def _resolve(
        self, function: TaskFunction | str | TaskHandle[Any, Any]
    ) -> tuple[TaskFunction, str]:
        """The function and the name workers will know it by."""
        if isinstance(function, TaskHandle):
            return function.fn, function.task_name
        if isinstance(function, str):
            try:
                return self.tasks[function], function
            except KeyError:
                raise KeyError(
                    f"Task {function!r} is not registered on docket {self.name!r}"
                ) from None
        if self.tasks.get(function.__name__) is not function:
            self.register(function)
        return function, function.__name__

    # -- adding ---------------------------------------------------------------------

    @overload
    def add(
        self, function: Callable[P, R], when: datetime | None = None, key: str | None = None
    ) -> TaskHandle[P, R]: ...

    @overload
    def add(
        self, function: str, when: datetime | None = None, key: str | None = None
    ) -> TaskHandle[..., Any]: ...

    def add(
        self,
        function: Callable[P, R] | str,
        when: datetime | None = None,
        key: str | None = None,
    ) -> TaskHandle[Any, Any]:
        """Register ``function`` (if needed) and return a handle that adds it when called.

        Used bare as a decorator, the handle replaces the function in its module.
        """
        return TaskHandle(self, *self._resolve(function), when, key, "add")

    def replace(
        self, function: Callable[P, R] | str, when: datetime | None, key: str
    ) -> TaskHandle[Any, Any]:
        """Like ``add``, but whatever is scheduled under ``key`` is replaced."""
        return TaskHandle(self, *self._resolve(function), when, key, "replace")

    def call(
        self,
        function: Callable[P, R] | str,
        when: datetime | None = None,
        key: str | None = None,
    ) -> Callable[..., TaskCall]:
        """A task call for ``add_many``/``replace_many``; touches nothing."""
        resolved, name = self._resolve(function)

        def build(*args: Any, **kwargs: Any) -> TaskCall:
            return TaskCall(resolved, when, key, args, kwargs, name)

        return build

    async def add_many(
        self, calls: Iterable[TaskCall], *, chunk_size: int | None = 1000
    ) -> list[Execution]:
        return await self._schedule_many("add", calls, chunk_size)

    async def replace_many(
        self, calls: Iterable[TaskCall], *, chunk_size: int | None = 1000
    ) -> list[Execution]:
        return await self._schedule_many("replace", calls, chunk_size)

    def _prepare(
        self,
        mode: str,
        function: TaskFunction,
        when: datetime | None,
        key: str | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        attempt: int = 1,
        function_name: str | None = None,
        expected_generation: str = "",
    ) -> _Prepared:
        """Build the execution and the schedule script's call (None when struck);
        ``expected_generation`` is the generation a reschedule must still find."""
        execution = Execution(
            self,
            function,
            args,
            kwargs,
            key or uuid7_str(),
            _aware(when),
            attempt,
            function_name=function_name,
        )
        if self.strike_list and self.strike_list.is_stricken(
            execution.function_name, execution.arguments_by_name()
        ):
            execution.disposition = Disposition.STRUCK
            return execution, None
        payload = serialization.dump_call(self.serializer, args, kwargs)
        if self.max_payload_bytes is not None and len(payload) > self.max_payload_bytes:
            raise serialization.PayloadTooLarge(
                f"The arguments of task {execution.function_name!r} (key {execution.key!r}) "
                f"serialize to {len(payload):,} bytes, over this docket's limit of "
                f"{self.max_payload_bytes:,} bytes (Docket(max_payload_bytes=...))"
            )
        signature = (
            serialization.sign_payload(
                self.signing_key,
                execution.function_name,
                execution.key,
                self.serializer.name,
                payload,
            )
            if self.signing_key
            else ""
        )
        trace = capture_trace_context()
        execution.trace_context = parse_trace_context(trace)
        call = scripts.Schedule(
            stream=self.keys.stream,
            queue=self.keys.queue,
            record=self.keys.record(execution.key),
            generation_counter=self.keys.generation,
            mode=mode,
            key=execution.key,
            function=execution.function_name,
            when=f"{execution.when.timestamp():.6f}",
            payload=payload,
            signature=signature,
            attempt=attempt,
            trace=trace,
            expected_generation=expected_generation,
            events_prefix=self.keys.events_prefix,
            wake_channel=self.keys.wake_channel,
            serializer=self.serializer.name,
            # A generated key lets the script recognise this call sent twice.
            generated_key="1" if key is None else "",
        )
        return execution, call

    async def _send_schedule(self, execution: Execution, call: scripts.Schedule) -> Disposition:
        """Run one prepared schedule.lua call and record its outcome on ``execution``."""
        self._apply_reply(execution, await self._scripts.send(call))
        return execution.disposition

    def _apply_reply(self, execution: Execution, reply: Sequence[bytes]) -> None:
        outcome, generation, mid = (as_text(part) or "" for part in reply)
        execution.generation = int(generation or 0)
        if outcome == "scheduled":
            execution.disposition = Disposition.SCHEDULED
            if mid:
                execution.state = ExecutionState.QUEUED
                execution.message_id = mid
                self._connection.notify_activity()
            else:
                execution.state = ExecutionState.SCHEDULED
        elif outcome == "already_scheduled":
            execution.disposition = Disposition.ALREADY_SCHEDULED
        else:
            execution.disposition = Disposition.SUPERSEDED

    async def _schedule(
        self,
        mode: str,
        function: TaskFunction,
        when: datetime | None,
        key: str | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        function_name: str | None = None,
        *,
        automatic: bool = False,
    ) -> Execution:
        if mode == "replace" and key is None:
            raise ValueError("replace() needs the key of the task it replaces")
        task = function_name or str(getattr(function, "__name__", "<unknown>"))
        with self._producer_span(f"docket.{mode}", self._task_labels(task)) as span:
            execution, call = self._prepare(
                mode, function, when, key, args, kwargs, function_name=function_name
            )
            if span is not None:
                span.set_attribute("docket.key", execution.key)
                span.set_attribute("docket.when", execution.when.isoformat())
            if call is None:
                logger.info("Task %s is struck; not scheduled", execution.call_repr())
            else:
                await self._send_schedule(execution, call)
            if span is not None:
                span.set_attribute("docket.disposition", execution.disposition.value)
        self._count_scheduled(mode, execution, quiet=automatic)
        return execution

    async def _reschedule(
        self,
        execution: Execution,
        when: datetime,
        *,
        attempt: int | None = None,
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> Disposition:
        """Schedule the same key again, but only if it still belongs to ``execution``'s
        generation (a replace made while it ran wins). Retries and perpetual tasks use it."""
        assert execution.function is not None
        successor, call = self._prepare(
            "reschedule",
            execution.function,
            when,
            execution.key,
            execution.args if args is None else args,
            execution.kwargs if kwargs is None else kwargs,
            attempt if attempt is not None else execution.attempt,
            function_name=execution.function_name,
            expected_generation=str(execution.generation),
        )
        if call is None:
            execution._rescheduled = Disposition.STRUCK
            return Disposition.STRUCK
        execution._rescheduled = await self._send_schedule(successor, call)
        return execution._rescheduled

    async def _schedule_many(
        self, mode: str, calls: Iterable[TaskCall], chunk_size: int | None
    ) -> list[Execution]:
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1 (or None), got {chunk_size}")
        calls = list(calls)
        with self._producer_span(f"docket.{mode}_many", self._labels) as span:
            if span is not None:
                span.set_attribute("docket.batch.count", len(calls))
            results = await self._schedule_chunks(mode, calls, chunk_size)
            if span is not None:
                stricken = sum(1 for e in results if e.disposition is Disposition.STRUCK)
                span.set_attribute("docket.batch.stricken", stricken)
        for execution in results:
            self._count_scheduled(mode, execution)
        return results

    async def _schedule_chunks(
        self, mode: str, calls: list[TaskCall], chunk_size: int | None
    ) -> list[Execution]:
        results: list[Execution] = []
        size = chunk_size or max(len(calls), 1)
        loop = asyncio.get_running_loop()
        # Two chunks in flight: the next one is prepared while Redis runs the last, so
        # this process and the server work side by side instead of taking turns.
        in_flight: list[tuple[list[_Prepared], asyncio.Task[list[Any]]]] = []
        try:
            for start in range(0, len(calls), size):
                prepared = [self._prepare_call(mode, call) for call in calls[start : start + size]]
                sending = asyncio.eager_task_factory(
                    loop,
                    self._scripts.send_many([call for _, call in prepared if call is not None]),
                )
                in_flight.append((prepared, sending))
                if len(in_flight) == 2:
                    await self._collect_chunk(in_flight, results)
            while in_flight:
                await self._collect_chunk(in_flight, results)
        except asyncio.CancelledError:
            for _, sending in in_flight:
                sending.cancel()
            raise
        except BaseException:
            # A bad call in a later chunk: the chunks already sent still finish, as they
            # would have one after another, before the error is raised.
            if in_flight:
                await asyncio.wait([sending for _, sending in in_flight])
            raise
        return results

    def _prepare_call(self, mode: str, call: TaskCall) -> _Prepared:
        if mode == "replace" and call.key is None:
            raise ValueError("replace_many() needs a key on every call")
        function, name = self._resolve(call.function)
        return self._prepare(
            mode,
            function,
            call.when,
            call.key,
            tuple(call.args),
            dict(call.kwargs),
            function_name=call.name or name,
        )

    async def _collect_chunk(
        self,
        in_flight: list[tuple[list[_Prepared], asyncio.Task[list[Any]]]],
        results: list[Execution],
    ) -> None:
        """Wait for the oldest chunk in flight and record each call's outcome."""
        prepared, sending = in_flight[0]
        replies = iter(await sending)
        in_flight.pop(0)
        for execution, call in prepared:
            if call is not None:
                reply = next(replies)
                if isinstance(reply, BaseException):
                    execution.disposition = Disposition.FAILED
                    execution.schedule_exception = reply
                else:
                    self._apply_reply(execution, reply)
            results.append(execution)

    # -- cancelling -----------------------------------------------------------------

    def _pubsub(self) -> Any:
        """A pub/sub connection for following tasks (each one is a Redis connection)."""
        return self._connection.client.pubsub()

    async def schedule(self, execution: Execution) -> None:
        """Schedule a prepared ``Execution`` as ``add`` would (strikes apply, and a key
        already scheduled, queued or running is left alone: ``ALREADY_SCHEDULED``)."""
        with self._producer_span(
            "docket.schedule", self._task_labels(execution.function_name)
        ) as span:
            if self.strike_list and self.strike_list.is_stricken(
                execution.function_name, execution.arguments_by_name()
            ):
                execution.disposition = Disposition.STRUCK
                logger.info("Task %s is struck; not scheduled", execution.call_repr())
            else:
                await execution.schedule(replace=False)
            if span is not None:
                span.set_attribute("docket.key", execution.key)
                span.set_attribute("docket.disposition", execution.disposition.value)
        self._count_scheduled("add", execution)

    async def cancel(self, key: str) -> None:
        """Withdraw a scheduled or queued task; ask its worker to stop a running one."""
        with self._producer_span("docket.cancel", self._labels) as span:
            if span is not None:
                span.set_attribute("docket.key", key)
            cancelled = await self._cancel(key)
            if span is not None:
                span.set_attribute("docket.cancelled", cancelled)
        if cancelled:
            TASKS_CANCELLED.add(1, self._labels)

    async def _cancel(
        self, key: str, generation: int | None = None, other_than: int | None = None
    ) -> bool:
        """Cancel ``key``: only its run of ``generation`` when given, and never its run of
        ``other_than``."""
        previous = await self._scripts.send(
            scripts.Cancel(
                stream=self.keys.stream,
                queue=self.keys.queue,
                record=self.keys.record(key),
                key=key,
                ttl=self.execution_ttl.total_seconds(),
                events_prefix=self.keys.events_prefix,
                cancel_channel=self.keys.cancel_channel,
                expected_generation="" if generation is None else str(generation),
                spared_generation="" if other_than is None else str(other_than),
            )
        )
        return bool(previous)

    async def clear(self) -> int:
        """Cancel every task that has not started yet; returns how many.

        Works in batches of ``CLEAR_BATCH`` scheduled and ``CLEAR_BATCH`` queued tasks
        per script call, and stops after a batch that comes back short, so producers
        adding tasks all the while cannot keep it going forever.
        """
        count = 0
        with self._producer_span("docket.clear", self._labels) as span:
            while True:
                batch = CLEAR_BATCH
                cleared = int(
                    await self._scripts.send(
                        scripts.Clear(
                            stream=self.keys.stream,
                            queue=self.keys.queue,
                            group=GROUP,
                            record_prefix=self.keys.record_prefix,
                            ttl=self.execution_ttl.total_seconds(),
                            events_prefix=self.keys.events_prefix,
                            batch=batch,
                        )
                    )
                )
                count += cleared
                if cleared < batch:
                    break
            if span is not None:
                span.set_attribute("docket.cleared", count)
        if count:
            TASKS_CANCELLED.add(count, self._labels)
        return count

    # -- reading --------------------------------------------------------------------

    async def get_execution(self, key: str) -> Execution | None:
        """The execution stored under ``key``, or None when there is none (or it expired)."""
        record = await self._connection.client.hgetall(self.keys.record(key))
        if not record:
            return None
        return await self._execution_from_record(key, record)

    async def _execution_from_record(
        self, key: str, record: dict[bytes, bytes], entry: dict[bytes, bytes] | None = None
    ) -> Execution:
        """The execution ``record`` describes; ``entry`` is its stream entry when the
        caller has it already."""
        name = as_text(record.get(b"function")) or "<unknown>"
        # A scheduled task keeps its payload in its record; a queued or running one, in
        # its stream entry.
        source: dict[bytes, bytes] = record
        mid = as_text(record.get(b"mid"))
        if b"payload" not in record and entry is not None:
            source = entry
        elif b"payload" not in record and mid:
            entries = await self._connection.client.xrange(self.keys.stream, mid, mid)
            if entries:
                source = entries[0][1]
        args: tuple[Any, ...] = ()
        kwargs: dict[str, Any] = {}
        if source.get(b"payload"):
            # Verified exactly as a worker would before anything is deserialized; an
            # entry that fails is shown without its arguments.
            with suppress(PoisonMessage):
                args, kwargs = open_payload(
                    self,
                    name,
                    key,
                    as_text(source.get(b"ser")) or "pickle",
                    source[b"payload"],
                    as_text(source.get(b"sig")) or "",
                )
        execution = Execution(
            self,
            self.tasks.get(name),
            args,
            kwargs,
            key,
            timestamp(record.get(b"when")) or datetime.now(UTC),
            function_name=name,
            trace_context=parse_trace_context(record.get(b"trace")),
        )
        if execution.function is None:
            # A task this process does not know (the CLI's watch, a dashboard): a stand-in
            # named after it, so the execution reads like any other.
            execution._function = placeholder_for(execution)
        execution._load_record(record)
        return execution

    def _load_result(self, key: str, data: bytes) -> Any:
        raw = serialization.open_result(self.signing_key, key, data)
        return self.serializer.loads(raw)

    def _dump_result(self, key: str, value: Any) -> bytes:
        try:
            raw = self.serializer.dumps(value)
        except Exception as error:
            if not isinstance(value, BaseException):
                raise TypeError(f"The result of task {key!r} cannot be stored: {error}") from error
            raw = self.serializer.dumps(RuntimeError(f"{type(value).__name__}: {value}"))
        return serialization.seal_result(self.signing_key, key, raw)

    async def snapshot(self) -> DocketSnapshot:
        """What is scheduled, queued and running right now, and which workers are alive."""
        return await _snapshot.snapshot(self)

    async def workers(self) -> list[WorkerInfo]:
        """Workers whose heartbeat is fresh (within heartbeat_interval * missed_heartbeats)."""
        return await _snapshot.workers(self)

    async def task_workers(self, task_name: str) -> list[WorkerInfo]:
        """Live workers that can run ``task_name``."""
        return [w for w in await self.workers() if task_name in w.tasks]

    # -- strikes --------------------------------------------------------------------

    async def strike(
        self,
        function: TaskFunction | str | None = None,
        parameter: str | None = None,
        operator: Operator | str = "==",
        value: Any = None,
    ) -> None:
        """Stop a task (or any task called with a matching argument) from running."""
        await self._strikes.change("strike", function, parameter, operator, value)

    async def restore(
        self,
        function: TaskFunction | str | None = None,
        parameter: str | None = None,
        operator: Operator | str = "==",
        value: Any = None,
    ) -> None:
        """Lift a strike made with the same arguments."""
        await self._strikes.change("restore", function, parameter, operator, value)

    async def wait_for_strikes_loaded(self) -> None:
        await self._strikes.wait_loaded()

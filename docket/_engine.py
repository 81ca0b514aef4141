"""The machinery behind a ``Docket``, shared by docket's own modules.

``Docket`` is the public face: what users call. Its ``engine`` holds what the worker,
the dependencies, ``Execution`` and the adapters use of a docket beyond that: the
connection and the scripts (while the docket is open), where results live, and the
producer's steps (prepare a call, schedule it, reschedule a run, cancel a key), with
the producer's spans and counters. It is not a public API: it changes with the Redis
model.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Span, SpanKind

from . import serialization
from ._priority import validate_priority
from ._redis.client import Connection
from ._redis.scripts import Cancel, Schedule, Scripts
from ._results import Results
from ._task_handle import TaskHandle
from ._text import as_text
from ._uuid7 import uuid7_str
from .execution import Disposition, Execution, ExecutionState, TaskCall, TaskFunction
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

if TYPE_CHECKING:
    from key_value.aio.protocols.key_value import AsyncKeyValue

    from .docket import Docket

logger = logging.getLogger("docket")

# An execution and its schedule script's call (None when struck).
Prepared = tuple[Execution, Schedule | None]


def _aware(when: datetime | None) -> datetime:
    if when is None:
        return datetime.now(UTC)
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when


class Engine:
    """One docket's machinery (``docket.engine``)."""

    # Set by open(): a closed docket has no connection to hand out.
    connection: Connection
    scripts: Scripts

    def __init__(self, docket: Docket, result_storage: AsyncKeyValue | None) -> None:
        self.docket = docket
        self.keys = docket.keys
        self.results = Results(self, result_storage)
        self.labels: dict[str, str] = {"docket.name": docket.name}
        self._labels_by_task: dict[str, dict[str, str]] = {}

    def open(self) -> None:
        self.connection = Connection(
            self.docket.url, self.docket.credential_provider, slot_key=self.keys.prefix
        )
        connection = self.connection
        self.scripts = Scripts(
            connection.client,
            connection.wire,
            cluster=connection.is_cluster,
            route=connection.wire_for if connection.is_cluster else None,
        )

    async def close(self) -> None:
        await self.connection.aclose()

    def pubsub(self) -> Any:
        """A pub/sub connection for following tasks (each one is a Redis connection).

        Opened through ``Docket._pubsub``, the released name: code written for the
        released docket replaces it on a docket to see when one is opened."""
        return self.docket._pubsub()

    # -- spans and counters ---------------------------------------------------------

    def task_labels(self, task: str) -> dict[str, str]:
        labels = self._labels_by_task.get(task)
        if labels is None:
            labels = self._labels_by_task[task] = {**self.labels, "docket.task": task}
        return labels

    def count_scheduled(self, mode: str, execution: Execution, *, quiet: bool = False) -> None:
        """The producer counters for one add or replace (``quiet``: a worker's own
        re-add of an automatic task, counted only when it scheduled something)."""
        disposition = execution.disposition
        if quiet and disposition is not Disposition.SCHEDULED:
            return
        labels = self.task_labels(execution.function_name)
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

    def producer_span(
        self, name: str, attributes: dict[str, str]
    ) -> AbstractContextManager[Span | None]:
        """A PRODUCER span, unless instrumentation is suppressed (a worker's internal
        re-adds of automatic tasks)."""
        if suppressed() or not tracing_active():
            return nullcontext()
        return tracer.start_as_current_span(name, kind=SpanKind.PRODUCER, attributes=attributes)

    # -- resolving and preparing ----------------------------------------------------

    def resolve(
        self, function: TaskFunction | str | TaskHandle[Any, Any]
    ) -> tuple[TaskFunction, str]:
        """The function and the name workers will know it by."""
        docket = self.docket
        if isinstance(function, TaskHandle):
            return function.fn, function.task_name
        if isinstance(function, str):
            try:
                return docket.tasks[function], function
            except KeyError:
                raise KeyError(
                    f"Task {function!r} is not registered on docket {docket.name!r}"
                ) from None
        if docket.tasks.get(function.__name__) is not function:
            docket.register(function)
        return function, function.__name__

    def prepare(
        self, mode: str, task: TaskCall, *, attempt: int = 1, expected_generation: str = ""
    ) -> Prepared:
        """Build the execution of ``task`` (its function resolved already) and the
        schedule script's call (None when struck); ``expected_generation`` is the
        generation a reschedule must still find."""
        docket = self.docket
        function, args, kwargs, key = task.function, task.args, task.kwargs, task.key
        if isinstance(function, str):
            raise TypeError(f"prepare() needs task {function!r} resolved to its function")
        execution = Execution(
            docket,
            function,
            args,
            kwargs,
            key or uuid7_str(),
            _aware(task.when),
            attempt,
            function_name=task.name,
        )
        execution.priority = validate_priority(task.priority)
        execution.metadata = dict(task.metadata)
        meta = _dump_metadata(execution) if execution.metadata else b""
        if docket.strike_list and docket.strike_list.is_stricken(
            execution.function_name, execution.arguments_by_name()
        ):
            execution.disposition = Disposition.STRUCK
            return execution, None
        payload = serialization.dump_call(docket.serializer, args, kwargs)
        limit = docket.max_payload_bytes
        if limit is not None and len(payload) > limit:
            raise serialization.PayloadTooLarge(
                f"The arguments of task {execution.function_name!r} (key {execution.key!r}) "
                f"serialize to {len(payload):,} bytes, over this docket's limit of "
                f"{limit:,} bytes (Docket(max_payload_bytes=...))"
            )
        signature = (
            serialization.sign_payload(
                docket.signing_key,
                execution.function_name,
                execution.key,
                docket.serializer.name,
                payload,
                meta,
            )
            if docket.signing_key
            else ""
        )
        trace = capture_trace_context()
        execution.trace_context = parse_trace_context(trace)
        keys = docket.keys_for(execution.key)
        high, stream, low = keys.streams
        call = Schedule(
            stream=stream,
            queue=keys.queue,
            record=keys.record(execution.key),
            generation_counter=keys.generation,
            high_stream=high,
            low_stream=low,
            mode=mode,
            key=execution.key,
            function=execution.function_name,
            when=f"{execution.when.timestamp():.6f}",
            payload=payload,
            signature=signature,
            attempt=attempt,
            trace=trace,
            expected_generation=expected_generation,
            events_prefix=keys.events_prefix,
            wake_channel=keys.wake_channel,
            serializer=docket.serializer.name,
            # A generated key lets the script recognise this call sent twice.
            generated_key="1" if key is None else "",
            priority=int(execution.priority),
            meta=meta,
        )
        return execution, call

    # -- scheduling -----------------------------------------------------------------

    async def send_schedule(self, execution: Execution, call: Schedule) -> Disposition:
        """Run one prepared schedule.lua call and record its outcome on ``execution``."""
        self.apply_reply(execution, await self.scripts.send(call))
        return execution.disposition

    def apply_reply(self, execution: Execution, reply: Sequence[bytes]) -> None:
        outcome, generation, mid = (as_text(part) or "" for part in reply)
        execution.generation = int(generation or 0)
        if outcome == "scheduled":
            execution.disposition = Disposition.SCHEDULED
            if mid:
                execution.state = ExecutionState.QUEUED
                execution.message_id = mid
                self.connection.notify_activity()
            else:
                execution.state = ExecutionState.SCHEDULED
        elif outcome == "already_scheduled":
            execution.disposition = Disposition.ALREADY_SCHEDULED
        else:
            execution.disposition = Disposition.SUPERSEDED

    async def schedule(self, mode: str, task: TaskCall, *, automatic: bool = False) -> Execution:
        """Add (or replace) one call, its function resolved already, as
        ``docket.add(...)(...)`` does."""
        if mode == "replace" and task.key is None:
            raise ValueError("replace() needs the key of the task it replaces")
        name = task.name or str(getattr(task.function, "__name__", "<unknown>"))
        with self.producer_span(f"docket.{mode}", self.task_labels(name)) as span:
            execution, call = self.prepare(mode, task)
            if span is not None:
                span.set_attribute("docket.key", execution.key)
                span.set_attribute("docket.when", execution.when.isoformat())
            if call is None:
                logger.info("Task %s is struck; not scheduled", execution.call_repr())
            else:
                await self.send_schedule(execution, call)
            if span is not None:
                span.set_attribute("docket.disposition", execution.disposition.value)
        self.count_scheduled(mode, execution, quiet=automatic)
        return execution

    async def reschedule(
        self,
        execution: Execution,
        when: datetime,
        *,
        attempt: int | None = None,
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> Disposition:
        """Schedule the same key again, but only if it still belongs to ``execution``'s
        generation (a replace made while it ran wins). Retries and perpetual tasks use
        it; what it did is kept as ``execution.rescheduled``."""
        assert execution.function is not None
        successor, call = self.prepare(
            "reschedule",
            TaskCall(
                execution.function,
                when,
                execution.key,
                execution.args if args is None else args,
                execution.kwargs if kwargs is None else kwargs,
                execution.function_name,
                execution.priority,
                execution.metadata,
            ),
            attempt=attempt if attempt is not None else execution.attempt,
            expected_generation=str(execution.generation),
        )
        if call is None:
            execution.rescheduled = Disposition.STRUCK
        else:
            execution.rescheduled = await self.send_schedule(successor, call)
        return execution.rescheduled

    async def schedule_many(
        self, mode: str, calls: Iterable[TaskCall], chunk_size: int | None
    ) -> list[Execution]:
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1 (or None), got {chunk_size}")
        calls = list(calls)
        with self.producer_span(f"docket.{mode}_many", self.labels) as span:
            if span is not None:
                span.set_attribute("docket.batch.count", len(calls))
            results = await self._schedule_chunks(mode, calls, chunk_size)
            if span is not None:
                stricken = sum(1 for e in results if e.disposition is Disposition.STRUCK)
                span.set_attribute("docket.batch.stricken", stricken)
        for execution in results:
            self.count_scheduled(mode, execution)
        return results

    async def _schedule_chunks(
        self, mode: str, calls: list[TaskCall], chunk_size: int | None
    ) -> list[Execution]:
        results: list[Execution] = []
        size = chunk_size or max(len(calls), 1)
        loop = asyncio.get_running_loop()
        # Two chunks in flight: the next one is prepared while Redis runs the last, so
        # this process and the server work side by side instead of taking turns.
        in_flight: list[tuple[list[Prepared], asyncio.Task[list[Any]]]] = []
        try:
            for start in range(0, len(calls), size):
                prepared = [self._prepare_call(mode, call) for call in calls[start : start + size]]
                sending = asyncio.eager_task_factory(
                    loop,
                    self.scripts.send_many([call for _, call in prepared if call is not None]),
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

    def _prepare_call(self, mode: str, call: TaskCall) -> Prepared:
        if mode == "replace" and call.key is None:
            raise ValueError("replace_many() needs a key on every call")
        function, name = self.resolve(call.function)
        # Copies of the arguments: the caller's call may be changed and used again.
        resolved = TaskCall(
            function,
            call.when,
            call.key,
            tuple(call.args),
            dict(call.kwargs),
            call.name or name,
            call.priority,
            dict(call.metadata),
        )
        return self.prepare(mode, resolved)

    async def _collect_chunk(
        self,
        in_flight: list[tuple[list[Prepared], asyncio.Task[list[Any]]]],
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
                    self.apply_reply(execution, reply)
            results.append(execution)

    # -- cancelling -----------------------------------------------------------------

    async def cancel(
        self, key: str, generation: int | None = None, other_than: int | None = None
    ) -> bool:
        """Cancel ``key``: only its run of ``generation`` when given, and never its run of
        ``other_than``."""
        keys = self.docket.keys_for(key)
        high, stream, low = keys.streams
        previous = await self.scripts.send(
            Cancel(
                stream=stream,
                queue=keys.queue,
                record=keys.record(key),
                high_stream=high,
                low_stream=low,
                key=key,
                ttl=self.docket.execution_ttl.total_seconds(),
                events_prefix=keys.events_prefix,
                cancel_channel=keys.cancel_channel,
                expected_generation="" if generation is None else str(generation),
                spared_generation="" if other_than is None else str(other_than),
            )
        )
        return bool(previous)

    # -- results --------------------------------------------------------------------

    def load_result(self, key: str, data: bytes) -> Any:
        docket = self.docket
        raw = serialization.open_result(docket.signing_key, key, data)
        return docket.serializer.loads(raw)

    def dump_result(self, key: str, value: Any) -> bytes:
        serializer = self.docket.serializer
        try:
            raw = serializer.dumps(value)
        except Exception as error:
            if not isinstance(value, BaseException):
                raise TypeError(f"The result of task {key!r} cannot be stored: {error}") from error
            raw = serializer.dumps(RuntimeError(f"{type(value).__name__}: {value}"))
        return serialization.seal_result(self.docket.signing_key, key, raw)


def _dump_metadata(execution: Execution) -> bytes:
    try:
        text = json.dumps(execution.metadata, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"The metadata of task {execution.function_name!r} (key {execution.key!r}) "
            f"must be JSON-compatible: {error}"
        ) from error
    return text.encode()

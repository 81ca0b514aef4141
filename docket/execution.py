"""One run of a task: what it is, where it stands, and how to wait for its outcome."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING, Any, Literal, TypedDict, get_args, get_origin, get_type_hints

from uncalled_for import Dependency, get_signature

from ._messages import PoisonMessage, open_metadata, open_payload, parse_fields
from ._priority import Priority
from ._redis import scripts
from ._results import IN_STORE, LOST, ResultStoreError, result_key
from ._text import as_text
from .annotations import Logged, logged_marker
from .instrumentation import parse_trace_context

if TYPE_CHECKING:
    from ._redis.keys import Keys
    from .docket import Docket

TaskFunction = Callable[..., Awaitable[Any] | Any]


class ExecutionState(StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


# What a record's ``result`` field says when a result is there to read.
_KEPT = (b"1", IN_STORE)

TERMINAL_STATES = frozenset(
    {ExecutionState.COMPLETED, ExecutionState.FAILED, ExecutionState.CANCELLED}
)


class Disposition(StrEnum):
    """What an add/replace did (or, for LOADED, that the execution was read back)."""

    LOADED = "loaded"
    SCHEDULED = "scheduled"
    ALREADY_SCHEDULED = "already_scheduled"
    STRUCK = "struck"
    SUPERSEDED = "superseded"
    FAILED = "failed"


class ExecutionCancelled(Exception):
    """The task was cancelled before it produced a result."""


class StateEvent(TypedDict, total=False):
    type: Literal["state"]
    key: str
    state: ExecutionState
    when: str | None
    worker: str | None
    started_at: str | None
    completed_at: str | None
    error: str | None


class ProgressEvent(TypedDict, total=False):
    type: Literal["progress"]
    key: str
    current: int | None
    total: int
    message: str | None
    updated_at: str | None


@dataclass
class TaskCall:
    """A task call described for ``add_many`` / ``replace_many``; touches nothing."""

    function: TaskFunction | str
    when: datetime | None
    key: str | None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    priority: int = Priority.NORMAL
    """A ``Priority``; ``Docket.call(..., priority=...)`` checks it."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """The run's integration metadata (see ``Execution.metadata``)."""


def timestamp(value: str | bytes | None) -> datetime | None:
    if value in (None, b"", ""):
        return None
    return datetime.fromtimestamp(float(value), UTC)


@cache
def _logged_parameters(function: Callable[..., Any]) -> tuple[tuple[str, ...], dict[str, Logged]]:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return (), {}
    try:
        hints: dict[str, Any] = get_type_hints(function, include_extras=True)
    except Exception:
        # One unresolvable annotation (a name imported only for type checking, say) must
        # not hide the others, nor the parameter names themselves.
        hints = {
            name: _resolve_annotation(function, parameter.annotation)
            for name, parameter in signature.parameters.items()
        }
    logged: dict[str, Logged] = {}
    for name, hint in hints.items():
        if get_origin(hint) is not None and hasattr(hint, "__metadata__"):
            marker = logged_marker(hint.__metadata__)
            if marker is not None:
                logged[name] = marker
    return tuple(signature.parameters), logged


def _resolve_annotation(function: Callable[..., Any], annotation: Any) -> Any:
    if not isinstance(annotation, str):
        return annotation
    try:
        return eval(annotation, getattr(function, "__globals__", {}))
    except Exception:
        return None


_EVENT_TIMES = ("when", "started_at", "completed_at", "updated_at")


class ExecutionProgress:
    """Live progress of a run: ``current`` of ``total``, plus a message.

    Every execution has one (``execution.progress``); ``ExecutionProgress(docket, key)``
    makes one for a key on its own, as the released docket does, for tools that report
    or read a run's progress without its ``Execution``. Writes land in the task's
    record, only while the key belongs to the run that reports (a standalone instance
    reports for whichever run holds the key), and are published to subscribers.
    """

    def __init__(self, docket: Docket | Execution, key: str | None = None) -> None:
        if isinstance(docket, Execution):
            self._execution: Execution | None = docket
            self.docket = docket.docket
            self.key = docket.key
        else:
            if key is None:
                raise TypeError("ExecutionProgress(docket, key) needs the task's key")
            self._execution = None
            self.docket = docket
            self.key = key
        self.current: int | None = None
        self.total: int = 100
        self.message: str | None = None
        self.updated_at: datetime | None = None

    @classmethod
    async def create(cls, docket: Docket, key: str) -> ExecutionProgress:
        """The progress of ``key`` as it stands in Redis now."""
        progress = cls(docket, key)
        await progress.sync()
        return progress

    async def _publish(
        self,
        *,
        total: int | None = None,
        increment: int = 0,
        message: str | None = None,
        message_changed: bool = False,
    ) -> None:
        docket = self.docket
        keys = docket.keys_for(self.key)
        generation = "" if self._execution is None else str(self._execution.generation)
        reply = await docket.engine.scripts.send(
            scripts.Progress(
                record=keys.record(self.key),
                generation=generation,
                increment=increment,
                total=total if total is not None else "",
                message=message or "",
                message_set=1 if message_changed else 0,
                events_prefix=keys.events_prefix,
                key=self.key,
                ttl=docket.execution_ttl.total_seconds(),
            )
        )
        if reply:
            current, stored_total = reply[0], reply[1]
            self.current = int(current)
            self.total = int(stored_total)
        self.updated_at = datetime.now(UTC)

    async def set_total(self, total: int) -> None:
        if total < 1:
            raise ValueError(f"Progress total must be at least 1, got {total}")
        self.total = total
        await self._publish(total=total)

    async def increment(self, amount: int = 1) -> None:
        """Add ``amount`` to ``current`` (atomically in Redis, so concurrent reporters
        add up)."""
        if amount < 1:
            raise ValueError(f"Progress increment must be at least 1, got {amount}")
        await self._publish(increment=amount)

    async def set_message(self, message: str | None) -> None:
        self.message = message
        await self._publish(message=message, message_changed=True)

    def _load(self, record: dict[bytes, bytes]) -> None:
        current = record.get(b"pcur")
        self.current = int(current) if current is not None else None
        self.total = int(record.get(b"ptot", b"100"))
        self.message = as_text(record.get(b"pmsg"))
        self.updated_at = timestamp(record.get(b"pupd"))

    async def sync(self) -> None:
        if self._execution is not None:
            await self._execution.sync()
            return
        async with self.docket.redis() as redis:
            record = await redis.hgetall(self.docket.keys_for(self.key).record(self.key))
        self._load(record or {})

    async def subscribe(
        self, *, ready: asyncio.Event | None = None
    ) -> AsyncIterator[ProgressEvent]:
        """Every change of this run's progress from now on (see ``Execution.subscribe``;
        ``ready`` is set once the subscription is confirmed)."""
        execution = self._execution
        if execution is None:
            execution = Execution(self.docket, None, (), {}, self.key, datetime.now(UTC))
        first = True
        async for event in execution.subscribe(ready=ready):
            if event["type"] == "progress":
                if first:
                    # Where it stands now, which the caller can read off this object.
                    first = False
                    continue
                yield event


class Execution:
    """A task call with its key, time, attempt and (once loaded or run) its state."""

    def __init__(
        self,
        docket: Docket,
        function: TaskFunction | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: str,
        when: datetime,
        attempt: int = 1,
        *,
        function_name: str | None = None,
        generation: int = 0,
        redelivered: bool = False,
        trace_context: dict[str, str] | None = None,
        message_id: str | None = None,
        state: ExecutionState = ExecutionState.SCHEDULED,
        disposition: Disposition = Disposition.LOADED,
    ) -> None:
        self.docket = docket
        self._function = function
        self.function_name: str = function_name or str(getattr(function, "__name__", "<unknown>"))
        self._args = args
        self._kwargs = kwargs
        self._key = key
        self.when = when
        self.attempt = attempt
        self.generation = generation
        self.redelivered = redelivered
        self.trace_context = trace_context or {}
        self.message_id = message_id
        # The partition whose stream the message came from (a partitioned docket).
        self.partition = 0
        self.metadata: dict[str, Any] = {}
        """Data an integration carries with this run (and its retries and successors),
        beside its arguments rather than among them: plain JSON-compatible values under
        keys the integration names for itself (``docket_starlette`` keeps the enqueuing
        request's snapshot under ``"docket_starlette.request"``). Set it on the
        ``TaskCall`` an add is made of; signed with the payload when the docket signs. It
        never reaches the task function's arguments or the log lines' call reprs."""
        self.priority: Priority = Priority.NORMAL
        """The run's level: the stream its message was read from (for a worker's runs),
        else the ``prio`` of its record or message (NORMAL when it has none)."""
        self.state = state
        self.worker: str | None = None
        self.started_at: datetime | None = None
        self.completed_at: datetime | None = None
        self.error: str | None = None
        self.traceback: str | None = None
        """The formatted traceback of the exception a failed run raised, as the worker
        wrote it (its last 16,000 characters, after a ``…(truncated)`` line, when longer),
        kept in the record for ``execution_ttl``; None for any other outcome, for a run
        retried or marked failed by hand, and with ``execution_ttl=0``. Tracebacks do not
        pickle, so the exception in the result has none."""
        self.result_key: str | None = None
        self._result_lost = False
        self.disposition = disposition
        self.schedule_exception: BaseException | None = None
        self.progress = ExecutionProgress(self)
        self.deliveries = 1
        self._record_found = True
        # What scheduling this run's successor did, when a Retry or Perpetual did (the
        # worker counts retries, perpetuations and supersessions from it); else None.
        self.rescheduled: Disposition | None = None

    # What was called and under which key never changes for an execution (as released):
    # a different call is a different Execution.
    @property
    def function(self) -> TaskFunction | None:
        return self._function

    @property
    def args(self) -> tuple[Any, ...]:
        return self._args

    @property
    def kwargs(self) -> dict[str, Any]:
        return self._kwargs

    @property
    def key(self) -> str:
        return self._key

    @property
    def run_id(self) -> str:
        """The run's message id, made unique among one worker's runs: the streams of a
        partitioned docket's partitions, and of its priority levels, hand out the same
        ids (``<mid>``, ``<mid>@<partition>``, then ``~high`` or ``~low`` for those
        levels' streams)."""
        mid = self.message_id or ""
        if self.partition:
            mid = f"{mid}@{self.partition}"
        return mid + _RUN_LEVEL[self.priority] if self.priority else mid

    @property
    def lane(self) -> Keys:
        """The keys of this run's partition, ``stream`` naming its level's stream."""
        return self.docket.keys_for(self.key).lane(self.priority)

    def __repr__(self) -> str:
        return (
            f"Execution({self.function_name!r}, key={self.key!r}, state={self.state.value}, "
            f"attempt={self.attempt}, disposition={self.disposition.value})"
        )

    @property
    def started(self) -> datetime | None:
        """When the current run started (the name snapshots use for running tasks)."""
        return self.started_at

    # -- presentation ---------------------------------------------------------------

    def call_repr(self) -> str:
        """``name(args...){key}`` with only ``Logged`` arguments shown."""
        if self.function is None:
            names: tuple[str, ...] = ()
            logged: dict[str, Logged] = {}
        else:
            names, logged = _logged_parameters(self.function)
        shown: list[str] = []
        for index, value in enumerate(self.args):
            name = names[index] if index < len(names) else None
            marker = logged.get(name) if name else None
            shown.append(marker.format(value) if marker else "...")
        for name, value in self.kwargs.items():
            marker = logged.get(name)
            shown.append(f"{name}={marker.format(value) if marker else '...'}")
        return f"{self.function_name}({', '.join(shown)}){{{self.key}}}"

    def logged_arguments(self) -> list[tuple[str, str | None]]:
        """Each argument by its parameter name (``#<index>`` for a positional one beyond
        the signature) with its ``Logged`` form, or None for one not marked ``Logged``,
        whose value is not to be shown (a dashboard's task page lists these)."""
        if self.function is None:
            names: tuple[str, ...] = ()
            logged: dict[str, Logged] = {}
        else:
            names, logged = _logged_parameters(self.function)
        shown: list[tuple[str, str | None]] = []
        for index, value in enumerate(self.args):
            name = names[index] if index < len(names) else f"#{index}"
            marker = logged.get(name)
            shown.append((name, marker.format(value) if marker else None))
        for name, value in self.kwargs.items():
            marker = logged.get(name)
            shown.append((name, marker.format(value) if marker else None))
        return shown

    def get_argument(self, parameter: str) -> Any:
        """The value the task was called with for ``parameter``."""
        if parameter in self.kwargs:
            return self.kwargs[parameter]
        if self.function is not None:
            names, _ = _logged_parameters(self.function)
            if parameter in names:
                index = names.index(parameter)
                if index < len(self.args):
                    return self.args[index]
        raise KeyError(f"{self.function_name} was not called with an argument {parameter!r}")

    def arguments_by_name(self) -> dict[str, Any]:
        """All arguments keyed by parameter name (positional ones mapped by position)."""
        values = dict(self.kwargs)
        if self.function is not None and self.args:
            names, _ = _logged_parameters(self.function)
            for index, value in enumerate(self.args):
                if index < len(names):
                    values[names[index]] = value
        return values

    # -- state ----------------------------------------------------------------------

    def _load_record(self, record: dict[bytes, bytes]) -> None:
        state = as_text(record.get(b"state"))
        if state:
            self.state = ExecutionState(state)
        # A run keeps the generation it was claimed under: a sync after a replace must
        # not make the superseded run look current (its end would then overwrite the new
        # run's record). Only an execution read back from its record takes it from there.
        held = int(record[b"gen"]) if b"gen" in record else self.generation
        if not self.generation:
            self.generation = held
        when = timestamp(record.get(b"when"))
        if when is not None:
            self.when = when
        if b"attempt" in record:
            self.attempt = int(record[b"attempt"])
        self.worker = as_text(record.get(b"worker"))
        self.started_at = timestamp(record.get(b"started"))
        self.completed_at = timestamp(record.get(b"completed"))
        self.error = as_text(record.get(b"error")) or None
        self.traceback = as_text(record.get(b"traceback")) or None
        stored = record.get(b"result")
        # The key's outcome is whichever run holds it now (a replacement's, after a
        # replace), as released.
        self.result_key = result_key(self.key, held) if stored in _KEPT else None
        self._result_lost = stored == LOST
        mid = as_text(record.get(b"mid"))
        if mid and held == self.generation:
            self.message_id = mid
        self.priority = priority_field(record)
        self.progress._load(record)

    async def sync(self) -> None:
        """Refresh state, timings and progress from Redis."""
        async with self.docket.redis() as redis:
            record = await redis.hgetall(self.docket.keys_for(self.key).record(self.key))
        self._record_found = bool(record)
        if record:
            self._load_record(record)

    @classmethod
    async def from_record(
        cls,
        docket: Docket,
        key: str,
        record: dict[bytes, bytes],
        entry: dict[bytes, bytes] | None = None,
    ) -> Execution:
        """The execution ``record`` (a task's hash) describes; ``entry`` is its stream
        entry when the caller has it already. A task this process does not know (the
        CLI's watch, a dashboard) gets a stand-in named after it, so the execution reads
        like any other."""
        name = as_text(record.get(b"function")) or "<unknown>"
        # A scheduled task keeps its payload in its record; a queued or running one, in
        # its stream entry.
        source: dict[bytes, bytes] = record
        mid = as_text(record.get(b"mid"))
        if b"payload" not in record and entry is not None:
            source = entry
        elif b"payload" not in record and mid:
            client = docket.engine.connection.client
            lane = docket.keys_for(key).lane(priority_field(record))
            entries = await client.xrange(lane.stream, mid, mid)
            if entries:
                source = entries[0][1]
        args: tuple[Any, ...] = ()
        kwargs: dict[str, Any] = {}
        metadata: dict[str, Any] = {}
        if source.get(b"payload"):
            # Verified exactly as a worker would before anything is deserialized; an
            # entry that fails is shown without its arguments.
            meta = source.get(b"meta") or b""
            with suppress(PoisonMessage):
                args, kwargs = open_payload(
                    docket,
                    name,
                    key,
                    as_text(source.get(b"ser")) or "pickle",
                    source[b"payload"],
                    as_text(source.get(b"sig")) or "",
                    meta,
                )
                metadata = open_metadata(meta)
        execution = cls(
            docket,
            docket.tasks.get(name),
            args,
            kwargs,
            key,
            timestamp(record.get(b"when")) or datetime.now(UTC),
            function_name=name,
            trace_context=parse_trace_context(record.get(b"trace")),
        )
        execution.metadata = metadata
        if execution.function is None:
            execution._function = placeholder_for(execution)
        execution._load_record(record)
        return execution

    @classmethod
    async def from_message(
        cls,
        docket: Docket,
        message: Mapping[bytes, bytes],
        redelivered: bool = False,
        fallback_task: TaskFunction | None = None,
        message_id: str | bytes | None = None,
        sync: bool = True,
    ) -> Execution:
        """The execution a stream entry of ``docket`` carries, its arguments verified and
        decoded exactly as a worker would; ``sync`` then reads its state from Redis.

        Raises ``ValueError`` when the entry names a task this docket does not know (and
        there is no ``fallback_task``), or when it is not a call this docket can open."""
        raw_name = message.get(b"function")
        name = raw_name.decode(errors="replace") if raw_name else ""
        function = docket.tasks.get(name) or fallback_task
        if function is None:
            raise ValueError(
                f"Task function {name!r} is not registered with the current docket {docket.name!r}"
            )
        try:
            execution = from_entry(
                docket,
                dict(message),
                function,
                message_id=as_text(message_id),
                redelivered=redelivered,
            )
        except PoisonMessage as error:
            raise ValueError(
                f"Cannot rebuild an execution of {name!r} from this message: {error}"
            ) from None
        if sync:
            await execution.sync()
        return execution

    # -- worker-side calls ------------------------------------------------------------
    #
    # The worker claims and settles in batches through its own scripts; these are the
    # one-at-a-time calls code written for the released docket drives by hand (tests,
    # tools, custom runners). Each is one atomic script, fenced by generation.

    async def schedule(
        self,
        replace: bool = False,
        reschedule_message: str | bytes | None = None,
        expected_generation: int = 0,
    ) -> Disposition:
        """Schedule this execution (add, or ``replace``), or reschedule it in place of
        ``reschedule_message`` / only while the key is still at ``expected_generation``.
        Sets and returns ``disposition``. Strikes are checked by ``Docket.schedule``."""
        docket = self.docket
        rescheduling = reschedule_message is not None or expected_generation > 0
        mode = "reschedule" if rescheduling else ("replace" if replace else "add")
        expected = str(expected_generation or self.generation) if rescheduling else ""
        prepared, call = self._prepare(mode, expected)
        if call is None:
            self.disposition = Disposition.STRUCK
            return self.disposition
        self.disposition = await docket.engine.send_schedule(prepared, call)
        if prepared.disposition is Disposition.SCHEDULED:
            self.generation = prepared.generation
            self.state = prepared.state
            self.message_id = prepared.message_id
            self.trace_context = prepared.trace_context
        return self.disposition

    def _prepare(
        self, mode: str, expected_generation: str = ""
    ) -> tuple[Execution, scripts.Schedule | None]:
        """The schedule script's call for this execution (None when struck)."""
        function = self.function if self.function is not None else placeholder_for(self)
        return self.docket.engine.prepare(
            mode,
            TaskCall(
                function,
                self.when,
                self.key,
                self.args,
                self.kwargs,
                self.function_name,
                self.priority,
                self.metadata,
            ),
            attempt=self.attempt,
            expected_generation=expected_generation,
        )

    async def claim(self, worker: str) -> bool:
        """Mark this run RUNNING under ``worker``; False when the key now belongs to a
        newer run or was cancelled (then nothing is written but the cancelled event)."""
        started = await self._mark("running", worker=worker)
        if not started:
            await self.sync()
            return False
        self.state = ExecutionState.RUNNING
        self.worker = worker
        self.started_at = timestamp(started)
        self.progress.current, self.progress.total, self.progress.message = 0, 100, None
        return True

    async def mark_as_completed(self, result_key: str | None = None) -> None:
        """Record that this run completed (``result_key``: where its result is kept)."""
        await self._mark("completed")
        self._finished(ExecutionState.COMPLETED, None, result_key)

    async def mark_as_failed(self, error: str | None = None, result_key: str | None = None) -> None:
        """Record that this run failed, with ``error`` as its message if given."""
        await self._mark("failed", error=error or "")
        self._finished(ExecutionState.FAILED, error, result_key)

    async def mark_as_cancelled(self) -> None:
        """Record that this run was cancelled."""
        await self._mark("cancelled")
        self._finished(ExecutionState.CANCELLED, None, None)

    def _finished(self, state: ExecutionState, error: str | None, result_key: str | None) -> None:
        self.state = state
        self.error = error
        self.traceback = None
        self.result_key = result_key
        self.completed_at = datetime.now(UTC)
        self.progress.current, self.progress.message = None, None

    async def _mark(self, state: str, *, worker: str = "", error: str = "") -> Any:
        docket = self.docket
        keys = self.lane
        ttl = docket.execution_ttl.total_seconds()
        from ._redis.keys import GROUP

        return await docket.engine.scripts.send(
            scripts.Mark(
                record=keys.record(self.key),
                result_key=keys.result(self.key, self.generation),
                stream=keys.stream,
                generation=self.generation,
                state=state,
                worker=worker,
                error=error,
                result="",
                ttl=ttl,
                events_prefix=keys.events_prefix,
                key=self.key,
                group=GROUP,
                mid="" if state == "running" else (self.message_id or ""),
            )
        )

    async def is_superseded(self) -> bool:
        """True when the key now belongs to a newer schedule than this run's."""
        async with self.docket.redis() as redis:
            generation = await redis.hget(self.docket.keys_for(self.key).record(self.key), "gen")
        return generation is not None and int(generation) != self.generation

    # -- waiting ----------------------------------------------------------------------

    async def subscribe(
        self, *, ready: asyncio.Event | None = None
    ) -> AsyncGenerator[StateEvent | ProgressEvent, None]:
        """The current state and progress first, then every change as it happens.

        A finished task yields its two current events and ends without opening a pub/sub
        connection. Otherwise the subscription is made only when a third event is asked
        for; ``ready`` is set once it is confirmed, and a change made in between (after
        the first read, before the subscription) is read back and yielded too.
        """
        await self.sync()
        state_event, progress_event = self._state_event(), self._progress_event()
        yield state_event
        yield progress_event
        if self.state in TERMINAL_STATES:
            if ready is not None:
                ready.set()
            return
        docket = self.docket
        pubsub = docket.engine.pubsub()
        try:
            await pubsub.subscribe(docket.keys.events(self.key))
            # The confirmation arrives before anything published after it.
            await pubsub.get_message(ignore_subscribe_messages=False, timeout=None)
            if ready is not None:
                ready.set()
            await self.sync()
            fresh_state, fresh_progress = self._state_event(), self._progress_event()
            if fresh_state != state_event:
                yield fresh_state
            if fresh_progress != progress_event:
                yield fresh_progress
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None:
                    continue
                event = json.loads(message["data"])
                # Scripts publish times as epoch seconds; subscribers get the ISO 8601 the
                # first (synthesized) event uses too.
                for field in _EVENT_TIMES:
                    if isinstance(event.get(field), str) and event[field]:
                        with suppress(ValueError, OverflowError, OSError):
                            moment = timestamp(event[field])
                            event[field] = moment.isoformat() if moment else None
                if event.get("type") == "state":
                    event["state"] = ExecutionState(event["state"])
                    self.state = event["state"]
                yield event
        finally:
            await pubsub.aclose()

    def _state_event(self) -> StateEvent:
        return StateEvent(
            type="state",
            key=self.key,
            state=self.state,
            when=self.when.isoformat(),
            worker=self.worker,
            started_at=self.started_at.isoformat() if self.started_at else None,
            completed_at=self.completed_at.isoformat() if self.completed_at else None,
            error=self.error,
        )

    def _progress_event(self) -> ProgressEvent:
        progress = self.progress
        return ProgressEvent(
            type="progress",
            key=self.key,
            current=progress.current,
            total=progress.total,
            message=progress.message,
            updated_at=progress.updated_at.isoformat() if progress.updated_at else None,
        )

    async def get_result(
        self, *, timeout: float | None = None, deadline: datetime | float | None = None
    ) -> Any:
        """Wait for the run to end: its return value, its exception re-raised,
        ``ExecutionCancelled``, or ``TimeoutError`` when ``timeout``/``deadline`` passes."""
        if timeout is not None and deadline is not None:
            raise ValueError(
                "Cannot specify both timeout and deadline: pass one of them to get_result"
            )
        limit: float | None = None
        if timeout is not None:
            limit = time.monotonic() + (
                timeout.total_seconds() if hasattr(timeout, "total_seconds") else timeout
            )
        elif deadline is not None:
            target = deadline.timestamp() if isinstance(deadline, datetime) else deadline
            limit = time.monotonic() + (target - time.time())

        if self.state not in TERMINAL_STATES:
            await self._wait_until_final(limit)
        elif self.result_key is None and self.state is not ExecutionState.CANCELLED:
            # Made terminal by an event the caller's own subscribe() heard: events do not
            # carry where the result is, the record does.
            await self.sync()
        return await self._outcome()

    async def _wait_until_final(self, limit: float | None) -> None:
        events = self.subscribe()
        try:
            while True:
                remaining = None if limit is None else limit - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"Timeout waiting for execution {self.key!r} to finish "
                        f"(state: {self.state.value})"
                    )
                try:
                    event = await asyncio.wait_for(anext(events), remaining)
                except TimeoutError:
                    raise TimeoutError(
                        f"Timeout waiting for execution {self.key!r} to finish "
                        f"(state: {self.state.value})"
                    ) from None
                if not self._record_found and limit is None:
                    # Expired, or a fire-and-forget docket (execution_ttl=0) that keeps no
                    # record: nothing will ever report back. With a time limit, as
                    # released, the wait runs out instead (TimeoutError).
                    return
                if event["type"] == "state" and event["state"] in TERMINAL_STATES:
                    await self.sync()
                    return
        finally:
            await events.aclose()

    async def _outcome(self) -> Any:
        if self.state == ExecutionState.CANCELLED:
            raise ExecutionCancelled(f"Task {self.key!r} was cancelled")
        data: bytes | None = None
        if self.result_key is not None:
            data = await self.docket.engine.results.load(self.result_key)
        if self.state == ExecutionState.COMPLETED and self._result_lost:
            raise ResultStoreError(self.error or f"The result of task {self.key!r} was lost")
        if self.state == ExecutionState.FAILED:
            if data is not None:
                error = self.docket.engine.load_result(self.key, data)
                if isinstance(error, BaseException):
                    raise error
            raise RuntimeError(self.error or f"Task {self.key!r} failed")
        if self.state != ExecutionState.COMPLETED or data is None:
            return None
        return self.docket.engine.load_result(self.key, data)


def compact_signature(signature: inspect.Signature) -> str:
    """A short form of a task's signature for listings: ``a: str, b: int = 1, ...``.

    Dependencies are not the caller's business, so they collapse into one ``...``.
    """
    parts: list[str] = []
    dependencies = 0
    for parameter in signature.parameters.values():
        if isinstance(parameter.default, Dependency):
            dependencies += 1
            continue
        text = parameter.name
        annotation = parameter.annotation
        if annotation is not parameter.empty:
            # Annotated[int, Logged] reads as int.
            if get_origin(annotation) is not None and get_args(annotation):
                annotation = get_args(annotation)[0]
            text += f": {getattr(annotation, '__name__', str(annotation))}"
        if parameter.default is not parameter.empty:
            text += f" = {parameter.default!r}"
        parts.append(text)
    if dependencies:
        parts.append("...")
    return ", ".join(parts)


async def schedule_many(
    redis: Any,
    executions: Sequence[Execution],
    *,
    replace: bool,
    chunk_size: int | None = 1000,
) -> None:
    """Schedule prepared executions in pipelined chunks on ``redis``.

    Each one is its own atomic schedule (as ``Execution.schedule``), with its own
    ``disposition``: a struck one is ``STRUCK``, one whose script failed is ``FAILED``
    with ``schedule_exception`` set; chunks never sent keep ``LOADED``.
    """
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1 (or None), got {chunk_size}")
    mode = "replace" if replace else "add"
    size = chunk_size or max(len(executions), 1)
    for start in range(0, len(executions), size):
        chunk = executions[start : start + size]
        sent: list[tuple[Execution, Execution]] = []
        async with redis.pipeline(transaction=False) as pipe:
            for execution in chunk:
                docket = execution.docket
                prepared, call = execution._prepare(mode)
                if call is None:
                    execution.disposition = Disposition.STRUCK
                    continue
                await docket.engine.scripts.queue(pipe, call)
                sent.append((execution, prepared))
            replies = await pipe.execute(raise_on_error=False)
        for (execution, prepared), reply in zip(sent, replies, strict=True):
            if isinstance(reply, Exception):
                execution.disposition = Disposition.FAILED
                execution.schedule_exception = reply
                continue
            execution.docket.engine.apply_reply(prepared, reply)
            execution.disposition = prepared.disposition
            execution.generation = prepared.generation
            execution.state = prepared.state
            execution.message_id = prepared.message_id


def from_entry(
    docket: Docket,
    fields: dict[bytes, bytes],
    function: TaskFunction,
    *,
    message_id: str | None,
    redelivered: bool,
    partition: int = 0,
    priority: int | None = None,
) -> Execution:
    """The execution one stream entry carries, run by ``function``. Raises
    ``PoisonMessage`` for an entry that is malformed, unsigned where signing is on, or
    otherwise unsafe to open (what the worker dead-letters). ``priority`` is the level of
    the stream the entry was read from, trusted over its ``prio`` field (None: the
    field's)."""
    message = parse_fields(fields)
    if docket.partitions > 1 and docket.keys_for(message.key).partition != partition:
        # Settling it would touch another partition's stream: written by hand, or by a
        # process that disagreed on the partition count.
        raise PoisonMessage(
            f"key {message.key[:200]!r} belongs to partition "
            f"{docket.keys_for(message.key).partition}, not partition {partition}"
        )
    args, kwargs = open_payload(
        docket,
        message.function_name,
        message.key,
        message.serializer,
        message.payload,
        message.signature,
        message.meta,
    )
    metadata = open_metadata(message.meta)
    execution = Execution(
        docket,
        function,
        args,
        kwargs,
        message.key,
        datetime.fromtimestamp(message.when, UTC),
        message.attempt,
        function_name=message.function_name,
        generation=message.generation,
        redelivered=redelivered,
        trace_context=parse_trace_context(message.trace),
        message_id=message_id,
        state=ExecutionState.QUEUED,
    )
    execution.partition = partition
    execution.priority = priority_field(fields) if priority is None else Priority(priority)
    execution.metadata = metadata
    return execution


_RUN_LEVEL = {Priority.HIGH: "~high", Priority.LOW: "~low"}


def priority_field(fields: Mapping[bytes, bytes]) -> Priority:
    """The level a record's or message's ``prio`` says; NORMAL without one (what
    releases before priorities wrote) or with one this release does not know."""
    raw = fields.get(b"prio")
    if raw == b"1":
        return Priority.HIGH
    if raw == b"-1":
        return Priority.LOW
    return Priority.NORMAL


def placeholder_for(execution: Execution) -> TaskFunction:
    """A stand-in for a function this process does not know, named after it."""

    async def placeholder(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError(
            f"Task {execution.function_name!r} is not registered in this process; only "
            "its record was loaded"
        )

    placeholder.__name__ = placeholder.__qualname__ = execution.function_name
    return placeholder


__all__ = [
    "Disposition",
    "Execution",
    "ExecutionCancelled",
    "ExecutionProgress",
    "ExecutionState",
    "ProgressEvent",
    "StateEvent",
    "TaskCall",
    "TaskFunction",
    "compact_signature",
    "get_signature",
    "schedule_many",
]

"""The producer side of a docket: add, replace, cancel, strike, and look around."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from redis.exceptions import AuthenticationError, NoPermissionError, RedisError

from . import _partition_layout, _snapshot, serialization
from ._engine import Engine
from ._imports import import_object
from ._layout_names import ReleasedLayoutNames
from ._partition_layout import PartitionMismatch
from ._priority import Priority, validate_priority
from ._redis import scripts
from ._redis.client import TopologyError, check_credentials, redact_url
from ._redis.keys import GROUP, Keys, partition_of, validate_name, validate_partitions
from ._redis.topology import parse_topology

# Importable from here, as released (and SNAPSHOT_BATCH, as the tests read it).
from ._snapshot import SNAPSHOT_BATCH as SNAPSHOT_BATCH
from ._snapshot import DocketSnapshot as DocketSnapshot
from ._snapshot import RunningExecution as RunningExecution
from ._snapshot import WorkerInfo as WorkerInfo
from ._strike_sync import StrikeSync
from ._task_handle import TaskHandle as TaskHandle
from .execution import (
    Disposition,
    Execution,
    TaskCall,
    TaskFunction,
)
from .instrumentation import (
    TASKS_CANCELLED,
)
from .strikes import Operator, StrikeList

if TYPE_CHECKING:
    from key_value.aio.protocols.key_value import AsyncKeyValue

logger = logging.getLogger("docket")

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_EXECUTION_TTL = timedelta(minutes=15)

CLEAR_BATCH = 1000
"""How many scheduled (and how many queued) tasks one call of the clear script cancels."""


class Docket(ReleasedLayoutNames):
    """A named, shared schedule of tasks in Redis (or in-process on ``memory://``)."""

    def __init__(
        self,
        name: str = "docket",
        url: str | None = None,
        heartbeat_interval: timedelta = timedelta(seconds=2),
        missed_heartbeats: int = 5,
        execution_ttl: timedelta = DEFAULT_EXECUTION_TTL,
        result_storage: AsyncKeyValue | None = None,
        enable_internal_instrumentation: bool = False,
        credential_provider: Any = None,
        *,
        signing_key: str | bytes | None = None,
        serializer: str | serialization.Serializer = "pickle",
        max_payload_bytes: int | None = serialization.DEFAULT_MAX_PAYLOAD_BYTES,
        partitions: int | None = None,
    ) -> None:
        self.name = validate_name(name)
        self.url = url or os.environ.get("DOCKET_URL") or "redis://localhost:6379/0"
        self.heartbeat_interval = heartbeat_interval
        self.missed_heartbeats = missed_heartbeats
        if execution_ttl < timedelta(0):
            raise ValueError("execution_ttl must be zero (keep nothing) or positive")
        self.execution_ttl = execution_ttl
        self.enable_internal_instrumentation = enable_internal_instrumentation
        # A URL that cannot work is refused here, where it was written, not at first use.
        parse_topology(self.url)
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
        if partitions is None:
            partitions = _partitions_from_environment()
        self.partitions = validate_partitions(partitions)
        self.partition_keys: tuple[Keys, ...] = tuple(
            Keys(self.name, partition, self.partitions) for partition in range(self.partitions)
        )
        """Each partition's keys; the first is the control partition, ``keys``."""
        self.keys = self.partition_keys[0]
        # What docket's own modules use of this docket beyond its public API.
        self.engine = Engine(self, result_storage)
        # The given store, or (by default) a view of the results kept in this docket's
        # Redis; either way an AsyncKeyValue with each result under Execution.result_key.
        self.result_storage: AsyncKeyValue = self.engine.results.store
        self.tasks: dict[str, TaskFunction] = {}
        self.strike_list = StrikeList()
        self._entered = False
        self._strikes = StrikeSync(self)

        from .tasks import standard_tasks

        for task in standard_tasks:
            self.register(task)

    def __repr__(self) -> str:
        partitions = f", partitions={self.partitions}" if self.partitions > 1 else ""
        return f"Docket(name={self.name!r}, url={redact_url(self.url)!r}{partitions})"

    def keys_for(self, key: str) -> Keys:
        """The keys of the partition task ``key`` lives in."""
        if self.partitions == 1:
            return self.keys
        return self.partition_keys[partition_of(key, self.partitions)]

    def labels(self) -> dict[str, str]:
        """The metric labels (and span attributes) of everything this docket does."""
        return self.engine.labels

    # -- lifetime -------------------------------------------------------------------

    async def __aenter__(self) -> Docket:
        if self._entered:
            raise RuntimeError("A Docket is not re-entrant; open it once with `async with`")
        self._entered = True
        engine = self.engine
        engine.open()
        try:
            await engine.connection.check()
            await _partition_layout.check(self)
            for keys in self.partition_keys:
                for stream in keys.streams:
                    await engine.scripts.send(scripts.EnsureGroup(stream=stream, group=GROUP))
            await self._strikes.load()
        except AuthenticationError:
            # As released, credentials are not checked on entering: the first command
            # raises redis-py's own error. A provider's credentials may also start
            # working later; workers create the group and the monitor loads strikes.
            pass
        except (TopologyError, PartitionMismatch):
            await engine.close()
            self._entered = False
            raise
        except NoPermissionError as error:
            await engine.close()
            self._entered = False
            patterns = f"~{self.keys.prefix}:*" + (
                f" and ~{{{self.name}/*" if self.partitions > 1 else ""
            )
            raise ConnectionError(
                f"Redis at {redact_url(self.url)} refused docket {self.name!r} ({error}): "
                f"the user's ACL must allow its keys, {patterns}"
            ) from error
        except (RedisError, OSError) as error:
            await engine.close()
            self._entered = False
            raise ConnectionError(
                f"Cannot reach Redis at {redact_url(self.url)}: {error}"
            ) from error
        try:
            await engine.results.open()
        except BaseException:
            await engine.close()
            self._entered = False
            raise
        self._strikes.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._strikes.stop()
        await self.engine.close()
        self._entered = False

    @asynccontextmanager
    async def redis(self) -> AsyncIterator[Any]:
        """The raw redis-py client (shared connection pool)."""
        yield self.engine.connection.client

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

    # -- adding ---------------------------------------------------------------------

    @overload
    def add(
        self,
        function: Callable[P, R],
        when: datetime | None = None,
        key: str | None = None,
        *,
        priority: Priority = Priority.NORMAL,
    ) -> TaskHandle[P, R]: ...

    @overload
    def add(
        self,
        function: str,
        when: datetime | None = None,
        key: str | None = None,
        *,
        priority: Priority = Priority.NORMAL,
    ) -> TaskHandle[..., Any]: ...

    def add(
        self,
        function: Callable[P, R] | str,
        when: datetime | None = None,
        key: str | None = None,
        *,
        priority: Priority = Priority.NORMAL,
    ) -> TaskHandle[Any, Any]:
        """Register ``function`` (if needed) and return a handle that adds it when called.

        Used bare as a decorator, the handle replaces the function in its module.
        ``priority`` is its level (docs/priorities.md): due HIGH tasks run before NORMAL
        ones, and NORMAL before LOW.
        """
        level = validate_priority(priority)
        return TaskHandle(self, *self.engine.resolve(function), when, key, "add", level)

    def replace(
        self,
        function: Callable[P, R] | str,
        when: datetime | None,
        key: str,
        *,
        priority: Priority = Priority.NORMAL,
    ) -> TaskHandle[Any, Any]:
        """Like ``add``, but whatever is scheduled under ``key`` is replaced (its
        priority too: the replacement has ``priority``)."""
        level = validate_priority(priority)
        return TaskHandle(self, *self.engine.resolve(function), when, key, "replace", level)

    def call(
        self,
        function: Callable[P, R] | str,
        when: datetime | None = None,
        key: str | None = None,
        *,
        priority: Priority = Priority.NORMAL,
    ) -> Callable[..., TaskCall]:
        """A task call for ``add_many``/``replace_many``; touches nothing."""
        resolved, name = self.engine.resolve(function)
        level = validate_priority(priority)

        def build(*args: Any, **kwargs: Any) -> TaskCall:
            return TaskCall(resolved, when, key, args, kwargs, name, level)

        return build

    async def add_many(
        self, calls: Iterable[TaskCall], *, chunk_size: int | None = 1000
    ) -> list[Execution]:
        return await self.engine.schedule_many("add", calls, chunk_size)

    async def replace_many(
        self, calls: Iterable[TaskCall], *, chunk_size: int | None = 1000
    ) -> list[Execution]:
        return await self.engine.schedule_many("replace", calls, chunk_size)

    # -- cancelling -----------------------------------------------------------------

    def _pubsub(self) -> Any:
        # The released docket's seam for pub/sub connections (see Engine.pubsub).
        return self.engine.connection.pubsub()

    async def schedule(self, execution: Execution) -> None:
        """Schedule a prepared ``Execution`` as ``add`` would (strikes apply, and a key
        already scheduled, queued or running is left alone: ``ALREADY_SCHEDULED``)."""
        engine = self.engine
        with engine.producer_span(
            "docket.schedule", engine.task_labels(execution.function_name)
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
        engine.count_scheduled("add", execution)

    async def cancel(self, key: str) -> None:
        """Withdraw a scheduled or queued task; ask its worker to stop a running one."""
        labels = self.engine.labels
        with self.engine.producer_span("docket.cancel", labels) as span:
            if span is not None:
                span.set_attribute("docket.key", key)
            cancelled = await self.engine.cancel(key)
            if span is not None:
                span.set_attribute("docket.cancelled", cancelled)
        if cancelled:
            TASKS_CANCELLED.add(1, labels)

    async def clear(self) -> int:
        """Cancel every task that has not started yet; returns how many.

        Works in batches of ``CLEAR_BATCH`` scheduled and ``CLEAR_BATCH`` queued tasks
        per script call, and stops after a batch that comes back short, so producers
        adding tasks all the while cannot keep it going forever.
        """
        count = 0
        engine = self.engine
        with engine.producer_span("docket.clear", engine.labels) as span:
            # Each level's stream of each partition (the first call of a partition
            # clears its schedule too).
            for keys in (lane for partition in self.partition_keys for lane in partition.lanes()):
                while True:
                    batch = CLEAR_BATCH
                    cleared = int(
                        await engine.scripts.send(
                            scripts.Clear(
                                stream=keys.stream,
                                queue=keys.queue,
                                group=GROUP,
                                record_prefix=keys.record_prefix,
                                ttl=self.execution_ttl.total_seconds(),
                                events_prefix=keys.events_prefix,
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
            TASKS_CANCELLED.add(count, engine.labels)
        return count

    # -- reading --------------------------------------------------------------------

    async def get_execution(self, key: str) -> Execution | None:
        """The execution stored under ``key``, or None when there is none (or it expired)."""
        record = await self.engine.connection.client.hgetall(self.keys_for(key).record(key))
        if not record:
            return None
        return await Execution.from_record(self, key, record)

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


def _partitions_from_environment() -> int:
    raw = os.environ.get("DOCKET_PARTITIONS", "").strip()
    if not raw:
        return 1
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            f"DOCKET_PARTITIONS must be a whole number from 1 up, not {raw!r}"
        ) from None

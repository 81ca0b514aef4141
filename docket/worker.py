"""The consumer side: a ``Worker`` claims, runs and settles a docket's tasks.

The worker wires its rooms together, each in a module of its own: reading
(``_worker_reading``) and claiming (``_worker_claiming``) new messages, running them
(``_worker_running``), settling their outcomes (``_worker_settling``), leases and
redelivery (``_worker_leases``), the scheduler (``_worker_scheduler``), health
(``_worker_health``) and cancellation (``_worker_cancellation``). Their background
loops share one error policy (``_worker_loops``)."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractContextManager, AsyncExitStack, suppress
from datetime import timedelta
from typing import Any

from redis.exceptions import RedisError, ResponseError

from ._fallback import default_fallback_task
from ._redis import scripts
from ._redis.client import BLOCK_SECONDS
from ._redis.keys import GROUP, Keys
from ._worker_cancellation import Cancellation
from ._worker_claiming import Claims
from ._worker_health import Health
from ._worker_leases import Leases
from ._worker_loops import REDIS_TROUBLE, Tasks, Trouble, seconds
from ._worker_options import OPTION_NAMES, WorkerOptions, option_specs
from ._worker_reading import Reader, open_reader
from ._worker_running import Runner
from ._worker_scheduler import Scheduler
from ._worker_settling import Settler
from ._worker_state import WorkerState
from .dependencies import WorkerShared, declared_dependencies, validate_worker_dependencies
from .docket import Docket
from .execution import Execution
from .instrumentation import WorkerMetrics, register_worker, unregister_worker

logger = logging.getLogger("docket.worker")

__all__ = ["GROUP", "Worker", "WorkerOptions", "default_fallback_task"]

DEFAULT_MAX_DELIVERIES = 5
_name_counter = itertools.count()
_eager_task = asyncio.create_eager_task_factory(asyncio.Task)


def _default_name() -> str:
    base = f"{socket.gethostname()}#{os.getpid()}"
    n = next(_name_counter)
    return base if n == 0 else f"{base}-{n}"


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
            **{option: value for option, value in locals().items() if option in OPTION_NAMES}
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

        self._state = WorkerState(
            metrics=WorkerMetrics(docket.name, self.name),
            trouble=Trouble(
                REDIS_TROUBLE,
                self.name,
                level=logging.ERROR,
                delay=lambda: seconds(self.reconnection_delay),
            ),
            # Looked up at each call: docket.testing and tests wrap _start.
            start=lambda execution: self._start(execution),
            claim_budget=self._claim_budget,
            traced_internals=enable_internal_instrumentation,
        )
        state = self._state
        self._active = state.active
        self._slot_freed = state.slot_freed
        self._metrics = state.metrics
        self._trouble = state.trouble
        self._crashes: list[Exception] = []
        self._entered = False
        self._aborting = False
        self._background = Tasks()
        self._health = Health(self, state)
        self._scheduler = Scheduler(self, state)
        self._settler = Settler(self, state, self._background)
        self._cancellation = Cancellation(self, state)
        self._begun = self._cancellation.begun
        self._runner = Runner(self, state, self._settler, self._cancellation)
        # One run, claim to settlement: the released worker's name for it, which code
        # written for it replaces to simulate a crash mid-run (a bound method, so the
        # hot path pays no extra call).
        self._execute = self._runner.execute
        self._claims = Claims(self, state)
        self._leases = Leases(self, state, self._claims)
        self._readers: list[Reader] = []
        self._watermarks: dict[int, list[str] | None] = {}
        """What each partition's last reader's watermark was, for the next (see
        Reader.watermark)."""
        self._reserved = 0
        """Slots held by reads under way (a partitioned docket's readers share them)."""
        self._slot_waiters = 0
        """A partitioned docket's readers waiting for a slot."""

    def __repr__(self) -> str:
        return f"Worker({self.name!r}, docket={self.docket.name!r}, concurrency={self.concurrency})"

    def labels(self) -> dict[str, str]:
        """The metric labels (and span attributes) of everything this worker does."""
        return dict(self._metrics.base)

    @property
    def entered(self) -> bool:
        """Whether the worker is open (inside its ``async with``): what it holds for its
        runs, such as concurrency slots, is kept alive that long."""
        return self._entered

    @property
    def _stopping(self) -> bool:
        return self._state.stopping

    @_stopping.setter
    def _stopping(self, stopping: bool) -> None:
        self._state.stopping = stopping

    def _internal(self, name: str) -> AbstractContextManager[None]:
        return self._state.internal(name)

    # -- lifetime -------------------------------------------------------------------

    async def __aenter__(self) -> Worker:
        if self._entered:
            raise RuntimeError("A Worker is not re-entrant")
        self._entered = True
        self._stopping = False
        self._state.traced_internals = (
            self.enable_internal_instrumentation or self.docket.enable_internal_instrumentation
        )
        for task_name in self.docket.tasks:
            self._metrics.running.setdefault(task_name, 0)
        register_worker(self._metrics)
        background = self._background
        background.start(self._settler.run(), f"{self.name}-settle")
        heartbeat = self._health.heartbeat_loop(then=self._scheduler.after_heartbeat)
        background.start(heartbeat, f"{self.name}-heartbeat")
        background.start(self._cancellation.listen(self._scheduler.wake), f"{self.name}-listen")
        background.start(self._leases.renew_loop(), f"{self.name}-renew")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stopping = True
        await self._drain()
        await self._background.cancel()
        with suppress(RedisError, OSError):
            keys = self.docket.keys
            await self.docket.engine.scripts.send(
                scripts.WorkerGone(
                    workers=keys.workers,
                    worker_tasks=keys.worker_tasks(self.name),
                    worker=self.name,
                )
            )
        await self.shared.aclose()
        unregister_worker(self._metrics)
        self._health.heartbeat_ok = False
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
        await self._settler.flush()

    def stop(self) -> None:
        """Stop taking new work; the run loop returns once in-flight runs have finished."""
        if not self._stopping and self._active:
            logger.info("Shutdown requested, finishing %d active tasks...", len(self._active))
        self._stopping = True
        self._slot_freed.set()
        self._scheduler.wake()
        self.docket.engine.connection.notify_activity()
        for reader in self._readers:
            reader.unblock()

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
        self._runner.limit_runs(dict(iterations_by_key))
        try:
            await self._run(forever=False)
        finally:
            self._runner.unlimit_runs()

    async def _run(self, forever: bool) -> None:
        if not self._entered:
            async with self:
                await self._run(forever)
            return
        self._stopping = False
        await self._ensure_group()
        if self.schedule_automatic_tasks:
            await self._scheduler.schedule_automatic()
        self._health.running_loop = True
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
            self._health.running_loop = False

    async def _run_loops(self, forever: bool) -> None:
        async with AsyncExitStack() as lifecycles:
            for cls in self._lifecycle_classes():
                manager = cls.worker_lifecycle(self.docket, self)
                if manager is not None:
                    await lifecycles.enter_async_context(manager)
            loops = Tasks()
            loops.start(self._scheduler.loop(), f"{self.name}-scheduler")
            loops.start(self._leases.reclaim_loop(), f"{self.name}-reclaim")
            try:
                await self._consume(forever)
            except asyncio.CancelledError:
                if self._active and not self._aborting and not self._stopping:
                    logger.info(
                        "Shutdown requested, finishing %d active tasks...", len(self._active)
                    )
                raise
            finally:
                await loops.cancel()
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

    # -- the run loop: read, claim, start -------------------------------------------

    async def _consume(self, forever: bool) -> None:
        partitions = self.docket.partition_keys
        if len(partitions) == 1:
            await self._consume_partition(partitions[0], forever, self._consume_with)
            return
        # One reader per partition, each on its own connection (on a Cluster, to its
        # partition's shard), sharing the worker's slots.
        async with asyncio.TaskGroup() as group:
            for keys in partitions:
                group.create_task(
                    self._consume_partition(keys, forever, self._consume_shared),
                    name=f"{self.name}-read-{keys.partition}",
                )

    async def _consume_partition(
        self,
        keys: Keys,
        forever: bool,
        loop: Callable[[Reader, bool], Coroutine[Any, Any, None]],
    ) -> None:
        watermark = self._watermarks.get(keys.partition)
        reader = open_reader(self.docket, self.name, watermark, keys)
        self._readers.append(reader)
        try:
            await loop(reader, forever)
        finally:
            self._watermarks[keys.partition] = reader.watermark
            self._readers.remove(reader)
            await reader.aclose()

    async def _consume_with(self, reader: Reader, forever: bool) -> None:
        check = max(seconds(self.minimum_check_interval), 0.001)
        active = self._active
        slot_freed = self._slot_freed
        health = self._health
        claims = self._claims
        while not self._stopping:
            if self._crashes:
                crashes, self._crashes = self._crashes, []
                raise ExceptionGroup(f"Worker {self.name} could not run its tasks", crashes)
            try:
                free = self.concurrency - len(active)
                if free <= 0:
                    slot_freed.clear()
                    if self.concurrency - len(active) <= 0:
                        await slot_freed.wait()
                    continue
                count = self._claim_budget(free)
                wait = BLOCK_SECONDS if forever else check
                health.read_since = time.monotonic()
                with self._internal("docket.read"):
                    delivery = await reader.read(count, wait)
                health.read_since = None
                health.reads_ok = True
                if delivery:
                    for lane, claimed, unclaimed in delivery:
                        await claims.start(claimed, unclaimed, lane)
                    continue
                if not forever:
                    with self._internal("docket.finished"):
                        finished = await self._finished()
                    if finished:
                        return
                await reader.idle(wait)
            except (RedisError, OSError) as error:
                await self._read_failed(reader, error)

    async def _consume_shared(self, reader: Reader, forever: bool) -> None:
        """One partition's read loop of several, sharing the worker's slots.

        A read that may block holds one slot; a read after one that found work does not
        block, and takes at most its share of the free slots. So while work is plentiful
        every partition's reader gets some, and no worker runs more than ``concurrency``
        at once. A reader whose blocking read found nothing lets any reader waiting for
        a slot go first, and while one waits, blocking reads are cut to
        ``minimum_check_interval``: with fewer slots than partitions, the readers take
        turns instead of the first ones keeping the slots.
        """
        check = max(seconds(self.minimum_check_interval), 0.001)
        active = self._active
        slot_freed = self._slot_freed
        health = self._health
        claims = self._claims
        readers = len(self.docket.partition_keys)
        blocking = False
        while not self._stopping:
            if self._crashes:
                crashes, self._crashes = self._crashes, []
                raise ExceptionGroup(f"Worker {self.name} could not run its tasks", crashes)
            free = self.concurrency - len(active) - self._reserved
            if free <= 0:
                slot_freed.clear()
                self._slot_waiters += 1
                try:
                    await slot_freed.wait()
                finally:
                    self._slot_waiters -= 1
                continue
            count = 1 if blocking else self._claim_budget(-(-free // readers))
            wait = 0.0
            if blocking:
                wait = BLOCK_SECONDS if forever and not self._slot_waiters else check
            found = False
            self._reserved += count
            try:
                health.read_since = time.monotonic()
                with self._internal("docket.read"):
                    delivery = await reader.read(count, wait)
                health.read_since = None
                health.reads_ok = True
                found = bool(delivery)
                for lane, claimed, unclaimed in delivery:
                    await claims.start(claimed, unclaimed, lane)
                if not found and blocking and not forever:
                    with self._internal("docket.finished"):
                        if await self._finished():
                            return
            except (RedisError, OSError) as error:
                await self._read_failed(reader, error)
                continue
            finally:
                # Released once the runs it read have started (and count as active).
                self._reserved -= count
                slot_freed.set()
            if found:
                blocking = False
                continue
            if blocking:
                await reader.idle(wait)
            blocking = True
            if self._slot_waiters:
                # Those woken by the release above run before this reader reserves again.
                await asyncio.sleep(0)

    async def _read_failed(self, reader: Reader, error: RedisError | OSError) -> None:
        self._health.read_since = None
        if isinstance(error, ResponseError) and "NOGROUP" in str(error):
            logger.warning("The consumer group is gone (Redis restarted?); recreating it")
            reader.group_lost()
            try:
                await self._ensure_group()
            except (RedisError, OSError) as failure:
                await self._trouble.handle(failure)
            return
        self._health.reads_ok = False
        if not isinstance(error, ResponseError):
            reader.connection_lost()
        await self._trouble.handle(error)

    def _claim_budget(self, free: int) -> int:
        """How many messages the next read may claim: no more than free slots, the
        batch size, or (with ``max_tasks``) the runs left before the worker recycles."""
        budget = min(free, self.message_batch)
        if self.max_tasks is not None:
            budget = min(budget, max(self.max_tasks - self.tasks_started, 1))
        return budget

    async def _ensure_group(self) -> None:
        for keys in self.docket.partition_keys:
            for stream in keys.streams:
                ensure = scripts.EnsureGroup(stream=stream, group=GROUP)
                await self.docket.engine.scripts.send(ensure)

    async def _finished(self) -> bool:
        if self._active or self._settler.busy:
            return False
        docket = self.docket
        client = docket.engine.connection.client
        async with client.pipeline(transaction=False) as pipe:
            for keys in docket.partition_keys:
                pipe.zcard(keys.queue)
                for stream in keys.streams:
                    pipe.xlen(stream)
            # Runs parked behind a concurrency limit are neither scheduled nor queued.
            pipe.scard(docket.keys.concurrency_registry)
            counts = await pipe.execute()
        return not any(int(count) for count in counts)

    # -- the runs in flight ---------------------------------------------------------

    def _start(self, execution: Execution) -> None:
        assert execution.message_id is not None
        mid = execution.run_id
        self.tasks_started += 1
        if self.max_tasks is not None and self.tasks_started >= self.max_tasks:
            if not self._stopping:
                logger.info("Worker %s started %d runs: recycling", self.name, self.tasks_started)
            self.stop()
        # Started eagerly: the run goes as far as its first await right here, so one that
        # never awaits finishes without a trip through the event loop.
        task = _eager_task(
            asyncio.get_running_loop(),
            self._execute(execution),
            name=f"docket:{execution.key}",
        )
        if task.done():
            self._begun.discard(mid)
            self._note_crash(task)
            return
        self._active[mid] = (execution, task)
        # A task cancelled before its first step (a cancel or an abort right after the
        # claim) never runs Runner.execute's ``finally``; without this its entry would stay
        # and _drain would spin on it forever.
        task.add_done_callback(lambda done: self._forget(mid, done))

    def _note_crash(self, task: asyncio.Task[None]) -> None:
        """Runner.execute handles everything a task can do; what still escapes it is a
        bug in the worker itself, which stops the run loop (raised from it as an
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
        partitions: int | None = None,
        execution_ttl: timedelta | None = None,
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
        signal handlers. ``partitions`` is the docket's partition count (by default
        ``DOCKET_PARTITIONS``, else 1); ``execution_ttl`` the docket's (by default 15
        minutes): how long finished runs' records are kept.
        """
        from ._worker_run import run_worker

        # Every argument but the docket's, the service's and the task list's is a
        # WorkerOptions field, as is each of ``options``.
        given = {option: value for option, value in locals().items() if option in OPTION_NAMES}
        worker_options = WorkerOptions.imported(**given, **options)
        await run_worker(
            cls,
            worker_options,
            docket_name=docket_name,
            url=url,
            until_finished=until_finished,
            healthcheck_port=healthcheck_port,
            metrics_port=metrics_port,
            tasks=tasks,
            partitions=partitions,
            execution_ttl=execution_ttl,
        )

    def is_healthy(self) -> bool:
        """Whether the worker loop is alive and Redis reachable: it is running (or
        draining), its last read from the stream succeeded and no read hangs, and its
        last heartbeat succeeded within the window other workers judge liveness by
        (``heartbeat_interval * missed_heartbeats``)."""
        return self.health_problem() is None

    def health_problem(self) -> str | None:
        """Why the worker is not healthy, or None when it is."""
        return self._health.problem(BLOCK_SECONDS)


def _run_signature() -> inspect.Signature:
    """``Worker.run`` as callers see it: the released arguments, then every other
    ``WorkerOptions`` field as a keyword (what ``**options`` takes), so tools that read
    the signature (the released CLI's own checks among them) see each option."""
    run = inspect.signature(_RUN)
    released = [p for p in run.parameters.values() if p.kind is not p.VAR_KEYWORD]
    names = {p.name for p in released}
    types = {item.name: item.type for item in dataclasses.fields(WorkerOptions)}
    beyond = [
        inspect.Parameter(
            spec.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=spec.command_line_default,
            annotation=types[spec.name],
        )
        for spec in option_specs()
        if spec.name not in names
    ]
    return run.replace(parameters=[*released, *beyond])


_RUN: Any = vars(Worker)["run"].__func__
_RUN.__signature__ = _run_signature()

"""``docket_lifespan``: open a docket for the life of an app, optionally with a worker."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import sys
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, cast

from starlette.requests import HTTPConnection

from docket import Docket, Priority, TaskHandle, Worker
from docket import WorkerOptions as CoreWorkerOptions
from docket.execution import TaskCall
from docket.integration import OPTION_NAMES

from ._context import (
    BRIDGED_ATTRIBUTE,
    SNAPSHOT_METADATA,
    AppBinding,
    RequestCapture,
    bind,
    binding_for,
    embedded_worker_disabled,
    get_current_connection,
    install_log_filter,
    set_current_connection,
    unbind,
)
from ._run import request_worker
from .bridge import bridge, needs_bridge

logger = logging.getLogger("docket_starlette")

Lifespan = Callable[[Any], contextlib.AbstractAsyncContextManager[Mapping[str, Any] | None]]

STATE_KEY = "docket"
WORKER_STATE_KEY = "docket_worker"


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkerOptions(CoreWorkerOptions):
    """The embedded worker: every ``docket.WorkerOptions`` field (``concurrency``,
    ``max_tasks``, ``fallback_task``...), plus what only an embedded worker needs.

    On shutdown the worker stops claiming and in-flight runs get ``grace_period`` to
    finish; after that they are cancelled and left unsettled, so another worker runs
    them again after the redelivery timeout. ``warn_multiprocess`` warns when every
    process of a multi-process server would start its own worker.
    """

    grace_period: timedelta = timedelta(seconds=10)
    warn_multiprocess: bool = True
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Deprecated: every ``Worker`` option is a field now; pass it as one. Names here
    must be ``docket.WorkerOptions`` fields; they are moved onto those fields (``extra``
    is left empty) and validated with them."""

    def __post_init__(self) -> None:
        if self.extra:
            unknown = sorted(set(self.extra) - OPTION_NAMES)
            if unknown:
                raise TypeError(
                    f"WorkerOptions(extra=...) names no Worker option: {', '.join(unknown)} "
                    f"(the options are {', '.join(sorted(OPTION_NAMES))})"
                )
            defaults = {item.name: item.default for item in dataclasses.fields(self)}
            for name, value in self.extra.items():
                given = getattr(self, name)
                if given != defaults[name] and given != value:
                    # Worker(**fields, **extra) refused such a pair as well.
                    raise TypeError(f"WorkerOptions got {name} both as a field and in extra")
                object.__setattr__(self, name, value)
            # Emptied, so that replace() does not put these values back over new ones.
            object.__setattr__(self, "extra", {})
        super().__post_init__()

    def make_worker(self, docket: Docket) -> Worker:
        return request_worker(docket, self)


# -- the app's docket: stamps the enqueuing request on bridged tasks ---------------------


def _stamp(docket: Docket, function: Any) -> dict[str, Any]:
    """The metadata a bridged task is added with: the current request's snapshot."""
    if not getattr(function, BRIDGED_ATTRIBUTE, False):
        return {}
    connection = get_current_connection()
    binding = binding_for(docket)
    if connection is None or binding is None:
        return {}
    return {SNAPSHOT_METADATA: binding.capture.snapshot(connection)}


class _StampingHandle(TaskHandle[Any, Any]):
    def call_metadata(self) -> dict[str, Any]:
        return _stamp(self.docket, self.fn)


class AppDocket(Docket):
    """The docket ``docket_lifespan`` opens: a ``Docket`` whose tasks may declare the
    app's FastAPI dependencies, decorated with ``@docket_starlette.task`` or not (a plain
    task that declares them is bridged when it is registered, with the same checks), and
    whose ``add``, ``replace`` and ``call`` attach the allowlisted snapshot of the
    current request to them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Each plain function and the bridged task made of it, so adding it again finds
        # the task registered already.
        self._bridged: dict[Any, Any] = {}
        super().__init__(*args, **kwargs)

    def _as_task(self, function: Any) -> Any:
        if isinstance(function, TaskHandle):
            function = function.fn
        if isinstance(function, str):
            return function
        bridged = self._bridged.get(function)
        if bridged is None and needs_bridge(function):
            bridged = self._bridged[function] = bridge(function)
        return function if bridged is None else bridged

    def register(self, function: Any, names: Sequence[str] | None = None) -> None:
        task = self._as_task(function)
        if names is None and self.tasks.get(getattr(task, "__name__", "")) is task:
            return
        super().register(task, names)

    def add(
        self,
        function: Any,
        when: Any = None,
        key: str | None = None,
        *,
        priority: Priority = Priority.NORMAL,
    ) -> Any:
        handle = super().add(self._as_task(function), when, key, priority=priority)
        return _StampingHandle(self, handle.fn, handle.task_name, when, key, "add", handle.priority)

    def replace(
        self, function: Any, when: Any, key: str, *, priority: Priority = Priority.NORMAL
    ) -> Any:
        handle = super().replace(self._as_task(function), when, key, priority=priority)
        return _StampingHandle(
            self, handle.fn, handle.task_name, when, key, "replace", handle.priority
        )

    def call(
        self,
        function: Any,
        when: Any = None,
        key: str | None = None,
        *,
        priority: Priority = Priority.NORMAL,
    ) -> Any:
        build = super().call(self._as_task(function), when, key, priority=priority)

        def stamped(*args: Any, **kwargs: Any) -> TaskCall:
            call = build(*args, **kwargs)
            call.metadata = {**call.metadata, **_stamp(self, call.function)}
            return call

        return stamped


# -- looking the docket up from a request ------------------------------------------------


def get_docket(connection: HTTPConnection) -> Docket:
    """The app's docket, for a Starlette endpoint: ``get_docket(request)``.

    Also makes ``request`` the one whose snapshot tasks enqueued now carry.
    """
    set_current_connection(connection)
    state = connection.scope.get("state") or {}
    docket = state.get(STATE_KEY)
    if docket is None:
        docket = getattr(connection.app.state, STATE_KEY, None)
    if docket is None:
        raise RuntimeError(
            "No docket on this app: add `lifespan=docket_lifespan(...)` to the app (or enter "
            "it from the app's own lifespan)"
        )
    return cast(Docket, docket)


# -- the lifespan ------------------------------------------------------------------------


def multiprocess_server() -> str | None:
    """Why this process looks like one of several server processes, if it does."""
    try:
        concurrency = int(os.environ.get("WEB_CONCURRENCY", "1"))
    except ValueError:
        concurrency = 1
    if concurrency > 1:
        return f"WEB_CONCURRENCY={concurrency}"
    argv = sys.argv
    for index, argument in enumerate(argv):
        value = None
        if argument == "--workers" and index + 1 < len(argv):
            value = argv[index + 1]
        elif argument.startswith("--workers="):
            value = argument.partition("=")[2]
        if value is not None and value.isdigit() and int(value) > 1:
            return f"--workers {value}"
    program = os.path.basename(argv[0]) if argv else ""
    if "gunicorn" in program or os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn"):
        return "gunicorn"
    if multiprocessing.parent_process() is not None and "--reload" not in argv:
        return "a server process started by another process"
    return None


def _warn_multiprocess() -> None:
    reason = multiprocess_server()
    if reason is None:
        return
    message = (
        f"docket_lifespan runs an embedded worker in every server process ({reason}): "
        "each process adds `concurrency` runs. Run a separate `docket worker --app ...` "
        "instead, or pass WorkerOptions(warn_multiprocess=False) if that is intended."
    )
    logger.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


async def _stop_worker(worker: Worker, task: asyncio.Task[None], grace: timedelta) -> None:
    worker.stop()
    done, _ = await asyncio.wait({task}, timeout=grace.total_seconds())
    if not done:
        logger.warning(
            "Embedded docket worker still busy after %.1fs; cancelling its runs",
            grace.total_seconds(),
        )
        worker.abort()
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def docket_lifespan(
    url: str | None = None,
    name: str = "docket",
    *,
    worker: WorkerOptions | None = None,
    tasks: Iterable[Callable[..., Any] | str] = (),
    capture: RequestCapture | None = None,
    lifespan: Lifespan | None = None,
    docket_options: Mapping[str, Any] | None = None,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[dict[str, Any]]]:
    """A lifespan (``Starlette(lifespan=...)``, ``FastAPI(lifespan=...)``) that opens a
    docket for the life of the app.

    The docket is yielded into the lifespan state as ``"docket"`` (``request.state.docket``)
    and set as ``app.state.docket``. ``tasks`` (functions or ``"pkg.mod:collection"``
    paths) are registered on it. ``worker=WorkerOptions(...)`` also runs an embedded
    worker (``"docket_worker"`` in the state) without signal handlers, drained on shutdown.

    ``lifespan`` is the app's own lifespan, entered first; its state is merged in and
    is what task runs see in ``request.state``. To enter the docket from inside your own
    lifespan instead: ``async with docket_lifespan(...)(app) as state: yield {**mine,
    **state}``.
    """
    options = dict(docket_options or {})
    task_list = list(tasks)

    @contextlib.asynccontextmanager
    async def lifespan_context(app: Any) -> AsyncIterator[dict[str, Any]]:
        async with contextlib.AsyncExitStack() as stack:
            state: dict[str, Any] = {}
            if lifespan is not None:
                own = await stack.enter_async_context(lifespan(app))
                if own:
                    state.update(own)
            docket = await stack.enter_async_context(AppDocket(name=name, url=url, **options))
            register_tasks(docket, task_list)
            state[STATE_KEY] = docket
            binding = AppBinding(app, state, capture or RequestCapture())
            bind(docket, binding)
            stack.callback(unbind, docket)
            app_state = getattr(app, "state", None)
            if app_state is not None:
                setattr(app_state, STATE_KEY, docket)
            if worker is not None and not embedded_worker_disabled.get():
                if worker.warn_multiprocess:
                    _warn_multiprocess()
                install_log_filter("docket.worker")
                embedded = worker.make_worker(docket)
                await stack.enter_async_context(embedded)
                task = asyncio.create_task(embedded.run_forever(), name="docket-embedded-worker")
                stack.push_async_callback(_stop_worker, embedded, task, worker.grace_period)
                state[WORKER_STATE_KEY] = embedded
                if app_state is not None:
                    setattr(app_state, WORKER_STATE_KEY, embedded)
            yield state

    return lifespan_context


def register_tasks(docket: Docket, tasks: Iterable[Callable[..., Any] | str]) -> None:
    for item in tasks:
        if isinstance(item, str):
            docket.register_collection(item)
        else:
            docket.register(item)


def combine_lifespans(
    *lifespans: Lifespan,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[dict[str, Any]]]:
    """Enter several lifespans in order (exit in reverse), merging their states.

    Task runs see the merged state when a ``docket_lifespan`` is among them.
    """

    @contextlib.asynccontextmanager
    async def combined(app: Any) -> AsyncIterator[dict[str, Any]]:
        async with contextlib.AsyncExitStack() as stack:
            merged: dict[str, Any] = {}
            for lifespan in lifespans:
                state = await stack.enter_async_context(lifespan(app))
                if state:
                    merged.update(state)
            docket = merged.get(STATE_KEY)
            binding = binding_for(docket) if docket is not None else None
            if binding is not None:
                binding.state = merged
            yield merged

    return combined

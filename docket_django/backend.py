"""A ``django.tasks`` backend that runs ``@django.tasks.task`` functions on docket workers.

    TASKS = {
        "default": {
            "BACKEND": "docket_django.backend.DocketBackend",
            "QUEUES": ["default", "reports"],          # Django's own queue validation
            "OPTIONS": {"DOCKET": "default"},         # the DOCKET alias for other queues
        }
    }

A queue whose name is a ``DOCKET`` alias runs on that docket; others run on
``OPTIONS["DOCKET"]`` (or ``OPTIONS["QUEUE_DOCKETS"][queue]``). Each enqueue writes a
small JSON result record (kept for the docket's ``RESULT_TTL``) and adds one generic
docket task, ``django_task``, keyed by the result id: arguments never go through pickle
on this path. Workers import the task by its module path, run it like a request (see
``docket_django.runtime``), send ``task_started``/``task_finished`` and update the
record, which ``get_result`` reads back.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from inspect import iscoroutinefunction
from traceback import format_exception
from typing import Any

from django.apps import apps
from django.core import checks
from django.tasks import Task, TaskContext, TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TaskError
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils.json import normalize_json
from django.utils.module_loading import import_string

from docket import CurrentDocket, CurrentWorker, Docket, Worker
from docket.uuid7 import uuid7_str

from .conf import DEFAULT_ALIAS, aliases, docket_settings
from .portal import get_portal
from .transactions import run_on_commit_or_now

logger = logging.getLogger("docket_django.backend")

RUNNER_NAME = "django_task"


def _record_key(docket: Docket, result_id: str) -> str:
    return f"{docket.prefix}:django-task:{result_id}"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _now() -> datetime:
    return datetime.now(UTC)


def _error(exception: BaseException) -> dict[str, str]:
    cls = type(exception)
    return {
        "exception_class_path": f"{cls.__module__}.{cls.__qualname__}",
        "traceback": "".join(format_exception(exception)),
    }


class DocketBackend(BaseTaskBackend):
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = False  # honest: docket runs by time, not by priority

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.docket_alias: str = self.options.get("DOCKET", DEFAULT_ALIAS)
        self.queue_dockets: dict[str, str] = dict(self.options.get("QUEUE_DOCKETS", {}))
        self.enqueue_on_commit: bool | None = self.options.get("ENQUEUE_ON_COMMIT")

    # -- routing ---------------------------------------------------------------------

    def alias_for_queue(self, queue_name: str) -> str:
        if queue_name in self.queue_dockets:
            return self.queue_dockets[queue_name]
        if queue_name in aliases():
            return queue_name
        return self.docket_alias

    def _candidate_aliases(self) -> list[str]:
        found = [self.docket_alias, *self.queue_dockets.values()]
        found += [queue for queue in self.queues if queue in aliases()]
        return list(dict.fromkeys(found))

    # -- enqueue ---------------------------------------------------------------------

    def _new_result(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        return TaskResult(
            task=task,
            id=uuid7_str(),
            status=TaskResultStatus.READY,
            enqueued_at=_now(),
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=list(args),
            kwargs=dict(kwargs),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )

    async def _write(self, docket_alias: str, result: TaskResult) -> None:
        docket = await get_portal().docket(docket_alias)
        config = docket_settings(docket_alias)
        task = result.task
        record = {
            "task": task.module_path,
            "backend": self.alias,
            "queue": task.queue_name,
            "priority": task.priority,
            "takes_context": task.takes_context,
            "run_after": _iso(task.run_after),
            "args": result.args,
            "kwargs": result.kwargs,
            "status": TaskResultStatus.READY.value,
            "enqueued_at": _iso(result.enqueued_at),
            "started_at": None,
            "finished_at": None,
            "last_attempted_at": None,
            "errors": [],
            "worker_ids": [],
            "return_value": None,
        }
        async with docket.redis() as redis:
            await redis.set(
                _record_key(docket, result.id),
                json.dumps(record),
                ex=max(int(config.result_ttl.total_seconds()), 1),
            )
        await docket.add(RUNNER_NAME, when=task.run_after, key=result.id)(result.id, self.alias)

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        result = self._new_result(task, args, kwargs)
        docket_alias = self.alias_for_queue(task.queue_name)
        config = docket_settings(docket_alias)
        backend_class = type(self)

        def write() -> None:
            get_portal().run(self._write(docket_alias, result))
            task_enqueued.send(backend_class, task_result=result)

        default = (
            config.enqueue_on_commit if self.enqueue_on_commit is None else (self.enqueue_on_commit)
        )
        run_on_commit_or_now(write, on_commit=None, default=default, using=config.database)
        return result

    async def aenqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        result = self._new_result(task, args, kwargs)
        await get_portal().arun(self._write(self.alias_for_queue(task.queue_name), result))
        await task_enqueued.asend(type(self), task_result=result)
        return result

    # -- results ---------------------------------------------------------------------

    async def _read(self, result_id: str) -> dict[str, Any] | None:
        portal = get_portal()
        for docket_alias in self._candidate_aliases():
            docket = await portal.docket(docket_alias)
            async with docket.redis() as redis:
                raw = await redis.get(_record_key(docket, result_id))
                if raw is None:
                    continue
                record: dict[str, Any] = json.loads(raw)
                if record["status"] == TaskResultStatus.READY.value:
                    # Cancelled through docket (admin, docket.cancel): a failure to Django.
                    state = await redis.hget(docket.keys.record(result_id), "state")
                    if state in (b"cancelled", "cancelled"):
                        record["status"] = TaskResultStatus.FAILED.value
            return record
        return None

    def _result_from_record(self, result_id: str, record: dict[str, Any]) -> TaskResult:
        try:
            task = import_string(record["task"])
        except ImportError as error:
            raise TaskResultDoesNotExist(
                f"Task {record['task']!r} of result {result_id} cannot be imported"
            ) from error
        if not isinstance(task, Task):
            raise TaskResultDoesNotExist(f"{record['task']!r} is not a django.tasks Task")
        return result_from_record(task, result_id, record, self.alias)

    def get_result(self, result_id: str) -> TaskResult:
        record = get_portal().run(self._read(result_id))
        if record is None:
            raise TaskResultDoesNotExist(result_id)
        return self._result_from_record(result_id, record)

    async def aget_result(self, result_id: str) -> TaskResult:
        record = await get_portal().arun(self._read(result_id))
        if record is None:
            raise TaskResultDoesNotExist(result_id)
        return self._result_from_record(result_id, record)

    # -- checks ----------------------------------------------------------------------

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        messages: list[checks.CheckMessage] = []
        if not apps.is_installed("docket_django"):
            messages.append(
                checks.Error(
                    "DocketBackend needs 'docket_django' in INSTALLED_APPS",
                    id="docket_django.E101",
                )
            )
        known = aliases()
        for docket_alias in self._candidate_aliases():
            if docket_alias not in known:
                messages.append(
                    checks.Error(
                        f"TASKS[{self.alias!r}] uses docket alias {docket_alias!r}, which is "
                        f"not in DOCKET (configured: {sorted(known)})",
                        id="docket_django.E102",
                    )
                )
        return messages


def result_from_record(
    task: Task, result_id: str, record: dict[str, Any], backend_alias: str
) -> TaskResult:
    if task.queue_name != record.get("queue", task.queue_name):
        task = task.using(queue_name=record["queue"])
    result = TaskResult(
        task=task,
        id=result_id,
        status=TaskResultStatus(record["status"]),
        enqueued_at=_parse(record.get("enqueued_at")),
        started_at=_parse(record.get("started_at")),
        finished_at=_parse(record.get("finished_at")),
        last_attempted_at=_parse(record.get("last_attempted_at")),
        args=record.get("args", []),
        kwargs=record.get("kwargs", {}),
        backend=backend_alias,
        errors=[TaskError(**error) for error in record.get("errors", [])],
        worker_ids=list(record.get("worker_ids", [])),
    )
    object.__setattr__(result, "_return_value", record.get("return_value"))
    return result


def _record_from_result(result: TaskResult, record: dict[str, Any]) -> dict[str, Any]:
    record = dict(record)
    record.update(
        status=result.status.value,
        started_at=_iso(result.started_at),
        finished_at=_iso(result.finished_at),
        last_attempted_at=_iso(result.last_attempted_at),
        errors=[
            {"exception_class_path": e.exception_class_path, "traceback": e.traceback}
            for e in result.errors
        ],
        worker_ids=list(result.worker_ids),
        return_value=result._return_value,
    )
    return record


class _Failed(Exception):
    """Carries a task's exception out of the run after the record is updated."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


async def run_django_task(
    result_id: str,
    backend_alias: str,
    docket: Docket = CurrentDocket(),
    worker: Worker = CurrentWorker(),
) -> Any:
    """The docket task behind every ``django.tasks`` enqueue."""
    from django.tasks import task_backends

    from .runtime import run_scoped

    key = _record_key(docket, result_id)
    async with docket.redis() as redis:
        raw = await redis.get(key)
        ttl = await redis.ttl(key)
    if raw is None:
        logger.warning("django.tasks result %s has no record (expired?); not running", result_id)
        return None
    record: dict[str, Any] = json.loads(raw)
    backend = task_backends[backend_alias]
    backend_class = type(backend)
    task = import_string(record["task"])
    if not isinstance(task, Task):
        raise InvalidTask(f"{record['task']!r} is not a django.tasks Task")
    now = _now()
    record["status"] = TaskResultStatus.RUNNING.value
    record["started_at"] = record.get("started_at") or _iso(now)
    record["last_attempted_at"] = _iso(now)
    record["worker_ids"] = [*record.get("worker_ids", []), worker.name]
    result = result_from_record(task, result_id, record, backend_alias)

    async def save() -> None:
        async with docket.redis() as redis:
            await redis.set(
                key, json.dumps(_record_from_result(result, record)), ex=max(int(ttl), 1)
            )

    await save()
    call_args = list(result.args)
    if task.takes_context:
        call_args.insert(0, TaskContext(task_result=result))

    def finished(error: BaseException | None, value: Any = None) -> None:
        object.__setattr__(result, "finished_at", _now())
        if error is None:
            object.__setattr__(result, "_return_value", normalize_json(value))
            object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
        else:
            result.errors.append(TaskError(**_error(error)))
            object.__setattr__(result, "status", TaskResultStatus.FAILED)
        task_finished.send(backend_class, task_result=result)

    if iscoroutinefunction(task.func):

        async def body_async() -> Any:
            from asgiref.sync import sync_to_async

            await sync_to_async(task_started.send, thread_sensitive=True)(
                backend_class, task_result=result
            )
            try:
                value = await task.func(*call_args, **result.kwargs)
            except Exception as error:
                await sync_to_async(finished, thread_sensitive=True)(error)
                raise _Failed(error) from error
            await sync_to_async(finished, thread_sensitive=True)(None, value)
            return value

        runner: Any = body_async
    else:

        def body_sync() -> Any:
            task_started.send(backend_class, task_result=result)
            try:
                value = task.func(*call_args, **result.kwargs)
            except Exception as error:
                # Sent inside the except block: Django's logging receiver reads exc_info.
                finished(error)
                raise _Failed(error) from error
            finished(None, value)
            return value

        runner = body_sync
    try:
        await run_scoped(runner)
    except _Failed as failed:
        await save()
        raise failed.error from None
    except BaseException as error:  # the scope itself failed, or a timeout/cancel
        if result.status == TaskResultStatus.RUNNING:
            result.errors.append(TaskError(**_error(error)))
            object.__setattr__(result, "status", TaskResultStatus.FAILED)
            object.__setattr__(result, "finished_at", _now())
        await save()
        raise
    await save()
    return result._return_value

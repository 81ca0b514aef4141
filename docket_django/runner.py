"""The docket task behind every ``django.tasks`` enqueue, as a worker runs it.

``DocketBackend`` (``docket_django.backend``) writes a JSON result record and adds a
docket run keyed by the result id, named after the Django task's module path
(``shop.jobs.write_receipt``); ``run_django_task`` is registered under each such name
(and under ``django_task``, the one name earlier releases used for all of them). It
reads the record, imports the task by its module path, runs it like a request (see
``docket_django.runtime``) with Django's task signals, and writes the outcome back.
It sits below the backend and the registry, which both need it.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from inspect import iscoroutinefunction
from traceback import format_exception
from typing import Any

from asgiref.sync import sync_to_async
from django.tasks import Task, TaskContext, TaskResult, TaskResultStatus, task_backends
from django.tasks.base import TaskError
from django.tasks.exceptions import InvalidTask
from django.tasks.signals import task_finished, task_started
from django.utils.json import normalize_json
from django.utils.module_loading import import_string

from docket import CurrentDocket, CurrentWorker, Docket, Worker

from .runtime import run_scoped

# The runner was part of the backend module: keep its log records where they were.
logger = logging.getLogger("docket_django.backend")

RUNNER_NAME = "django_task"
"""The name every ``django.tasks`` run had before each got its own: still registered,
so runs queued by an earlier release are not lost."""


def task_name(task: Task[..., Any]) -> str:
    """The docket task name a ``django.tasks`` task runs under: its module path."""
    return task.module_path


def runs_on_docket(task: object) -> bool:
    """Whether ``task`` is a ``django.tasks`` task whose backend is a ``DocketBackend``
    (told by its ``docket_aliases``: the backend module sits above this one)."""
    if not isinstance(task, Task):
        return False
    try:
        backend = task_backends[task.backend]
    except Exception:  # an unknown or broken backend alias: not ours to run
        return False
    return callable(getattr(backend, "docket_aliases", None))


def record_key(docket: Docket, result_id: str) -> str:
    return f"{docket.prefix}:django-task:{result_id}"


def to_iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def utc_now() -> datetime:
    return datetime.now(UTC)


def _error(exception: BaseException) -> dict[str, str]:
    cls = type(exception)
    return {
        "exception_class_path": f"{cls.__module__}.{cls.__qualname__}",
        "traceback": "".join(format_exception(exception)),
    }


def result_from_record[**P, R](
    task: Task[P, R], result_id: str, record: dict[str, Any], backend_alias: str
) -> TaskResult[P, R]:
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


def _record_from_result(result: TaskResult[..., Any], record: dict[str, Any]) -> dict[str, Any]:
    record = dict(record)
    record.update(
        status=result.status.value,
        started_at=to_iso(result.started_at),
        finished_at=to_iso(result.finished_at),
        last_attempted_at=to_iso(result.last_attempted_at),
        errors=[
            {"exception_class_path": e.exception_class_path, "traceback": e.traceback}
            for e in result.errors
        ],
        worker_ids=list(result.worker_ids),
        return_value=_stored_return_value(result),
    )
    return record


def _stored_return_value(result: TaskResult[..., Any]) -> Any:
    """What ``return_value`` gives once the run has succeeded (None until then)."""
    # A field of Django's TaskResult (its own backends set it the same way) that
    # django-stubs leaves out.
    return result._return_value  # type: ignore[attr-defined]


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
    key = record_key(docket, result_id)
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
    now = utc_now()
    record["status"] = TaskResultStatus.RUNNING.value
    record["started_at"] = record.get("started_at") or to_iso(now)
    record["last_attempted_at"] = to_iso(now)
    record["worker_ids"] = [*record.get("worker_ids", []), worker.name]
    result: TaskResult[..., Any] = result_from_record(task, result_id, record, backend_alias)

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
        object.__setattr__(result, "finished_at", utc_now())
        if error is None:
            object.__setattr__(result, "_return_value", normalize_json(value))
            object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
        else:
            result.errors.append(TaskError(**_error(error)))
            object.__setattr__(result, "status", TaskResultStatus.FAILED)
        task_finished.send(backend_class, task_result=result)

    if iscoroutinefunction(task.func):

        async def body_async() -> Any:
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
            object.__setattr__(result, "finished_at", utc_now())
        await save()
        raise
    await save()
    return result.return_value

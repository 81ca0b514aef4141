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
small JSON result record (kept for the docket's ``RESULT_TTL``) and adds a docket
task named after the Django task's module path (``shop.jobs.write_receipt``), keyed by
the result id, so logs, metrics, strikes and snapshots tell tasks apart (earlier
releases named every run ``django_task``, which workers still run): arguments never go
through pickle on this path. Workers import the task by its module path, run it like a request (see
``docket_django.runtime``), send ``task_started``/``task_finished`` and update the
record, which ``get_result`` reads back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from django.apps import apps
from django.core import checks
from django.tasks import Task, TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.exceptions import TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from django.utils.module_loading import import_string

from docket import Priority
from docket.integration import uuid7_str

from .conf import DEFAULT_ALIAS, aliases, docket_settings
from .portal import get_portal
from .runner import record_key, result_from_record, run_django_task, task_name, to_iso, utc_now
from .transactions import run_on_commit_or_now


def docket_priority(priority: int) -> Priority:
    """The docket level of a ``django.tasks`` priority (-100..100, 0 the default): 1..100
    HIGH, 0 NORMAL, -100..-1 LOW (docs/priorities.md)."""
    if priority > 0:
        return Priority.HIGH
    if priority < 0:
        return Priority.LOW
    return Priority.NORMAL


class DocketBackend(BaseTaskBackend):
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True  # django's -100..100 onto docket's levels: docket_priority

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

    def docket_aliases(self) -> list[str]:
        """Every ``DOCKET`` alias this backend can route a task to."""
        return self._candidate_aliases()

    def _candidate_aliases(self) -> list[str]:
        found = [self.docket_alias, *self.queue_dockets.values()]
        found += [queue for queue in self.queues if queue in aliases()]
        return list(dict.fromkeys(found))

    # -- enqueue ---------------------------------------------------------------------

    def _new_result[**P, R](
        self, task: Task[P, R], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> TaskResult[P, R]:
        self.validate_task(task)
        return TaskResult(
            task=task,
            id=uuid7_str(),
            status=TaskResultStatus.READY,
            enqueued_at=utc_now(),
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=list(args),
            kwargs=dict(kwargs),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )

    async def _write(self, docket_alias: str, result: TaskResult[..., Any]) -> None:
        docket = await get_portal().docket(docket_alias)
        config = docket_settings(docket_alias)
        task = result.task
        record = {
            "task": task.module_path,
            "backend": self.alias,
            "queue": task.queue_name,
            "priority": task.priority,
            "takes_context": task.takes_context,
            "run_after": to_iso(task.run_after),
            "args": result.args,
            "kwargs": result.kwargs,
            "status": TaskResultStatus.READY.value,
            "enqueued_at": to_iso(result.enqueued_at),
            "started_at": None,
            "finished_at": None,
            "last_attempted_at": None,
            "errors": [],
            "worker_ids": [],
            "return_value": None,
        }
        async with docket.redis() as redis:
            await redis.set(
                record_key(docket, result.id),
                json.dumps(record),
                ex=max(int(config.result_ttl.total_seconds()), 1),
            )
        name = task_name(task)
        if dict.get(docket.tasks, name) is not run_django_task:
            docket.register(run_django_task, names=[name])
        await docket.add(
            name, when=task.run_after, key=result.id, priority=docket_priority(task.priority)
        )(result.id, self.alias)

    def enqueue[**P, R](
        self, task: Task[P, R], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> TaskResult[P, R]:
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

    async def aenqueue[**P, R](
        self, task: Task[P, R], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> TaskResult[P, R]:
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
                raw = await redis.get(record_key(docket, result_id))
                if raw is None:
                    continue
                record: dict[str, Any] = json.loads(raw)
                if record["status"] == TaskResultStatus.READY.value:
                    # Cancelled through docket (admin, docket.cancel): a failure to Django.
                    state = await redis.hget(docket.keys_for(result_id).record(result_id), "state")
                    if state in (b"cancelled", "cancelled"):
                        record["status"] = TaskResultStatus.FAILED.value
            return record
        return None

    def _result_from_record(self, result_id: str, record: dict[str, Any]) -> TaskResult[..., Any]:
        try:
            task = import_string(record["task"])
        except ImportError as error:
            raise TaskResultDoesNotExist(
                f"Task {record['task']!r} of result {result_id} cannot be imported"
            ) from error
        if not isinstance(task, Task):
            raise TaskResultDoesNotExist(f"{record['task']!r} is not a django.tasks Task")
        return result_from_record(task, result_id, record, self.alias)

    def get_result(self, result_id: str) -> TaskResult[..., Any]:
        record = get_portal().run(self._read(result_id))
        if record is None:
            raise TaskResultDoesNotExist(result_id)
        return self._result_from_record(result_id, record)

    async def aget_result(self, result_id: str) -> TaskResult[..., Any]:
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

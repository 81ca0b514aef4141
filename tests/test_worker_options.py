"""The worker's options are written once (``WorkerOptions``) and every entry point takes
all of them: ``Worker``, ``Worker.run`` and ``docket worker``. (Django's and Starlette's
entry points are held to the same fields in their own test modules.)"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import re
from datetime import timedelta

import pytest
from _helpers import fast_worker, wait_for
from typer.testing import CliRunner

from docket import Docket, Worker, WorkerOptions
from docket._worker_options import option_specs
from docket.cli import app, worker

FIELDS = [item.name for item in dataclasses.fields(WorkerOptions)]


def test_worker_takes_exactly_the_options_with_their_defaults() -> None:
    parameters = dict(inspect.signature(Worker.__init__).parameters)
    del parameters["self"], parameters["docket"]
    assert list(parameters) == FIELDS
    for item in dataclasses.fields(WorkerOptions):
        assert parameters[item.name].default == item.default, item.name


def test_a_worker_keeps_its_validated_options() -> None:
    docket = Docket(name="options", url="memory://")
    worker = Worker(docket, concurrency=3, max_deliveries=2, max_tasks=7)
    assert worker.options == WorkerOptions(concurrency=3, max_deliveries=2, max_tasks=7)
    assert (worker.concurrency, worker.max_deliveries, worker.max_tasks) == (3, 2, 7)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"concurrency": 0}, "concurrency must be a whole number of at least 1, got 0"),
        ({"message_batch": -1}, "message_batch must be a whole number of at least 1"),
        ({"max_tasks": 0}, "max_tasks must be a whole number of at least 1"),
        ({"max_deliveries": True}, "max_deliveries must be a whole number"),
        ({"redelivery_timeout": timedelta(0)}, "redelivery_timeout must be positive"),
        ({"reconnection_delay": timedelta(seconds=-1)}, "reconnection_delay must not be negative"),
    ],
)
def test_bad_options_are_refused_by_name(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WorkerOptions(**changes)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        Worker(Docket(name="options", url="memory://"), **changes)  # type: ignore[arg-type]


def test_durations_may_be_given_in_seconds() -> None:
    assert WorkerOptions(reconnection_delay=2).reconnection_delay == timedelta(seconds=2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="scheduling_resolution must be a timedelta"):
        WorkerOptions(scheduling_resolution="soon")  # type: ignore[arg-type]


def test_imported_reads_module_paths() -> None:
    options = WorkerOptions.imported(fallback_task="docket.tasks:trace", dependencies="")
    from docket.tasks import trace

    assert options.fallback_task is trace
    assert options.dependencies is None
    with pytest.raises(ValueError, match=re.escape("fallback task 'docket.tasks:nope'")):
        WorkerOptions.imported(fallback_task="docket.tasks:nope")
    with pytest.raises(TypeError, match="fallback_task must be a function"):
        WorkerOptions(fallback_task="docket.tasks:trace")  # type: ignore[arg-type]


def test_the_worker_command_has_an_option_for_every_field() -> None:
    command = inspect.signature(worker).parameters
    for spec in option_specs():
        assert spec.name in command, spec.name
        assert command[spec.name].default == spec.command_line_default, spec.name
    result = CliRunner().invoke(app, ["worker", "--help"], env={"COLUMNS": "200"})
    for spec in option_specs():
        assert spec.flag in result.output, spec.flag


def test_worker_run_takes_options_beyond_the_released_arguments() -> None:
    parameters = inspect.signature(Worker.run).parameters
    assert [name for name in FIELDS if name not in parameters] == []
    keywords = [p.name for p in parameters.values() if p.kind is p.KEYWORD_ONLY]
    assert keywords == ["max_deliveries", "max_tasks"]
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_taks'"):
        asyncio.run(Worker.run(url="memory://", max_taks=1))


async def test_max_tasks_stops_the_worker_after_that_many_runs() -> None:
    runs: list[int] = []

    async def job(n: int) -> None:
        runs.append(n)

    async with Docket(name="recycle", url="memory://") as docket:
        docket.register(job)
        for n in range(10):
            await docket.add(job)(n)
        worker = fast_worker(docket, max_tasks=3, concurrency=2, message_batch=100)
        async with worker:
            # run_forever returns by itself: the worker stops claiming at its third run.
            await asyncio.wait_for(worker.run_forever(), 10)
        assert len(runs) == 3
        assert worker.tasks_started == 3
        snapshot = await docket.snapshot()
        assert snapshot.total_tasks == 7


async def test_max_tasks_through_worker_run(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Worker.run opens its own docket, so the tasks come from a collection it imports.
    async with Docket(name="recycle-run", url="memory://") as docket:
        from docket.tasks import trace

        docket.register(trace)
        for n in range(4):
            await docket.add(trace)(f"run {n}")

        run = asyncio.create_task(
            Worker.run(
                docket_name="recycle-run",
                url="memory://",
                minimum_check_interval=timedelta(milliseconds=5),
                max_tasks=2,
            )
        )
        await asyncio.wait_for(run, 10)
        await wait_for(lambda: run.done())
        snapshot = await docket.snapshot()
        assert snapshot.total_tasks == 2


def test_every_option_is_documented() -> None:
    from pathlib import Path

    guide = (Path(__file__).parent.parent / "docs" / "getting-started.md").read_text()
    for name in FIELDS:
        assert f"| `{name}` |" in guide, name

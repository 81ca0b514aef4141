"""Starlette's worker entry points take the one definition of the worker's options,
``docket.WorkerOptions``: the embedded worker (``docket_lifespan(worker=...)``), the
separate one (``run_with_app``, ``docket worker --app``) and ``run_tasks``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

import docket
import docket_starlette as ds
from docket import Depends, Docket, Worker
from docket._worker_options import option_specs
from docket_starlette.testing import run_tasks
from docket_starlette.worker import import_app

CORE_FIELDS = {item.name: item for item in dataclasses.fields(docket.WorkerOptions)}
runs: list[int] = []


async def job(n: int) -> None:
    runs.append(n)


async def fallback(*args: Any, **kwargs: Any) -> None:
    """Stands in for the fallback task (only its identity matters)."""


async def lifespan_value() -> str:
    return "value"


@pytest.fixture(autouse=True)
def _clear() -> None:
    runs.clear()


def memory_url() -> str:
    return f"memory://{uuid.uuid4()}"


def other_than_defaults() -> dict[str, Any]:
    """A value for every core option that differs from its default."""
    values: dict[str, Any] = {}
    for spec in option_specs():
        if spec.kind == "count":
            values[spec.name] = (spec.default or 1) + 6
        elif spec.kind == "duration":
            values[spec.name] = spec.default + timedelta(milliseconds=7)
        elif spec.kind == "flag":
            values[spec.name] = not spec.default
        elif spec.kind == "text":
            values[spec.name] = f"{spec.name}-given"
    values["fallback_task"] = fallback
    values["dependencies"] = {"mine": Depends(lifespan_value)}
    assert set(values) == set(CORE_FIELDS), "a new option needs a value here"
    return values


def test_every_core_option_is_a_field_with_the_same_default() -> None:
    fields = {item.name: item for item in dataclasses.fields(ds.WorkerOptions)}
    for name, core in CORE_FIELDS.items():
        assert name in fields, name
        assert fields[name].default == core.default, name
    assert set(fields) - set(CORE_FIELDS) == {"grace_period", "warn_multiprocess", "extra"}
    assert issubclass(ds.WorkerOptions, docket.WorkerOptions)
    # Validation is the core's, by name.
    with pytest.raises(ValueError, match="max_deliveries must be a whole number of at least 1"):
        ds.WorkerOptions(max_deliveries=0)


def test_every_option_reaches_the_embedded_worker() -> None:
    values = other_than_defaults()
    options = ds.WorkerOptions(**values, warn_multiprocess=False)
    app = Starlette(lifespan=ds.docket_lifespan(url=memory_url(), worker=options))
    with TestClient(app) as client:
        embedded = client.app.state.docket_worker
        assert isinstance(embedded, Worker)
        for name, value in values.items():
            if name != "dependencies":
                assert getattr(embedded.options, name) == value, name
        assert embedded.name == values["name"]
        # The app's dependencies run inside the adapter's request context.
        dependencies = embedded.options.dependencies
        assert isinstance(dependencies, dict)
        assert list(dependencies) == ["docket_starlette_request_context", "mine"]
        assert isinstance(dependencies["docket_starlette_request_context"], ds.RequestContext)


def test_the_embedded_worker_recycles_after_max_tasks() -> None:
    app = Starlette(
        lifespan=ds.docket_lifespan(
            url=memory_url(),
            tasks=[job],
            worker=ds.WorkerOptions(
                max_tasks=2, concurrency=1, minimum_check_interval=timedelta(milliseconds=5)
            ),
        )
    )
    with TestClient(app) as client:
        for n in range(4):
            client.portal.call(lambda n=n: app.state.docket.add(job)(n))
        embedded = app.state.docket_worker
        for _ in range(500):
            if embedded.tasks_started >= 2 and len(runs) >= 2:
                break
            client.portal.call(asyncio.sleep, 0.01)
        client.portal.call(asyncio.sleep, 0.1)
        assert runs == [0, 1]
        assert client.portal.call(app.state.docket.snapshot).total_tasks == 2


def test_extra_is_folded_onto_the_fields() -> None:
    options = ds.WorkerOptions(extra={"max_tasks": 3, "concurrency": 4})
    assert (options.max_tasks, options.concurrency) == (3, 4)
    assert options == ds.WorkerOptions(max_tasks=3, concurrency=4)
    assert options.extra == {}
    # Nothing of extra is left to undo a later change.
    assert options.replace(concurrency=2).concurrency == 2
    with pytest.raises(ValueError, match="max_tasks must be a whole number"):
        ds.WorkerOptions(extra={"max_tasks": 0})


def test_unknown_extra_names_are_refused_by_name() -> None:
    with pytest.raises(TypeError, match="names no Worker option: grace_period, max_taks"):
        ds.WorkerOptions(extra={"max_taks": 3, "grace_period": 1, "concurrency": 2})
    with pytest.raises(TypeError, match="got concurrency both as a field and in extra"):
        ds.WorkerOptions(concurrency=3, extra={"concurrency": 4})


APP_URL = memory_url()
started: list[str] = []


@contextlib.asynccontextmanager
async def app_lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    started.append("lifespan")
    async with ds.docket_lifespan(url=APP_URL, name="recycled", tasks=[job])(app) as state:
        yield state


app = Starlette(lifespan=app_lifespan)
"""The app ``run_with_app`` is pointed at by path, as ``docket worker --app`` does."""


async def test_run_with_app_recycles_after_max_tasks() -> None:
    async with Docket(name="recycled", url=APP_URL) as producer:
        producer.register(job)
        for n in range(5):
            await producer.add(job)(n)
        # run_with_app returns by itself once it started its third run.
        await asyncio.wait_for(
            ds.run_with_app(
                f"{__name__}:app",
                max_tasks=3,
                concurrency=1,
                minimum_check_interval=timedelta(milliseconds=5),
                handle_signals=False,
            ),
            10,
        )
        assert runs == [0, 1, 2]
        assert (await producer.snapshot()).total_tasks == 2


async def test_run_with_app_installs_signal_handlers_only_when_asked() -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen: dict[bool, Any] = {}

    async def look(handle_signals: bool) -> None:
        async def peek(n: int) -> None:
            seen[handle_signals] = signal.getsignal(signal.SIGTERM)

        probe = Starlette(lifespan=ds.docket_lifespan(url=memory_url(), tasks=[peek]))
        async with probe.router.lifespan_context(probe):
            await probe.state.docket.add(peek)(1)
        # The lifespan closed; run_with_app enters it again, on the same memory docket.
        await asyncio.wait_for(
            ds.run_with_app(
                probe,
                url=probe.state.docket.url,
                docket_name=probe.state.docket.name,
                max_tasks=1,
                minimum_check_interval=timedelta(milliseconds=5),
                handle_signals=handle_signals,
            ),
            10,
        )

    await look(False)
    assert seen[False] is before
    await look(True)
    assert seen[True] is not before
    assert signal.getsignal(signal.SIGTERM) is before


async def test_bad_options_are_refused_before_the_app_starts() -> None:
    started.clear()
    with pytest.raises(ValueError, match="concurrency must be a whole number of at least 1"):
        await ds.run_with_app(app, concurrency=0, handle_signals=False)
    with pytest.raises(TypeError, match="max_taks"):
        await ds.run_with_app(app, max_taks=1, handle_signals=False)
    with pytest.raises(ValueError, match=re.escape("fallback task 'docket.tasks:nope'")):
        await ds.run_with_app(app, fallback_task="docket.tasks:nope", handle_signals=False)
    assert started == []


def test_import_app_explains_bad_paths() -> None:
    assert import_app(f"{__name__}:app") is app
    with pytest.raises(ValueError, match=re.escape("must look like 'package.module:name'")):
        import_app("no_colon_here")
    with pytest.raises(ValueError, match=re.escape(f"module {__name__!r} has no 'nope'")):
        import_app(f"{__name__}:nope")


def test_run_tasks_takes_worker_dependencies() -> None:
    async def around_each_run() -> None:
        runs.append(-1)

    probe = Starlette(lifespan=ds.docket_lifespan(url=memory_url(), tasks=[job]))
    with TestClient(probe) as client:
        client.portal.call(lambda: probe.state.docket.add(job)(7))
        run_tasks(client, dependencies=[Depends(around_each_run)])
    assert runs == [-1, 7]


def cli_app() -> Starlette:
    """``docket worker --app ...:cli_app()``: the app a separate worker process runs."""
    return Starlette(
        lifespan=ds.docket_lifespan(
            url=os.environ["STARLETTE_TEST_URL"],
            name=os.environ["STARLETTE_TEST_NAME"],
            tasks=[job],
        )
    )


async def test_docket_worker_app_recycles_after_max_tasks(redis_url: str) -> None:
    name = f"recycled-{uuid.uuid4().hex[:8]}"
    async with Docket(name=name, url=redis_url) as producer:
        producer.register(job)
        for n in range(5):
            await producer.add(job)(n)
        tests = str(Path(__file__).resolve().parent)
        env = {
            **os.environ,
            "STARLETTE_TEST_URL": redis_url,
            "STARLETTE_TEST_NAME": name,
            "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]),
        }
        env.pop("DOCKET_URL", None)
        env.pop("DOCKET_NAME", None)
        command = f"worker --app {Path(__file__).stem}:cli_app() --max-tasks 2 --concurrency 1"
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "docket",
            *command.split(),
            "--minimum-check-interval=0.01",
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(worker.communicate(), 60)
        assert worker.returncode == 0, output.decode()
        assert (await producer.snapshot()).total_tasks == 3, output.decode()

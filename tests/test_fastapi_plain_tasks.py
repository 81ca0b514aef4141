"""A task that is not decorated with ``@docket_starlette.task`` but declares the app's
FastAPI dependencies: bridged when registered on the app's docket, so it runs with them
in the app's process and under ``docket worker --app``; run by a worker that is not
bound to the app, it fails naming the task and the parameter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from docket import Docket, ExecutionState, Worker

APP = """
import json, os
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from docket_starlette import docket_lifespan
from docket_starlette.fastapi import DocketDep


async def get_db(request: Request):
    log = request.state.log
    log.append("db open")
    try:
        yield "db:" + request.state.name
    finally:
        log.append("db close")


async def record(note: str, db: Annotated[str, Depends(get_db)], request: Request) -> None:
    # A plain function: no @docket_starlette.task.
    with open(os.environ["PLAIN_OUT"], "a") as out:
        out.write(json.dumps([note, db, request.headers.get("x-request-id")]) + "\\n")


@asynccontextmanager
async def state(app):
    yield {"name": "shop", "log": []}


app = FastAPI(
    lifespan=docket_lifespan(name=os.environ["PLAIN_DOCKET"], lifespan=state, tasks=[record])
)


@app.post("/notes/{note}")
async def add(note: str, docket: DocketDep) -> dict:
    execution = await docket.add(record)(note)
    return {"key": execution.key}
"""


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    name = f"plain_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(APP))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PLAIN_OUT", str(tmp_path / "out.jsonl"))
    monkeypatch.setenv("PLAIN_DOCKET", f"plain-{uuid.uuid4().hex[:8]}")
    return tmp_path / f"{name}.py"


def _runs(out: Path) -> list[list[str]]:
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def test_a_plain_task_runs_with_the_apps_dependencies_under_docket_worker_app(
    app_module: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKET_URL", redis_url)
    module = __import__(app_module.stem)
    with TestClient(module.app) as client:
        response = client.post("/notes/hello", headers={"x-request-id": "plain-42"})
        assert response.status_code == 200, response.text
    out = app_module.parent / "out.jsonl"
    assert _runs(out) == []  # no embedded worker: it waits for the separate one
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(app_module.parent), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "docket",
            "worker",
            "--app",
            f"{app_module.stem}:app",
            "--until-finished",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=app_module.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert _runs(out) == [["hello", "db:shop", "plain-42"]], done.stdout + done.stderr


async def test_a_plain_task_run_where_no_app_is_bound_names_the_task_and_parameter(
    app_module: Path, redis_url: str
) -> None:
    module = __import__(app_module.stem)
    async with Docket(name=f"unbound-{uuid.uuid4().hex[:8]}", url=redis_url) as docket:
        docket.register(module.record)
        execution = await docket.add(module.record)("lost")
        async with Worker(docket) as worker:
            await worker.run_until_finished()
        await execution.sync()
    assert execution.state is ExecutionState.FAILED
    assert execution.error is not None
    assert "Task 'record' was run without a value for its parameter(s) 'db', 'request'" in (
        execution.error
    )
    assert "docket worker --app" in execution.error
    assert "missing 2 required" not in execution.error

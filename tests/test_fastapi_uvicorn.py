"""End to end: the example app under a real uvicorn, a separate worker process, Redis."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def processes(redis_url: str, tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    port = free_port()
    database = tmp_path / "notes.db"
    worker_log = tmp_path / "worker.log"
    env = {
        **os.environ,
        "DOCKET_URL": redis_url,
        "DOCKET_NAME": f"notes-{uuid.uuid4().hex[:8]}",
        "DOCKET_EMBEDDED": "0",
        "NOTES_DB": str(database),
        "PYTHONPATH": os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")]),
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "fastapi_app.main:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=EXAMPLES,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with worker_log.open("w") as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "docket",
                "worker",
                "--app",
                "fastapi_app.main:app",
                "--concurrency",
                "2",
            ],
            cwd=EXAMPLES,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{base}/notes/0", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("uvicorn did not start") from None
                time.sleep(0.1)
        yield base, database, worker_log
    finally:
        for process in (server, worker):
            process.terminate()
        for process in (server, worker):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_uvicorn_and_separate_worker(processes: tuple[str, Path, Path]) -> None:
    base, database, worker_log = processes
    response = httpx.post(
        f"{base}/notes",
        json={"text": "the quick brown fox jumps over"},
        headers={"accept-language": "de", "x-request-id": "e2e-42", "authorization": "x"},
        timeout=5,
    )
    assert response.status_code == 202, response.text
    assert response.headers["x-request-id"] == "e2e-42"
    note_id = response.json()["id"]
    deadline = time.monotonic() + 20
    note: dict[str, object] = {}
    while time.monotonic() < deadline:
        note = httpx.get(f"{base}/notes/{note_id}", timeout=5).json()
        if note.get("summary"):
            break
        time.sleep(0.1)
    assert note["summary"] == "THE QUICK BROWN FOX JUMPS", worker_log.read_text()
    assert note["language"] == "de"
    assert note["request_id"] == "e2e-42"
    # The task's get_db session was closed after the run, in the worker process.
    for _ in range(50):
        log = worker_log.read_text()
        if "db session closed" in log:
            break
        time.sleep(0.1)
    lines = [
        line.split(" INFO ", 1)[-1].strip() for line in log.splitlines() if "fastapi_app" in line
    ]
    assert lines[-3:] == [
        "fastapi_app.db db session opened",
        f"fastapi_app.tasks summarized note {note_id}",
        "fastapi_app.db db session closed",
    ]
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM notes").fetchone()[0] == 1

"""The runnable examples do what their docs say, on memory:// with no Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "DOCKET_URL"}
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    return output


def test_quickstart_runs_the_perpetual_task_and_both_one_offs() -> None:
    output = run_example("quickstart.py")
    status_lines = [line for line in output.splitlines() if "Service status" in line]
    assert len(status_lines) == 3
    for line in status_lines:
        assert "service_id=main-service" in line
        assert "status=" in line
    ran = output.split("What ran:", 1)[1]
    assert ran.count("monitor_service(main-service)") == 3
    assert "send_welcome_email" in ran
    assert "send_reminder" in ran


def test_concurrency_control_never_exceeds_the_limit() -> None:
    output = run_example("concurrency_control.py")
    peaks = output.split("Most syncs running at once, per customer (limit 2):", 1)[1]
    counts = [int(line.split()[-1]) for line in peaks.strip().splitlines()[:3]]
    assert counts == [2, 2, 2]


def test_find_and_flood_processes_each_order_once() -> None:
    output = run_example("find_and_flood.py")
    assert "28 orders arrived, 28 processed (each exactly once), 0 still open" in output

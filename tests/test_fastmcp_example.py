"""FastMCP's background tasks run on our docket: examples/fastmcp_background_task.py.

Skipped unless FastMCP and its tasks extension are installed
(``pip install 'fastmcp[tasks]'``).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastmcp")
pytest.importorskip("fastmcp_tasks")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fastmcp_background_task.py"


def run_example(cwd: Path) -> str:
    # FastMCP picks its docket backend from FASTMCP_DOCKET_* (and a .env in the working
    # directory); drop both so the example runs on memory:// as documented.
    env = {
        k: v for k, v in os.environ.items() if k != "DOCKET_URL" and not k.startswith("FASTMCP_")
    }
    completed = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        cwd=cwd,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    return output


def line_after(output: str, prefix: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, output
    return lines[0].removeprefix(prefix)


def test_a_task_tool_runs_in_the_background_on_docket_and_returns_its_result(
    tmp_path: Path,
) -> None:
    output = run_example(tmp_path)

    task_id = line_after(output, "started task ").strip()
    assert task_id

    # Reported by the tool from inside the worker and read back from the docket
    # execution's progress while the call was still running.
    assert line_after(output, "status while running: ") == "working (waiting for the go-ahead)"
    assert line_after(output, "status at the end: ") == "completed"

    # The task id reaches the tool only through the docket execution's key, and the
    # value reaches the client only through the execution's stored result.
    result = ast.literal_eval(line_after(output, "result: "))
    assert result == {"words": 9, "task_id": task_id}
    assert "OK: the tool ran as a docket background task" in output

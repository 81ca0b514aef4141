"""The benchmark harness checks what it measures: every task ran exactly once.

These run the harness's own code (benchmarks/) on tiny workloads; they assert what the
harness reports about correctness and how it reads ratios, never how fast anything is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests._redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ROOT / "benchmarks" / "systems"
sys.path.insert(0, str(SYSTEMS))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench  # noqa: E402
import bench_common  # noqa: E402


def _records(tmp_path: Path, ids: list[int]) -> bench_common.Records:
    records = bench_common.Records(tmp_path / "run.records")
    with open(records.path, "a") as handle:
        for i in ids:
            handle.write(f"{i} 1.0 1.5 0.0\n")
    records.poll()
    return records


def test_the_check_passes_only_when_each_task_ran_exactly_once(tmp_path: Path) -> None:
    assert bench_common.check(_records(tmp_path, [0, 1, 2]), range(3))["ok"] is True


def test_the_check_counts_missing_duplicate_and_unexpected_runs(tmp_path: Path) -> None:
    result = bench_common.check(_records(tmp_path, [0, 0, 0, 2, 7]), range(4))
    assert result["ok"] is False
    assert (result["missing"], result["duplicates"], result["unexpected"]) == (2, 2, 1)


def test_the_warm_up_task_is_not_counted(tmp_path: Path) -> None:
    records = _records(tmp_path, [bench_common.WARMUP_ID, 0, 1])
    assert bench_common.check(records, range(2))["ok"] is True


def test_records_read_a_line_written_in_two_parts(tmp_path: Path) -> None:
    records = bench_common.Records(tmp_path / "run.records")
    with open(records.path, "ab") as handle:
        handle.write(b"5 1.0 1")
    assert records.poll() == 0
    with open(records.path, "ab") as handle:
        handle.write(b".5 0.0\n")
    assert records.poll() == 1 and records.rows[0].end == 1.5


def _run_adapter(url: str, workload: str, tmp_path: Path, *extra: str) -> dict[str, Any]:
    env = dict(os.environ, BENCH_SYSTEM="ours", BENCH_URL=url)
    done = subprocess.run(
        [sys.executable, str(SYSTEMS / "docket_bench.py"), workload, "--url", url,
         "--workdir", str(tmp_path), *extra],
        capture_output=True, text=True, env=env, cwd=SYSTEMS, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert "error" not in result, result
    return result


@pytest.mark.parametrize(
    ("workload", "extra"),
    [
        ("enqueue_drain", ("--n", "60", "--concurrency", "7")),
        ("bulk_drain", ("--n", "60", "--concurrency", "3")),
        ("latency", ("--n", "15", "--rate", "200")),
        ("scheduled", ("--n", "15", "--concurrency", "5")),
        ("sleep", ("--n", "30", "--concurrency", "30")),
    ],
)
def test_the_docket_adapter_runs_each_workload_exactly_once(
    private_redis: RedisServer, tmp_path: Path, workload: str, extra: tuple[str, ...]
) -> None:
    result = _run_adapter(private_redis.url, workload, tmp_path, *extra)
    check = result["check"]
    assert check["ok"] is True, result
    assert check["ran"] == check["expected"] == int(extra[1])
    assert result["metrics"]


def test_ratios_read_as_how_many_times_better_ours_is() -> None:
    table = {
        ("ours", "bulk_drain", "drain_per_s"): 9000.0,
        ("pydocket", "bulk_drain", "drain_per_s"): 90.0,
        ("huey", "bulk_drain", "drain_per_s"): 3000.0,
        ("ours", "latency", "p50_ms"): 1.0,
        ("pydocket", "latency", "p50_ms"): 4.0,
        ("huey", "latency", "p50_ms"): 2.0,
    }
    rendered = bench.render_table(table, ["ours", "pydocket", "huey"], {})
    vs_pydocket = next(line for line in rendered.splitlines() if "vs pydocket" in line)
    vs_peer = next(line for line in rendered.splitlines() if "vs best peer" in line)
    assert "100.0×" in vs_pydocket and "4.0×" in vs_pydocket
    assert "3.0× (huey)" in vs_peer and "2.0× (huey)" in vs_peer


def test_a_baseline_run_gets_its_own_ratio_line() -> None:
    table = {
        ("ours", "bulk_drain", "drain_per_s"): 9000.0,
        ("baseline", "bulk_drain", "drain_per_s"): 10000.0,
        ("pydocket", "bulk_drain", "drain_per_s"): 90.0,
    }
    rendered = bench.render_table(table, ["ours", "baseline", "pydocket"], {})
    vs_baseline = next(line for line in rendered.splitlines() if "vs baseline" in line)
    assert "0.9×" in vs_baseline
    # The baseline is ours at another commit, never counted as a peer.
    vs_peer = next(line for line in rendered.splitlines() if "vs best peer" in line)
    assert "baseline" not in vs_peer


def test_a_baseline_that_is_not_a_commit_is_refused() -> None:
    with pytest.raises(SystemExit, match="--baseline 'no-such-rev' is not a commit"):
        bench.ensure_baseline("no-such-rev")

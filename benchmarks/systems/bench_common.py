"""The workloads every system runs, written once; each ``*_bench.py`` adapter only says how
its system enqueues a task and starts a worker.

This file runs inside each system's own virtualenv, so it uses the standard library only.

How a run is observed: every benchmark task appends one line, ``id start end t``, to the
file named by ``BENCH_RECORD`` (one small ``O_APPEND`` write, atomic across the worker's
threads and processes). The adapter process waits for the expected ids to appear, then
stops the worker and checks that each id ran exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SLEEP_SECONDS = 0.1
WARMUP_ID = -1

# -- the task side ----------------------------------------------------------------------

_record_fd: int | None = None


def record(i: int, start: float, t: float = 0.0) -> None:
    """Called by a benchmark task: ``i`` is its id, ``start`` when its body began, ``t`` the
    timestamp it carried (sent-at or due-at; 0 when unused)."""
    global _record_fd
    if _record_fd is None:
        _record_fd = os.open(os.environ["BENCH_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(_record_fd, f"{i} {start!r} {time.time()!r} {t!r}\n".encode())


def noop_body(i: int, t: float = 0.0) -> None:
    record(i, time.time(), t)


async def async_sleep_body(i: int, t: float = 0.0) -> None:
    start = time.time()
    await asyncio.sleep(SLEEP_SECONDS)
    record(i, start, t)


def sync_sleep_body(i: int, t: float = 0.0) -> None:
    start = time.time()
    time.sleep(SLEEP_SECONDS)
    record(i, start, t)


# -- the adapter contract ---------------------------------------------------------------


def bench_url() -> str:
    """The Redis URL, for an adapter's module-level set-up (a broker made at import): the
    worker and the driver's runs have ``BENCH_URL`` in their environment; an adapter run by
    hand has only ``--url`` on its command line."""
    if "BENCH_URL" in os.environ:
        return os.environ["BENCH_URL"]
    argv = sys.argv[1:]
    for k, arg in enumerate(argv):
        if arg == "--url" and k + 1 < len(argv):
            return argv[k + 1]
        if arg.startswith("--url="):
            return arg.split("=", 1)[1]
    raise SystemExit("error: no Redis URL: pass --url or set BENCH_URL")


def venv_command(name: str) -> str:
    """A console script of the virtualenv this adapter runs in (the system's CLI)."""
    return os.path.join(os.path.dirname(sys.executable), name)


@dataclass
class Adapter:
    """What a system provides. ``send``/``send_many``/``setup``/``teardown`` may be plain
    functions or coroutine functions (then the workload runs on one event loop).

    - ``send(kind, i, t, when)``: enqueue one task (``kind`` is ``"noop"`` or ``"sleep"``)
      with arguments ``(i, t)``, to run now, or at epoch seconds ``when``.
    - ``send_many(kind, ids)``: the system's bulk API, or None when it has none.
    - ``worker_command(concurrency)``: the worker as the system's docs say to run it, one
      process at that concurrency; run with cwd = this folder, and ``BENCH_RECORD``,
      ``BENCH_URL`` and ``BENCH_CONCURRENCY`` in its environment.
    - ``scheduling``: None when it can run a task at a given time in the worker process,
      else the reason it cannot (reported instead of a number).
    """

    name: str
    send: Callable[..., Any]
    worker_command: Callable[[int], list[str]]
    send_many: Callable[..., Any] | None = None
    setup: Callable[[], Any] | None = None
    teardown: Callable[[], Any] | None = None
    scheduling: str | None = None
    worker_env: dict[str, str] = field(default_factory=dict)


class Unavailable(Exception):
    """Raised by an adapter when the installed system cannot run what was asked (a
    docket without ``partitions=``, say): the run is reported as not available, with
    this reason, instead of failing."""


async def _call(function: Callable[..., Any] | None, *args: Any) -> Any:
    if function is None:
        return None
    result = function(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


# -- observing the worker ---------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as handle:
                found += [int(c) for c in handle.read().split()]
    except OSError:
        pass
    return found


def _peak_rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a live process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            # After the command's ")": state is field 3, utime and stime fields 14, 15.
            fields = handle.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (OSError, IndexError, ValueError):
        return 0.0


class WorkerProcess:
    """The system's worker, its process tree's peak RSS (and CPU time) sampled while it
    runs."""

    def __init__(
        self, adapter: Adapter, concurrency: int, url: str, record_path: Path, index: int = 0
    ) -> None:
        env = dict(os.environ)
        env.update(adapter.worker_env)
        env["BENCH_RECORD"] = str(record_path)
        env["BENCH_URL"] = url
        env["BENCH_CONCURRENCY"] = str(concurrency)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
        suffix = ".worker.log" if index == 0 else f".worker{index}.log"
        self.log_path = record_path.with_suffix(suffix)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        command = adapter.worker_command(concurrency)
        self.spawned_at = time.time()
        self.process = subprocess.Popen(
            command,
            cwd=HERE,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.peaks: dict[int, int] = {}
        self.cpu: dict[int, float] = {}
        self.procs_seen: set[int] = set()
        self._sampling = True
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while self._sampling:
            pending = [self.process.pid]
            while pending:
                pid = pending.pop()
                self.procs_seen.add(pid)
                peak = _peak_rss_kb(pid)
                if peak:
                    self.peaks[pid] = max(self.peaks.get(pid, 0), peak)
                self.cpu[pid] = max(self.cpu.get(pid, 0.0), _cpu_seconds(pid))
                pending += _children(pid)
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """CPU time the worker's process tree has used so far (a helper that already
        exited counts as last sampled)."""
        for pid in list(self.cpu):
            self.cpu[pid] = max(self.cpu[pid], _cpu_seconds(pid))
        return sum(self.cpu.values())

    def alive(self) -> bool:
        return self.process.poll() is None

    def peak_rss_mb(self) -> float:
        return round(sum(self.peaks.values()) / 1024, 1)

    def stop(self) -> None:
        self._sampling = False
        self._sampler.join()
        if self.alive():
            # The leader only: a supervisor (dramatiq's, say) forwards it to its children,
            # and a second copy would read as "exit now".
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._log.close()

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class WorkerGroup:
    """Several worker processes of one system draining the same queue, seen as one: alive
    while any is, its spawn the first one's, its peak RSS their sum."""

    def __init__(self, workers: list[WorkerProcess]) -> None:
        self.workers = workers
        self.spawned_at = min(w.spawned_at for w in workers)

    @property
    def procs_seen(self) -> set[int]:
        return set().union(*(w.procs_seen for w in self.workers))

    def alive(self) -> bool:
        return any(w.alive() for w in self.workers)

    def peak_rss_mb(self) -> float:
        return round(sum(w.peak_rss_mb() for w in self.workers), 1)

    def cpu_seconds(self) -> float:
        return sum(w.cpu_seconds() for w in self.workers)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()

    def log_tail(self, lines: int = 15) -> str:
        if len(self.workers) == 1:
            return self.workers[0].log_tail(lines)
        return "\n".join(
            f"--- worker {k}:\n{w.log_tail(lines)}" for k, w in enumerate(self.workers)
        )


@dataclass
class Record:
    i: int
    start: float
    end: float
    t: float


class Records:
    """Reads the record file as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_bytes(b"")
        self._offset = 0
        self._partial = b""
        self.rows: list[Record] = []

    def poll(self) -> int:
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        self._offset += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            i, start, end, t = line.split()
            self.rows.append(Record(int(i), float(start), float(end), float(t)))
        return len(self.rows)

    def ids(self, exclude_warmup: bool = True) -> list[int]:
        return [r.i for r in self.rows if not (exclude_warmup and r.i == WARMUP_ID)]


async def wait_for_records(
    records: Records,
    worker: WorkerProcess | WorkerGroup,
    want: Callable[[Records], bool],
    timeout: float,
) -> bool:
    # Polls on the event loop so an asyncio client's background work keeps going.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records.poll()
        if want(records):
            return True
        if not worker.alive():
            records.poll()
            return want(records)
        await asyncio.sleep(0.01)
    return False


def count_at_least(n: int) -> Callable[[Records], bool]:
    return lambda records: len(records.ids()) >= n


def check(records: Records, expected: Sequence[int]) -> dict[str, Any]:
    """Exactly once, nothing lost: every expected id ran once and nothing else ran."""
    seen: dict[int, int] = {}
    for i in records.ids():
        seen[i] = seen.get(i, 0) + 1
    wanted = set(expected)
    missing = len(wanted - seen.keys())
    duplicates = sum(count - 1 for count in seen.values() if count > 1)
    unexpected = len(seen.keys() - wanted)
    return {
        "expected": len(wanted),
        "ran": sum(seen.values()),
        "missing": missing,
        "duplicates": duplicates,
        "unexpected": unexpected,
        "ok": missing == 0 and duplicates == 0 and unexpected == 0,
    }


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# -- the workloads ----------------------------------------------------------------------


class Bench:
    def __init__(self, adapter: Adapter, args: argparse.Namespace) -> None:
        self.adapter = adapter
        self.args = args
        self.url: str = args.url
        self.workdir = Path(args.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.record_path = self.workdir / f"{adapter.name}-{args.workload}.records"
        self.enqueue_cpu_s = 0.0

    async def _send_all(self, kind: str, ids: range, bulk: bool) -> float:
        """Enqueue ``ids`` (timed) and return tasks per second."""
        adapter = self.adapter
        started = time.perf_counter()
        cpu_started = time.process_time()
        if bulk:
            assert adapter.send_many is not None
            await _call(adapter.send_many, kind, list(ids))
        elif inspect.iscoroutinefunction(adapter.send):
            for i in ids:
                await adapter.send(kind, i, 0.0, None)
        else:
            for i in ids:
                adapter.send(kind, i, 0.0, None)
        self.enqueue_cpu_s = time.process_time() - cpu_started
        return len(ids) / (time.perf_counter() - started)

    async def _prequeue(self, kind: str, ids: range) -> None:
        await self._send_all(kind, ids, bulk=self.adapter.send_many is not None)

    def _start_worker(self, concurrency: int) -> tuple[WorkerProcess, Records]:
        records = Records(self.record_path)
        return WorkerProcess(self.adapter, concurrency, self.url, self.record_path), records

    def _start_workers(self, concurrency: int, count: int) -> tuple[WorkerGroup, Records]:
        """``count`` worker processes at ``concurrency`` each, all appending to one
        record file."""
        records = Records(self.record_path)
        workers: list[WorkerProcess] = []
        try:
            for index in range(count):
                workers.append(
                    WorkerProcess(self.adapter, concurrency, self.url, self.record_path, index)
                )
        except BaseException:
            for worker in workers:
                worker.stop()
            raise
        return WorkerGroup(workers), records

    def _timeout(self, n: int) -> float:
        return self.args.timeout or max(120.0, n / 20)

    async def _warm(self, worker: WorkerProcess, records: Records) -> None:
        """Wait until the worker runs a task, so the measurement starts with it idle."""
        await _call(self.adapter.send, "noop", WARMUP_ID, 0.0, None)
        ready = await wait_for_records(
            records, worker, lambda r: any(x.i == WARMUP_ID for x in r.rows), 60
        )
        if not ready:
            raise RuntimeError("the worker did not run a warm-up task within 60 s")
        await asyncio.sleep(0.5)

    def _finish(
        self,
        worker: WorkerProcess | WorkerGroup,
        records: Records,
        expected: Sequence[int],
        done: bool,
    ) -> dict[str, Any]:
        if done:
            # A moment for a duplicate run to show up before the worker stops.
            time.sleep(0.3)
        worker.stop()
        records.poll()
        result = check(records, expected)
        if not done:
            result["ok"] = False
            result["worker_log_tail"] = worker.log_tail()
        return result

    async def drain(self, bulk: bool) -> dict[str, Any]:
        """Enqueue N no-ops (timed, one call at a time or in bulk), then drain them with a
        fresh worker at the given concurrency (timed from its spawn); with ``--workers K``,
        K fresh worker processes at that concurrency each (timed from the first spawn)."""
        n, c = self.args.n, self.args.concurrency
        ids = range(n)
        metrics: dict[str, Any] = {}
        if bulk and self.adapter.send_many is None:
            await self._send_all("noop", ids, bulk=False)
        else:
            metrics["enqueue_per_s"] = await self._send_all("noop", ids, bulk=bulk)
        worker, records = self._start_workers(c, self.args.workers)
        try:
            # The same wait, in two parts: the workers' CPU time is read at the first
            # task (start-up and imports done) and at the last.
            timeout = self._timeout(n)
            await wait_for_records(records, worker, count_at_least(1), timeout)
            first_cpu_s, first_count = worker.cpu_seconds(), len(records.ids())
            done = await wait_for_records(records, worker, count_at_least(n), timeout)
            worker_cpu_s = worker.cpu_seconds() - first_cpu_s
        except BaseException:
            worker.stop()
            raise
        # The client side's cost: the producer's CPU per task while enqueueing, and the
        # workers' per task from the first task to the last.
        metrics["enqueue_cpu_us_per_task"] = self.enqueue_cpu_s / n * 1e6
        if len(records.ids()) > first_count:
            ran_since = len(records.ids()) - first_count
            metrics["worker_cpu_us_per_task"] = worker_cpu_s / ran_since * 1e6
        ends = [r.end for r in records.rows if r.i != WARMUP_ID]
        starts = [r.start for r in records.rows if r.i != WARMUP_ID]
        if ends:
            metrics["drain_per_s"] = len(ends) / (max(ends) - worker.spawned_at)
            metrics["drain_from_first_per_s"] = len(ends) / max(max(ends) - min(starts), 1e-9)
            metrics["spawn_to_first_s"] = min(starts) - worker.spawned_at
        metrics["peak_rss_mb"] = worker.peak_rss_mb()
        # Short-lived helpers (a `file` call at import, say) count too.
        metrics["worker_processes"] = len(worker.procs_seen)
        if self.args.workers > 1:
            metrics["workers"] = self.args.workers
        return {"metrics": metrics, "check": self._finish(worker, records, ids, done)}

    async def latency(self) -> dict[str, Any]:
        """N no-ops sent at a fixed rate into an idle worker; enqueue-to-start."""
        n, rate = self.args.n, self.args.rate
        worker, records = self._start_worker(self.args.concurrency)
        try:
            await self._warm(worker, records)
            began = time.perf_counter()
            for i in range(n):
                pause = began + i / rate - time.perf_counter()
                if pause > 0:
                    await asyncio.sleep(pause)
                await _call(self.adapter.send, "noop", i, time.time(), None)
            done = await wait_for_records(records, worker, count_at_least(n), self._timeout(n))
        except BaseException:
            worker.stop()
            raise
        waits = [(r.start - r.t) * 1000 for r in records.rows if r.i != WARMUP_ID]
        metrics = {
            "p50_ms": percentile(waits, 50),
            "p99_ms": percentile(waits, 99),
            "max_ms": max(waits, default=float("nan")),
        }
        return {"metrics": metrics, "check": self._finish(worker, records, range(n), done)}

    async def scheduled(self) -> dict[str, Any]:
        """N no-ops due 2 s ahead, spread evenly over 1 s; start minus due."""
        if self.adapter.scheduling is not None:
            return {"skipped": self.adapter.scheduling}
        n = self.args.n
        worker, records = self._start_worker(self.args.concurrency)
        try:
            await self._warm(worker, records)
            base = time.time() + 2.0
            sent_late = 0
            for i in range(n):
                due = base + i / n
                await _call(self.adapter.send, "noop", i, due, due)
                sent_late += time.time() > due
            done = await wait_for_records(records, worker, count_at_least(n), self._timeout(n) + 3)
        except BaseException:
            worker.stop()
            raise
        lateness = [(r.start - r.t) * 1000 for r in records.rows if r.i != WARMUP_ID]
        metrics = {
            "p50_ms": percentile(lateness, 50),
            "p99_ms": percentile(lateness, 99),
            "max_ms": max(lateness, default=float("nan")),
            "min_ms": min(lateness, default=float("nan")),
            "early": sum(1 for x in lateness if x < 0),
            # Enqueued only after they were due (a slow enqueue): their lateness is not
            # the scheduler's.
            "sent_after_due": sent_late,
        }
        return {"metrics": metrics, "check": self._finish(worker, records, range(n), done)}

    async def sleep(self) -> dict[str, Any]:
        """N tasks that each sleep 0.1 s, pre-queued, drained at the given concurrency."""
        n = self.args.n
        ids = range(n)
        await self._prequeue("sleep", ids)
        worker, records = self._start_worker(self.args.concurrency)
        try:
            done = await wait_for_records(records, worker, count_at_least(n), self._timeout(n))
        except BaseException:
            worker.stop()
            raise
        metrics: dict[str, Any] = {}
        if records.rows:
            last = max(r.end for r in records.rows)
            metrics["wall_s"] = last - worker.spawned_at
            metrics["wall_from_first_s"] = last - min(r.start for r in records.rows)
        metrics["peak_rss_mb"] = worker.peak_rss_mb()
        return {"metrics": metrics, "check": self._finish(worker, records, ids, done)}


WORKLOADS = ("enqueue_drain", "bulk_drain", "latency", "scheduled", "sleep")


async def _run(adapter: Adapter, args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(adapter, args)
    await _call(adapter.setup)
    try:
        if args.workload == "enqueue_drain":
            return await bench.drain(bulk=False)
        if args.workload == "bulk_drain":
            result = await bench.drain(bulk=True)
            if adapter.send_many is None:
                result["metrics"]["bulk"] = "n/a"
            return result
        if args.workload == "latency":
            return await bench.latency()
        if args.workload == "scheduled":
            return await bench.scheduled()
        if args.workload == "sleep":
            return await bench.sleep()
        raise SystemExit(f"unknown workload {args.workload!r}; choose from {WORKLOADS}")
    finally:
        await _call(adapter.teardown)


def main(adapter: Adapter, argv: Sequence[str] | None = None) -> None:
    """The adapter's command line: runs one workload and prints one JSON object."""
    parser = argparse.ArgumentParser(description=f"One benchmark workload on {adapter.name}")
    parser.add_argument("workload", choices=WORKLOADS)
    parser.add_argument("--url", required=True, help="the private redis-server's URL")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rate", type=float, default=50.0, help="latency: tasks sent per s")
    parser.add_argument("--timeout", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=1, help="drains: how many worker processes")
    parser.add_argument("--workdir", default=str(HERE.parent / "results" / "work"))
    args = parser.parse_args(argv)
    os.environ["BENCH_URL"] = args.url
    started = time.time()
    try:
        outcome = asyncio.run(_run(adapter, args))
    except Unavailable as reason:
        outcome = {"skipped": f"not available: {reason}"}
    except Exception as error:  # reported, not raised: one system failing is a result too
        outcome = {"error": f"{type(error).__name__}: {error}"}
    outcome.update(
        system=adapter.name,
        workload=args.workload,
        n=args.n,
        concurrency=args.concurrency,
        seconds=round(time.time() - started, 2),
        python=sys.version.split()[0],
    )
    print(json.dumps(outcome))

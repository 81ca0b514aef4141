"""The chaos suite's machinery: real ``docket worker`` processes, a producer, the wait
for the docket to drain, and the figures each scenario reports.

Every worker is a ``python -m docket worker`` subprocess running ``ledger_tasks:tasks``;
the ``Cluster`` that started it kills it at the end whatever happened (and the kernel
kills it if the test process itself dies first).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from chaos_worker import EXECUTION_TTL_ENV
from ledger import (
    Analysis,
    Faults,
    Interval,
    LedgerTail,
    analyse,
    read_ledger,
    record_states,
    scan_record_states,
)
from ledger_tasks import LEDGER_ENV, chaos_task
from redis.exceptions import RedisError

from docket import Docket
from docket.execution import Disposition

CHAOS_DIR = Path(__file__).resolve().parent
TESTS_DIR = CHAOS_DIR.parent
REPO_DIR = TESTS_DIR.parent

# The suite also runs against the released docket, to set its figures beside ours: run
# pytest with a Python that has ``pydocket==0.27.0`` installed (and not this checkout on
# its path), and the workers run that docket too. Its CLI takes whole seconds and has no
# --max-deliveries.
RELEASED = version("pydocket").startswith("0.27.")
SYSTEM = "released 0.27" if RELEASED else "ours"

RESULTS_ENV = "DOCKET_CHAOS_RESULTS"
# How long each task's body sleeps (seconds), drawn per task, so runs overlap the faults.
TASK_SLEEP = (0.005, 0.020)
# The producer adds a batch this often while it produces.
BATCH_INTERVAL = 0.1
# What an add of a new key may report (ALREADY_SCHEDULED: an earlier attempt went through).
ADDED = (Disposition.SCHEDULED, Disposition.ALREADY_SCHEDULED)


# Looked up here, not in the child: between fork and exec only async-signal-safe work is
# safe, and loading a library (dlopen) is not while other threads (asyncio.to_thread's)
# may hold its lock.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # A worker must not outlive a test process that was killed outright.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _process_state(pid: int) -> str:
    """The one-letter state in /proc/<pid>/stat ('T' when stopped), '' once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rindex(")") + 2 :].split(" ", 1)[0]


def set_nice(pid: int, nice: int) -> bool:
    """Run ``pid`` at ``nice``; False where this process may not (a negative nice
    needs root or CAP_SYS_NICE).

    Set right after the process starts, before it has made threads of its own (each
    thread has its own nice value on Linux, inherited when it is made). A process that
    leads its own session (``start_new_session=True``, as workers and test Redis servers
    do) has its own autogroup where the kernel groups by session: the scheduler then
    shares the CPU between groups by the group's nice, so that is set too."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
        if os.getsid(pid) == pid:
            autogroup = Path(f"/proc/{pid}/autogroup")
            if autogroup.exists():
                autogroup.write_text(str(nice))
    except OSError:
        return False
    return True


@dataclass
class WorkerProcess:
    index: int
    process: subprocess.Popen[bytes]
    log: Path
    started: float

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def name(self) -> str:
        """Its name as a docket worker (and Redis consumer)."""
        return f"w{self.index}"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Cluster:
    """Docket worker processes on one docket, and what the test did to them."""

    def __init__(
        self,
        directory: Path,
        url: str,
        docket: str,
        *,
        concurrency: int,
        redelivery_timeout: float,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        execution_ttl: float | None = None,
        nice: int = 0,
    ) -> None:
        self.directory = directory
        self.url = url
        self.docket = docket
        self.concurrency = concurrency
        self.redelivery_timeout = redelivery_timeout
        self.extra_args = tuple(extra_args)
        # Added to every worker's environment (e.g. DOCKET_SIGNING_KEY).
        self.env = dict(env or {})
        # Seconds the workers' docket keeps finished records (None: docket's default);
        # workers then run through chaos_worker, as docket worker has no option for it.
        self.execution_ttl = execution_ttl
        # Added to the workers' nice value: a scenario that times Redis runs its load
        # generators below it, so on a small machine they do not take its CPU.
        self.nice = nice
        self.ledger = directory / "ledger.jsonl"
        self.workers: list[WorkerProcess] = []
        self.kills: dict[int, float] = {}
        self.pauses: dict[int, list[Interval]] = defaultdict(list)

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        paths = (
            [str(TESTS_DIR), str(CHAOS_DIR)]
            if RELEASED
            else [str(REPO_DIR), str(TESTS_DIR), str(CHAOS_DIR)]
        )
        if os.environ.get("PYTHONPATH"):
            paths.append(os.environ["PYTHONPATH"])
        environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(paths),
            "PYTHONUNBUFFERED": "1",
            LEDGER_ENV: str(self.ledger),
            **self.env,
            **(extra or {}),
        }
        if self.execution_ttl is not None:
            environment[EXECUTION_TTL_ENV] = str(self.execution_ttl)
        return environment

    def command(self, name: str) -> list[str]:
        if RELEASED:
            return self._released_command(name)
        module = "docket" if self.execution_ttl is None else "chaos_worker"
        return [
            sys.executable, "-m", module, "worker",
            "--docket", self.docket,
            "--url", self.url,
            "--name", name,
            "--tasks", "ledger_tasks:tasks",
            "--concurrency", str(self.concurrency),
            "--redelivery-timeout", f"{round(self.redelivery_timeout * 1000)}ms",
            "--reconnection-delay", "200ms",
            "--minimum-check-interval", "50ms",
            "--scheduling-resolution", "50ms",
            "--no-schedule-automatic-tasks",
            # Faults, not poison: a task whose workers keep dying must still run.
            "--max-deliveries", "100",
            "--logging-format", "plain",
            # Warnings and errors only: two INFO lines per task would cost the 2 cores
            # more than the tasks do, and bury what went wrong.
            "--logging-level", "warning",
            *self.extra_args,
        ]  # fmt: skip

    def _released_command(self, name: str) -> list[str]:
        """The same worker in the released CLI's terms: durations in whole seconds, so its
        own polling defaults (100 ms, 250 ms) rather than a second; no --max-deliveries
        (it has none)."""
        return [
            sys.executable, "-m", "docket", "worker",
            "--docket", self.docket,
            "--url", self.url,
            "--name", name,
            "--tasks", "ledger_tasks:tasks",
            "--concurrency", str(self.concurrency),
            "--redelivery-timeout", str(max(1, round(self.redelivery_timeout))),
            "--reconnection-delay", "1",
            "--no-schedule-automatic-tasks",
            "--logging-format", "plain",
            "--logging-level", "WARNING",
            *self.extra_args,
        ]  # fmt: skip

    def start_worker(self, env: Mapping[str, str] | None = None) -> WorkerProcess:
        """Start one more worker; ``env`` is added to its environment alone."""
        index = len(self.workers)
        log = self.directory / f"worker-{index}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                self.command(f"w{index}"),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=self.environment(env),
                cwd=self.directory,
                # Its own session, so a Ctrl-C meant for pytest leaves the cleanup to us.
                start_new_session=True,
                preexec_fn=(
                    _die_with_parent
                    if sys.platform == "linux"
                    and threading.current_thread() is threading.main_thread()
                    else None
                ),
            )
        if self.nice:
            set_nice(process.pid, os.getpriority(os.PRIO_PROCESS, 0) + self.nice)
        worker = WorkerProcess(index, process, log, time.monotonic())
        self.workers.append(worker)
        return worker

    @property
    def live(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.alive]

    async def wait_ready(self, docket: Docket, timeout: float = 60.0) -> None:
        """Wait until every live worker has sent its first heartbeat: connected to Redis
        and running. A worker that cannot reach Redis as it starts exits (``Cannot reach
        Redis``), so faults must wait for this; a worker that dies meanwhile fails."""
        deadline = time.monotonic() + timeout
        while True:
            dead = [w for w in self.workers if not w.alive and w.pid not in self.kills]
            if dead:
                raise AssertionError(f"workers exited while starting:\n{self.describe()}")
            with contextlib.suppress(RedisError, OSError):
                beating = {info.name for info in await docket.workers()}
                if {w.name for w in self.live} <= beating:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"workers not up after {timeout:.0f}s:\n{self.describe()}")
            await asyncio.sleep(0.05)

    async def kill(self, worker: WorkerProcess) -> None:
        """SIGKILL ``worker`` and note when it was seen dead."""
        worker.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(worker.process.wait, 10)
        self.kills[worker.pid] = time.monotonic()

    async def freeze(self, worker: WorkerProcess) -> float:
        """SIGSTOP ``worker``; returns the moment it was seen stopped."""
        worker.process.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while _process_state(worker.pid) not in ("T", "t"):
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {worker.pid} did not stop on SIGSTOP")
            await asyncio.sleep(0.001)
        return time.monotonic()

    def thaw(self, worker: WorkerProcess, frozen_at: float) -> None:
        self.pauses[worker.pid].append((frozen_at, time.monotonic()))
        worker.process.send_signal(signal.SIGCONT)

    async def stop(self, timeout: float = 30.0) -> dict[int, int | None]:
        """SIGTERM every live worker (they finish and settle their runs) and wait.

        Returns each stopped worker's exit code (None if it had to be killed)."""
        live = self.live
        for worker in live:
            worker.process.send_signal(signal.SIGCONT)
            worker.process.send_signal(signal.SIGTERM)
        codes: dict[int, int | None] = {}
        for worker in live:
            try:
                codes[worker.pid] = await asyncio.to_thread(worker.process.wait, timeout)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
                codes[worker.pid] = None
        return codes

    def close(self) -> None:
        """Kill whatever is still running, frozen or not."""
        for worker in self.workers:
            if worker.alive:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGCONT)
                    worker.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(10)

    def faults(self) -> Faults:
        return Faults(kills=dict(self.kills), pauses={p: list(w) for p, w in self.pauses.items()})

    def describe(self, tail: int = 1500) -> str:
        """Each worker's pid, fate and the end of its log, for a failure message."""
        parts = []
        for w in self.workers:
            fate = "killed" if w.pid in self.kills else f"exit {w.process.returncode}"
            parts.append(f"--- worker {w.index} pid {w.pid} ({fate}):\n{w.output[-tail:]}")
        return "\n".join(parts)


class Producer:
    """Adds ``total`` chaos tasks in batches spread over ``over`` seconds, each due at a
    random moment from ``lead`` to ``lead + horizon`` seconds after it is added, its body
    sleeping a time drawn from ``sleep``; rides out Redis faults."""

    def __init__(
        self,
        docket: Docket,
        prefix: str,
        total: int,
        *,
        over: float,
        horizon: float,
        lead: float = 0.0,
        sleep: tuple[float, float] = TASK_SLEEP,
        seed: int = 0,
    ) -> None:
        self.docket = docket
        self.prefix = prefix
        self.total = total
        self.over = over
        self.horizon = horizon
        self.lead = lead
        self.sleep = sleep
        self.random = random.Random(seed)
        self.added: dict[str, float] = {}
        self.retries = 0
        self.finished = asyncio.Event()

    async def run(self) -> None:
        batches = max(1, math.ceil(self.over / BATCH_INTERVAL))
        per_batch = math.ceil(self.total / batches)
        began = time.monotonic()
        try:
            for batch, first in enumerate(range(0, self.total, per_batch)):
                delay = began + batch * BATCH_INTERVAL - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = time.time()
                calls = [
                    (
                        f"{self.prefix}-{i:07d}",
                        round(now + self.lead + self.random.uniform(0, self.horizon), 6),
                        self.random.uniform(*self.sleep),
                    )
                    for i in range(first, min(first + per_batch, self.total))
                ]
                await self._add(calls)
        finally:
            self.finished.set()

    async def add_all_at(self, when: float) -> None:
        """Add all ``total`` tasks in one ``add_many``, every one due at ``when``."""
        try:
            await self._add(
                [
                    (f"{self.prefix}-{i:07d}", round(when, 6), self.random.uniform(*self.sleep))
                    for i in range(self.total)
                ]
            )
        finally:
            self.finished.set()

    async def _add(self, calls: list[tuple[str, float, float]]) -> None:
        """Add ``calls`` (key, when, sleep), again and again until every one is in."""
        docket = self.docket
        pending = calls
        deadline = time.monotonic() + 60
        problem: BaseException | None
        while True:
            try:
                executions = await docket.add_many(
                    docket.call(chaos_task, when=datetime.fromtimestamp(when, UTC), key=key)(
                        when, sleep
                    )
                    for key, when, sleep in pending
                )
            except (RedisError, OSError) as error:
                failed, problem = pending, error
            else:
                # A call that hit a Redis error is not raised: it comes back FAILED.
                for execution in executions:
                    if execution.disposition not in (*ADDED, Disposition.FAILED):
                        raise AssertionError(f"{execution.key}: {execution.disposition}")
                failed_keys = {e.key for e in executions if e.disposition is Disposition.FAILED}
                failed = [call for call in pending if call[0] in failed_keys]
                problem = next(
                    (e.schedule_exception for e in executions if e.schedule_exception), None
                )
            if not failed:
                break
            self.retries += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"could not add {len(failed)} tasks: {problem!r}")
            await asyncio.sleep(0.1)
            pending = failed
            # A failed call may have gone through before its reply was lost: send again
            # only those without a record (an add of a key that already ran would run it
            # again).
            with contextlib.suppress(RedisError, OSError):
                states = await record_states(docket, [key for key, _, _ in pending])
                pending = [call for call in pending if states[call[0]] is None]
                if not pending:
                    break
        for key, when, _ in calls:
            self.added[key] = when


async def drain(
    docket: Docket, ledger: LedgerTail, added: dict[str, float], timeout: float
) -> bool:
    """Wait until every added key has ended in the ledger and the docket holds nothing
    scheduled, queued or running (no ended run is left unsettled). False on timeout."""
    deadline = time.monotonic() + timeout
    while not added.keys() <= ledger.poll():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    while time.monotonic() < deadline:
        with contextlib.suppress(RedisError, OSError):
            if (await docket.snapshot()).total_tasks == 0:
                return True
        await asyncio.sleep(0.2)
    return False


@dataclass
class Figures:
    """One scenario's line in the chaos table."""

    scenario: str
    size: str
    tasks: int
    fault: str
    faults: int
    lost: int
    stuck: int
    early: int
    overlapping: int
    duplicates: int
    wall_seconds: float
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def duplicates_per_fault(self) -> float:
        return self.duplicates / self.faults if self.faults else 0.0

    def line(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in self.extra.items())
        return (
            f"chaos {self.scenario} [{self.size}]{'' if SYSTEM == 'ours' else f' ({SYSTEM})'}: "
            f"tasks={self.tasks} "
            f"{self.fault}={self.faults} lost={self.lost} stuck={self.stuck} "
            f"early={self.early} overlapping={self.overlapping} "
            f"duplicates={self.duplicates} "
            f"duplicates/{self.fault}={self.duplicates_per_fault:.2f} "
            f"wall={self.wall_seconds:.1f}s{extra}"
        )

    def as_json(self) -> str:
        data = asdict(self)
        data["system"] = SYSTEM
        data["duplicates_per_fault"] = round(self.duplicates_per_fault, 3)
        return json.dumps(data)


@dataclass
class Outcome:
    analysis: Analysis
    figures: Figures
    cluster: Cluster
    producer: Producer
    drained: bool
    # Workers that exited on their own before the test stopped them.
    exited: list[WorkerProcess]
    # The exit code of each worker the test stopped with SIGTERM (None: it had to be
    # killed after not stopping in time).
    stop_codes: dict[int, int | None]

    def explain(self) -> str:
        """Everything a failure message needs: the problems, the figures, the logs."""
        problems = self.analysis.problems or ["no invariant broken"]
        return "\n".join(
            [
                self.figures.line(),
                *problems,
                f"drained: {self.drained}; producer retries: {self.producer.retries}",
                self.cluster.describe(),
            ]
        )


async def run_scenario(
    *,
    scenario: str,
    size: str,
    cluster: Cluster,
    workers: int,
    tasks: int,
    over: float,
    horizon: float,
    fault: str,
    inflict: Callable[[Producer], Awaitable[int]],
    drain_timeout: float,
    docket_options: Mapping[str, Any] | None = None,
    producer_options: Mapping[str, Any] | None = None,
) -> Outcome:
    """Start ``workers`` more workers (a scenario may have started some of its own),
    wait until all are up, produce ``tasks`` tasks while ``inflict`` does its damage (it
    returns how many faults it caused), wait for the docket to drain, stop the workers
    and read the ledger. ``docket_options`` go to the producer's ``Docket`` (such as its
    ``signing_key``), ``producer_options`` to the ``Producer``."""
    began = time.monotonic()
    for _ in range(workers):
        cluster.start_worker()
    async with Docket(name=cluster.docket, url=cluster.url, **(docket_options or {})) as docket:
        await cluster.wait_ready(docket)
        producer = Producer(
            docket, scenario, tasks, over=over, horizon=horizon, **(producer_options or {})
        )
        production = asyncio.create_task(producer.run())
        try:
            faults = await inflict(producer)
            await production
        finally:
            if not production.done():
                production.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await production
        return await conclude(
            scenario=scenario,
            size=size,
            cluster=cluster,
            docket=docket,
            producer=producer,
            fault=fault,
            faults=faults,
            began=began,
            drain_timeout=drain_timeout,
        )


async def conclude(
    *,
    scenario: str,
    size: str,
    cluster: Cluster,
    docket: Docket,
    producer: Producer,
    fault: str,
    faults: int,
    began: float,
    drain_timeout: float,
    records_expire: bool = False,
) -> Outcome:
    """The end of every scenario, once the producer is done: wait for the docket to
    drain, note the workers that exited on their own, stop the rest, read every key's
    record and the ledger, and sum it up.

    ``records_expire``: the workers' ``execution_ttl`` is short enough for final records
    to expire before they could be read one by one; then the records still in Redis are
    read with a SCAN instead, and a key without one counts as final (only a final record
    is ever given a TTL)."""
    drained = await drain(docket, LedgerTail(cluster.ledger), producer.added, drain_timeout)
    exited = [w for w in cluster.workers if not w.alive and w.pid not in cluster.kills]
    stop_codes = await cluster.stop()
    wall = time.monotonic() - began
    if records_expire:
        states = await scan_record_states(docket)
    else:
        states = await record_states(docket, producer.added)
    analysis = analyse(
        read_ledger(cluster.ledger),
        producer.added,
        states,
        cluster.faults(),
        missing_is_final=records_expire,
    )
    figures = Figures(
        scenario=scenario,
        size=size,
        tasks=len(producer.added),
        fault=fault,
        faults=faults,
        lost=len(analysis.lost),
        stuck=len(analysis.stuck),
        early=len(analysis.early),
        overlapping=len(analysis.overlapping),
        duplicates=len(analysis.duplicates),
        wall_seconds=round(wall, 2),
        extra={"interrupted": analysis.interrupted, "redelivered": analysis.redelivered},
    )
    return Outcome(analysis, figures, cluster, producer, drained, exited, stop_codes)


def check(outcome: Outcome) -> None:
    """The invariants every scenario holds: nothing lost, stuck or early, no two runs of
    a task at once on live workers, and every worker stops cleanly at the end."""
    analysis = outcome.analysis
    assert not analysis.lost, outcome.explain()
    assert not analysis.stuck, outcome.explain()
    assert not analysis.early, outcome.explain()
    assert not analysis.unexpected, outcome.explain()
    assert not analysis.overlapping, outcome.explain()
    # SIGTERM lets a worker finish and settle its runs and exit 0, after any fault.
    assert set(outcome.stop_codes.values()) <= {0}, (outcome.stop_codes, outcome.explain())


def publish(figures: Figures, user_properties: list[tuple[str, object]]) -> None:
    """Print the figures line, hand it to the terminal summary (through the test
    report, which pytest-xdist carries back too) and append it to $DOCKET_CHAOS_RESULTS."""
    print(figures.line())
    user_properties.append(("chaos_figures", figures.line()))
    results = os.environ.get(RESULTS_ENV)
    if results:
        with open(results, "a", encoding="utf-8") as out:
            out.write(figures.as_json() + "\n")

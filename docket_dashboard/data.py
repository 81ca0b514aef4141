"""What the pages show, read from the docket: the overview, the lists, a task's page,
failures, dead letters and strikes. Nothing here knows about HTTP or templates."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from docket import Execution, ExecutionState, inspection
from docket import dead_letters as letters
from docket import failures as failure_log

from .formatting import short

if TYPE_CHECKING:
    from docket import Docket
    from docket.dead_letters import DeadLetter
    from docket.failures import Failure
    from docket.strikes import StrikeCondition

SAMPLE_EVERY = 5.0
"""Seconds between two queue-depth samples, however many dashboards are open."""
SAMPLES_KEPT = timedelta(hours=24)
CHART_WINDOW = timedelta(hours=1)
_DEPTH = "dashboard:depth"
_DEPTH_LOCK = "dashboard:depth:lock"

LISTS = ("queued", "scheduled", "running")
FAILURE_LOOKUP = 1000


@dataclass(frozen=True)
class DepthSample:
    at: datetime
    scheduled: int
    queued: int
    running: int


@dataclass
class WorkerRow:
    name: str
    last_seen: datetime
    tasks: list[str]
    running: list[Execution] = field(default_factory=list)


@dataclass
class Overview:
    taken: datetime
    counts: inspection.StateCounts
    failures: int
    workers: list[WorkerRow]
    running: list[Execution]
    depth: list[DepthSample]
    strikes: int


async def overview(docket: Docket) -> Overview:
    taken = datetime.now(UTC)
    counts = await inspection.count_states(docket)
    running = (await inspection.list_running(docket, count=100)).executions
    rows = [
        WorkerRow(info.name, info.last_seen, sorted(info.tasks))
        for info in sorted(await docket.workers(), key=lambda info: info.name)
    ]
    by_name = {row.name: row for row in rows}
    for execution in running:
        if execution.worker in by_name:
            by_name[execution.worker].running.append(execution)
    return Overview(
        taken,
        counts,
        await failure_log.count_failures(docket),
        rows,
        running,
        await depth_samples(docket, counts),
        len(docket.strike_list.conditions),
    )


async def depth_samples(docket: Docket, counts: inspection.StateCounts) -> list[DepthSample]:
    """The last hour of queue depths, after adding ``counts`` as a sample when the
    newest is older than SAMPLE_EVERY. The samples are kept in the docket's Redis (for
    24 hours), so every dashboard process shows the same history, taken whenever one
    of them was open."""
    key = docket.keys.external(_DEPTH)
    now = time.time()
    async with docket.redis() as redis:
        if await redis.set(
            docket.keys.external(_DEPTH_LOCK), b"1", nx=True, px=int(SAMPLE_EVERY * 1000)
        ):
            member = f"{now:.3f} {counts.scheduled} {counts.queued} {counts.running}"
            async with redis.pipeline(transaction=False) as pipe:
                pipe.zadd(key, {member: now})
                pipe.zremrangebyscore(key, "-inf", now - SAMPLES_KEPT.total_seconds())
                pipe.pexpire(key, int(SAMPLES_KEPT.total_seconds() * 1000))
                await pipe.execute()
        raw = await redis.zrangebyscore(key, now - CHART_WINDOW.total_seconds(), "+inf")
    samples: list[DepthSample] = []
    for member in raw:
        text = member.decode() if isinstance(member, bytes) else str(member)
        try:
            at, scheduled, queued, running = text.split()
            samples.append(
                DepthSample(
                    datetime.fromtimestamp(float(at), UTC),
                    int(scheduled),
                    int(queued),
                    int(running),
                )
            )
        except ValueError:
            continue  # not one of ours: skipped rather than failing the page
    return samples


async def task_list(
    docket: Docket, which: str, *, count: int, after: str | None, task: str | None
) -> inspection.Page:
    readers = {
        "queued": inspection.list_queued,
        "scheduled": inspection.list_scheduled,
        "running": inspection.list_running,
    }
    return await readers[which](docket, count=count, after=after, task=task)


@dataclass
class TaskPage:
    execution: Execution
    arguments: list[tuple[str, str | None]]
    timeline: list[tuple[str, datetime | None, str]]
    result: str | None = None
    """The return value's repr, for a completed run that kept one."""
    problem: str | None = None
    """Why the result could not be read back (for a completed run)."""
    failure: Failure | None = None


async def task_page(docket: Docket, key: str) -> TaskPage | None:
    async with docket.redis() as redis:
        record = await redis.hgetall(docket.keys_for(key).record(key))
    if not record:
        return None
    execution = await Execution.from_record(docket, key, record)
    page = TaskPage(execution, execution.logged_arguments(), timeline(execution))
    if execution.state == ExecutionState.COMPLETED and execution.result_key is not None:
        try:
            value = await execution.get_result(timeout=0)
        except Exception as error:  # a result this process cannot load is shown as such
            page.problem = f"{type(error).__name__}: {error}"
        else:
            page.result = short(value, 2000)
    if execution.state == ExecutionState.FAILED:
        page.failure = await latest_failure(docket, key, execution.function_name)
        if page.failure is not None and not execution.args and not execution.kwargs:
            # The run's message is gone, but the failures list kept its fields: the
            # arguments it failed with.
            message = {name.encode(): value for name, value in page.failure.fields.items()}
            rebuilt = await Execution.from_record(docket, key, record, message)
            page.arguments = rebuilt.logged_arguments()
    return page


async def latest_failure(docket: Docket, key: str, function: str) -> Failure | None:
    """The newest entry of the failures list for ``key`` (what the task page's Retry
    retries), looking through at most FAILURE_LOOKUP of its task's failures."""
    before: str | None = None
    looked = 0
    while looked < FAILURE_LOOKUP:
        page = await failure_log.list_failures(docket, count=100, before=before, task=function)
        for failure in page:
            if failure.key == key:
                return failure
        looked += 100
        if len(page) < 100:
            return None
        before = page[-1].id
    return None


def timeline(execution: Execution) -> list[tuple[str, datetime | None, str]]:
    """What the record tells of this run, in order: when it was due, when it started and
    on which worker, and how it ended. Earlier attempts' runs are not kept, only their
    count."""
    steps: list[tuple[str, datetime | None, str]] = []
    attempt = f"attempt {execution.attempt}" if execution.attempt > 1 else ""
    steps.append(("due", execution.when, attempt))
    if execution.started_at is not None:
        steps.append(("started", execution.started_at, execution.worker or ""))
    if execution.state in (
        ExecutionState.COMPLETED,
        ExecutionState.FAILED,
        ExecutionState.CANCELLED,
    ):
        steps.append((execution.state.value, execution.completed_at, execution.error or ""))
    return steps


async def failures(
    docket: Docket, *, count: int, before: str | None, task: str | None
) -> list[Failure]:
    return await failure_log.list_failures(docket, count=count, before=before, task=task)


async def dead_letter_page(
    docket: Docket, *, count: int, after: str | None
) -> tuple[list[DeadLetter], int]:
    start = f"({after}" if after else "-"
    page = await letters.list_dead_letters(docket, count=count, start=start)
    return page, await letters.count_dead_letters(docket)


def strikes(docket: Docket) -> list[StrikeCondition]:
    return list(docket.strike_list.conditions)

"""Lease fencing: a worker that lost its lease must not ack or overwrite the new owner's
run (docs/reliability.md).

Redis itself does not fence: ``XACK`` by any consumer removes a PEL entry, and ``XCLAIM``
by the old owner steals a message back. So the settle,
renew and claim scripts must check who owns the message, and with which delivery count.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from docket import Docket, Execution, Worker
from docket._redis import scripts
from docket._redis.keys import GROUP

LEASE = timedelta(milliseconds=500)

# Worker A: a separate process we can freeze with SIGSTOP. Its copy of `slow` takes
# 1.5 s and notes its start and finish in a ledger list the test owns.
WORKER_A = textwrap.dedent(
    """
    import asyncio
    import logging
    import sys
    from datetime import timedelta

    from redis.asyncio import Redis

    from docket import Docket, Worker

    url, name, ledger = sys.argv[1:4]


    async def main() -> None:
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
        )
        redis = Redis.from_url(url)

        async def slow(tag: str) -> str:
            await redis.rpush(ledger, "start:A")
            await asyncio.sleep(1.5)
            await redis.rpush(ledger, "finish:A")
            return "from-A"

        async with Docket(name=name, url=url) as docket:
            docket.register(slow)
            worker = Worker(
                docket,
                name="A",
                redelivery_timeout=timedelta(milliseconds=500),
                minimum_check_interval=timedelta(milliseconds=10),
                schedule_automatic_tasks=False,
            )
            async with worker:
                await worker.run_until_finished()
        await redis.aclose()


    asyncio.run(main())
    """
)


pytestmark = pytest.mark.partitioned_too


async def wait_until(
    predicate: Callable[[], Awaitable[bool] | bool], what: str, timeout: float = 15.0
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        outcome = predicate()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class WorkerProcess:
    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)


@pytest.fixture
def start_worker_a(tmp_path: Path) -> Iterator[Callable[[str, str, str], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(url: str, name: str, ledger: str) -> WorkerProcess:
        script = tmp_path / "worker_a.py"
        script.write_text(WORKER_A)
        log = tmp_path / "worker_a.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, str(script), url, name, ledger],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        worker = WorkerProcess(process, log)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            if worker.process.poll() is None:
                worker.resume()
                worker.process.kill()
                worker.process.wait(10)


async def record_of(redis: Redis, docket: Docket, key: str) -> dict[str, str]:
    raw = await redis.hgetall(docket.keys.record(key))
    return {k.decode(): v.decode(errors="replace") for k, v in raw.items()}


async def pending_entries(redis: Redis, docket: Docket) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = await redis.xpending_range(
        docket.keys.stream, GROUP, "-", "+", 100
    )
    return entries


@pytest.mark.timeout(60)
@pytest.mark.parametrize("when_a_resumes", ["new-owner-still-running", "new-owner-finished"])
async def test_worker_paused_past_its_lease_does_not_settle_the_run_another_worker_took_over(
    docket: Docket,
    redis_client: Redis,
    redis_url: str,
    start_worker_a: Callable[[str, str, str], WorkerProcess],
    caplog: pytest.LogCaptureFixture,
    when_a_resumes: str,
) -> None:
    ledger = f"ledger:{docket.name}"
    release_b = asyncio.Event()
    if when_a_resumes == "new-owner-finished":
        release_b.set()

    async def slow(tag: str) -> str:  # worker B's copy of the task
        await redis_client.rpush(ledger, "start:B")
        await release_b.wait()
        await redis_client.rpush(ledger, "finish:B")
        return "from-B"

    execution = await docket.add(slow)("work")
    mid = execution.message_id
    assert mid is not None

    # A takes the task, and freezes in the middle of it.
    a = start_worker_a(redis_url, docket.name, ledger)

    async def a_is_running_it() -> bool:
        record = await record_of(redis_client, docket, execution.key)
        started = await redis_client.lrange(ledger, 0, -1)
        return record.get("state") == "running" and record.get("worker") == "A" and bool(started)

    await wait_until(a_is_running_it, "worker A to start the task")
    a.stop()

    # B takes it over once A's lease runs out.
    worker_b = Worker(
        docket,
        name="B",
        redelivery_timeout=LEASE,
        minimum_check_interval=timedelta(milliseconds=10),
    )
    async with worker_b:
        b_run = asyncio.create_task(worker_b.run_until_finished())
        try:

            async def b_is_running_it() -> bool:
                record = await record_of(redis_client, docket, execution.key)
                return record.get("worker") == "B" and b"start:B" in await redis_client.lrange(
                    ledger, 0, -1
                )

            await wait_until(b_is_running_it, "worker B to take the task over")

            if when_a_resumes == "new-owner-finished":
                await asyncio.wait_for(asyncio.shield(b_run), 15)

            a.resume()
            # A finishes its stale copy and tries to settle it.
            await wait_until(lambda: "Lost the lease" in a.output, "worker A to try to settle")

            if when_a_resumes == "new-owner-still-running":
                # A neither acked B's delivery nor overwrote B's record.
                [entry] = await pending_entries(redis_client, docket)
                assert entry["consumer"] == b"B"
                assert entry["times_delivered"] == 2
                assert await redis_client.xrange(docket.keys.stream, mid, mid) != []
                record = await record_of(redis_client, docket, execution.key)
                assert record["state"] == "running"
                assert record["worker"] == "B"
                assert "completed" not in record and "error" not in record
                assert not await redis_client.exists(
                    docket.keys.result(execution.key, execution.generation)
                )
                release_b.set()

            await asyncio.wait_for(b_run, 15)
        finally:
            release_b.set()
            if not b_run.done():
                worker_b.stop()
                b_run.cancel()

    assert a.process.wait(15) == 0, a.output
    assert "Lost the lease" in a.output
    assert "Traceback" not in a.output, a.output

    record = await record_of(redis_client, docket, execution.key)
    assert record["state"] == "completed"
    assert record["worker"] == "B"
    loaded = await docket.get_execution(execution.key)
    assert loaded is not None
    assert await loaded.get_result(timeout=5) == "from-B"
    assert await pending_entries(redis_client, docket) == []
    assert await redis_client.xlen(docket.keys.stream) == 0
    # Both copies ran (at least once), but only B's settled.
    ledger_entries = {e.decode() for e in await redis_client.lrange(ledger, 0, -1)}
    assert ledger_entries == {"start:A", "finish:A", "start:B", "finish:B"}
    # B (the only worker in this process; A logs to its own file) kept its lease.
    assert not [
        r.getMessage()
        for r in caplog.records
        if "Lost the lease" in r.getMessage() or "was taken over" in r.getMessage()
    ], "B should have settled its own run without losing its lease"


# --- the scripts, called directly -------------------------------------------------------------


async def noop(tag: str) -> None:
    pass


class Scene:
    """One task whose message A read first and B then took over (delivery 2)."""

    def __init__(self, docket: Docket, redis: Redis, execution: Execution) -> None:
        self.docket = docket
        self.redis = redis
        self.execution = execution
        assert execution.message_id is not None
        self.mid: str = execution.message_id

    @property
    def record(self) -> str:
        return self.docket.keys.record(self.execution.key)

    @property
    def result(self) -> str:
        return self.docket.keys.result(self.execution.key, self.execution.generation)

    async def read_as(self, consumer: str) -> None:
        stream = self.docket.keys.stream
        reply = await self.redis.xreadgroup(GROUP, consumer, {stream: ">"}, count=1)
        assert reply and reply[0][1][0][0].decode() == self.mid

    async def take_over_as(self, consumer: str) -> None:
        claimed = await self.redis.xclaim(self.docket.keys.stream, GROUP, consumer, 0, [self.mid])
        assert claimed

    async def claim(
        self, worker: str, redelivered: bool, deliveries: int | None = None
    ) -> list[Any]:
        if deliveries is None:
            deliveries = 2 if redelivered else 1
        keys = self.docket.keys
        message = scripts.ClaimMessage(
            record=self.record,
            mid=self.mid,
            generation=self.execution.generation,
            redelivered=int(redelivered),
            deliveries=deliveries,
        )
        result: list[Any] = await self.docket.engine.scripts.send(
            scripts.Claim(
                stream=keys.stream,
                group=GROUP,
                worker=worker,
                events_prefix=keys.events_prefix,
                record_prefix=keys.record_prefix,
                messages=[message],
            )
        )
        return result

    async def settle(self, worker: str, deliveries: int, state: str = "completed") -> list[int]:
        keys = self.docket.keys
        run = scripts.SettleRun(
            record=self.record,
            result_key=self.result,
            mid=self.mid,
            generation=self.execution.generation,
            deliveries=deliveries,
            state=state,
            error="stale error" if state == "failed" else "",
            result=b"stale result",
            traceback="stale traceback" if state == "failed" else "",
        )
        result = await self.docket.engine.scripts.send(
            scripts.Settle(
                stream=keys.stream,
                failures=keys.failures,
                group=GROUP,
                worker=worker,
                ttl=self.docket.execution_ttl.total_seconds(),
                events_prefix=keys.events_prefix,
                record_prefix=keys.record_prefix,
                failures_kept=1000,
                runs=[run],
            )
        )
        return [int(x) for x in result]

    async def renew(self, worker: str, deliveries: int) -> list[str]:
        lost = await self.docket.engine.scripts.send(
            scripts.Renew(
                stream=self.docket.keys.stream,
                group=GROUP,
                worker=worker,
                messages=[scripts.RenewMessage(mid=self.mid, deliveries=deliveries)],
            )
        )
        return [x.decode() if isinstance(x, bytes) else str(x) for x in lost]

    async def pel_entry(self) -> dict[str, Any] | None:
        entries = await self.redis.xpending_range(
            self.docket.keys.stream, GROUP, self.mid, self.mid, 1
        )
        return entries[0] if entries else None

    async def snapshot(self) -> tuple[Any, ...]:
        entry = await self.pel_entry()
        owner = None if entry is None else (entry["consumer"], entry["times_delivered"])
        return (
            owner,
            await self.redis.xrange(self.docket.keys.stream, self.mid, self.mid),
            await self.redis.hgetall(self.record),
            await self.redis.get(self.result),
            _ttl_state(await self.redis.pttl(self.record)),
            # A refused or repeated failed settle logs no failure either.
            await self.redis.xlen(self.docket.keys.failures),
        )


def _ttl_state(pttl: int) -> str:
    # The remaining time ticks down between two reads, so compare what kind of expiry the
    # record has; a settle that re-expired it would also show up in its fields.
    return "no-ttl" if pttl == -1 else "missing" if pttl == -2 else "expiring"


@pytest.fixture
async def scene(docket: Docket, redis_client: Redis) -> Scene:
    """A read the message and started it; B took the message over and started it too."""
    execution = await docket.add(noop)("x")
    scene = Scene(docket, redis_client, execution)
    await scene.read_as("A")
    assert isinstance((await scene.claim("A", redelivered=False))[0], bytes)
    await scene.take_over_as("B")
    assert isinstance((await scene.claim("B", redelivered=True))[0], bytes)
    entry = await scene.pel_entry()
    assert entry is not None and (entry["consumer"], entry["times_delivered"]) == (b"B", 2)
    record = await redis_client.hgetall(scene.record)
    assert record[b"state"] == b"running" and record[b"worker"] == b"B"
    return scene


@pytest.mark.parametrize("state", ["completed", "failed", "cancelled", "ack"])
@pytest.mark.parametrize(
    ("worker", "deliveries"),
    [("A", 1), ("A", 2), ("B", 1)],
    ids=["old-owner", "old-owner-with-current-count", "owner-with-stale-count"],
)
async def test_settle_by_a_worker_that_lost_the_lease_neither_acks_nor_changes_the_record(
    scene: Scene, worker: str, deliveries: int, state: str
) -> None:
    before = await scene.snapshot()
    assert await scene.settle(worker, deliveries, state) == [0]
    assert await scene.snapshot() == before

    # The real owner still settles it.
    assert await scene.settle("B", 2) == [1]
    assert await scene.pel_entry() is None
    assert await scene.redis.xrange(scene.docket.keys.stream, scene.mid, scene.mid) == []
    record = await scene.redis.hgetall(scene.record)
    assert record[b"state"] == b"completed" and record[b"worker"] == b"B"


async def test_settle_of_a_message_already_settled_by_its_new_owner_changes_nothing(
    scene: Scene,
) -> None:
    assert await scene.settle("B", 2) == [1]
    before = await scene.snapshot()
    assert await scene.settle("A", 1, "failed") == [0]
    assert await scene.snapshot() == before
    record = await scene.redis.hgetall(scene.record)
    assert record[b"state"] == b"completed"
    assert record.get(b"error", b"") == b""


@pytest.mark.parametrize("state", ["completed", "failed", "cancelled"])
async def test_a_settle_sent_again_after_its_reply_was_lost_is_not_a_lost_lease(
    docket: Docket, redis_client: Redis, state: str
) -> None:
    """The lean connection resends a call whose connection dropped; when the first one
    had settled the run, the second reports it settled before (2), not a lost lease (0),
    and changes nothing."""
    execution = await docket.add(noop)("x")
    scene = Scene(docket, redis_client, execution)
    await scene.read_as("A")
    assert isinstance((await scene.claim("A", redelivered=False))[0], bytes)
    assert await scene.settle("A", 1, state) == [1]
    before = await scene.snapshot()

    assert await scene.settle("A", 1, state) == [2]

    assert await scene.snapshot() == before
    record = await redis_client.hgetall(scene.record)
    assert record[b"state"] == state.encode() and record[b"worker"] == b"A"


@pytest.mark.parametrize(
    ("worker", "deliveries"),
    [("A", 1), ("A", 2), ("B", 1)],
    ids=["old-owner", "old-owner-with-current-count", "owner-with-stale-count"],
)
async def test_renew_by_a_worker_that_lost_the_lease_does_not_take_the_message_back(
    scene: Scene, worker: str, deliveries: int
) -> None:
    await asyncio.sleep(0.15)
    assert await scene.renew(worker, deliveries) == [scene.mid]
    entry = await scene.pel_entry()
    assert entry is not None
    assert (entry["consumer"], entry["times_delivered"]) == (b"B", 2)
    assert entry["time_since_delivered"] >= 150, "a lost lease was renewed anyway"


async def test_renew_by_the_owner_keeps_the_delivery_count(scene: Scene) -> None:
    await asyncio.sleep(0.15)
    assert await scene.renew("B", 2) == []
    entry = await scene.pel_entry()
    assert entry is not None
    assert (entry["consumer"], entry["times_delivered"]) == (b"B", 2)
    assert entry["time_since_delivered"] < 150, "the lease was not renewed"


async def test_renew_of_a_message_that_was_settled_reports_it_lost(scene: Scene) -> None:
    assert await scene.settle("B", 2) == [1]
    assert await scene.renew("B", 2) == [scene.mid]
    assert await scene.pel_entry() is None


@pytest.mark.parametrize("redelivered", [False, True], ids=["first-delivery", "redelivery"])
async def test_late_claim_by_a_worker_that_lost_the_message_leaves_the_new_owners_run_alone(
    scene: Scene, redelivered: bool
) -> None:
    # A read (or reclaimed) the message, then stalled before its claim script ran; B
    # took the message over and started it. A's late claim must neither ack/delete B's
    # delivery nor take the record over.
    before = await scene.snapshot()
    # -1: "not yours any more", left alone (0 would mean a stale copy acked away).
    assert await scene.claim("A", redelivered=redelivered) == [-1]
    assert await scene.snapshot() == before


# --- a late claim takes a fresh lease ---------------------------------------------------------

LATE = 0.3  # seconds between the read and its claim: longer than the lease below
LATE_LEASE_MS = 200


async def _claim_delivered_as(scene: Scene, worker: str) -> list[Any]:
    """take.lua's claim of what a blocking read delivered (scan, no read of its own)."""
    keys = scene.docket.keys
    _, _, _, entries = await scene.docket.engine.scripts.send(
        scripts.Take(
            group=GROUP,
            worker=worker,
            count=10,
            read=0,
            events_prefix=keys.events_prefix,
            record_prefix=keys.record_prefix,
            levels=[
                scripts.TakeLevel(stream=stream, watermark="0-0", scan=1, reserve=0)
                for stream in keys.streams
            ],
        )
    )
    return [started for _, _, _, started in entries]


async def _reclaim_as(scene: Scene, worker: str) -> list[Any]:
    keys = scene.docket.keys
    _, claimed, _, _ = await scene.docket.engine.scripts.send(
        scripts.Reclaim(
            stream=keys.stream,
            dead_letters=keys.dead_letters,
            group=GROUP,
            worker=worker,
            min_idle_ms=LATE_LEASE_MS,
            cursor="0-0",
            count=10,
            max_deliveries=5,
            record_prefix=keys.record_prefix,
            events_prefix=keys.events_prefix,
            ttl=60.0,
        )
    )
    return list(claimed)


@pytest.mark.parametrize("claim_by", ["claim", "claim_delivered"])
async def test_a_late_claim_starts_the_run_with_a_fresh_lease(
    docket: Docket, redis_client: Redis, claim_by: str
) -> None:
    # A read the message, then its claim was held up past the redelivery timeout (its
    # first claim lost with a dropped connection, say). When the claim does come, the run
    # it starts must hold a whole lease: B's redelivery sweep, right after, must not take
    # the message over and start the same task a second time.
    execution = await docket.add(noop)("late")
    scene = Scene(docket, redis_client, execution)
    await scene.read_as("A")
    await asyncio.sleep(LATE)
    if claim_by == "claim":
        started = await scene.claim("A", redelivered=False)
    else:
        started = await _claim_delivered_as(scene, "A")
    assert len(started) == 1 and started[0] not in (0, -1, None, False)

    assert await _reclaim_as(scene, "B") == []
    entry = await scene.pel_entry()
    assert entry is not None and (entry["consumer"], entry["times_delivered"]) == (b"A", 1)
    assert entry["time_since_delivered"] < LATE_LEASE_MS
    record = await redis_client.hgetall(scene.record)
    assert (record[b"state"], record[b"worker"]) == (b"running", b"A")

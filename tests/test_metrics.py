"""Metrics: the counters, histograms and gauges of the meter ``docket`` with their
labels, read through the OpenTelemetry SDK's in-memory reader, and the same metrics
served as Prometheus text by ``Worker.run(metrics_port=...)``, scraped over HTTP.

A process can set its global MeterProvider once, so the first test here installs one
(with the in-memory reader and docket's Prometheus reader) and later tests reuse it.
Counters are cumulative for the whole process; each test reads only its own docket's
series (the docket name is unique per test).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from _helpers import fast_worker, wait_for
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)

from docket import metrics_server
from docket.dependencies import ConcurrencyLimit, Perpetual, Retry
from docket.docket import Docket
from docket.worker import Worker

ROOT = Path(__file__).resolve().parent.parent


def _reader() -> InMemoryMetricReader:
    """The process's in-memory reader, installed with an SDK provider on first use."""
    provider: Any = metrics.get_meter_provider()
    reader: InMemoryMetricReader | None = getattr(provider, "_docket_test_reader", None)
    if reader is not None:
        return reader
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader, metrics_server.metrics_reader()])
    metrics.set_meter_provider(provider)
    assert metrics.get_meter_provider() is provider, "another MeterProvider is already set"
    provider._docket_test_reader = reader
    return reader


class Readings:
    """One docket's data points, freshly collected on every call."""

    def __init__(self, reader: InMemoryMetricReader, docket: Docket) -> None:
        self.reader = reader
        self.docket = docket

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        if (point.attributes or {}).get("docket.name") == self.docket.name:
                            found.append(point)
        return found

    def matching(self, name: str, labels: dict[str, str]) -> list[Any]:
        return [
            point
            for point in self.points(name)
            if all((point.attributes or {}).get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        """A counter's or gauge's value summed over matching series (``task=``,
        ``worker=`` select by ``docket.task`` and ``docket.worker``); 0 when absent."""
        total = 0.0
        for point in self.matching(name, {f"docket.{k}": v for k, v in labels.items()}):
            assert isinstance(point, NumberDataPoint)
            total += point.value
        return total

    def histogram(self, name: str, **labels: str) -> HistogramDataPoint:
        (point,) = self.matching(name, {f"docket.{k}": v for k, v in labels.items()})
        assert isinstance(point, HistogramDataPoint)
        return point

    def labels_of(self, name: str) -> list[dict[str, Any]]:
        return [dict(point.attributes or {}) for point in self.points(name)]


@pytest.fixture
def readings(docket: Docket) -> Readings:
    return Readings(_reader(), docket)


# -- counters and histograms -------------------------------------------------------------


async def test_runs_are_counted_per_task_with_their_labels(
    docket: Docket, readings: Readings
) -> None:
    async def good() -> None: ...

    async def bad() -> None:
        raise ValueError("no")

    await docket.add(good)()
    await docket.add(good)()
    await docket.add(bad)()
    async with fast_worker(docket, name="w-count") as worker:
        await worker.run_until_finished()

    worker_labels = {"docket.name": docket.name, "docket.worker": "w-count"}
    assert {"docket.task": "good", **worker_labels} in readings.labels_of("docket_tasks_started")
    for task, runs, ok, failed in (("good", 2, 2, 0), ("bad", 1, 0, 1)):
        assert readings.value("docket_tasks_started", task=task, worker="w-count") == runs
        assert readings.value("docket_tasks_completed", task=task) == runs
        assert readings.value("docket_tasks_succeeded", task=task) == ok
        assert readings.value("docket_tasks_failed", task=task) == failed
        assert readings.value("docket_tasks_redelivered", task=task) == 0
        assert readings.histogram("docket_task_duration", task=task).count == runs
        assert readings.histogram("docket_task_punctuality", task=task).count == runs
        # Producer side: docket and task, no worker.
        assert readings.value("docket_tasks_added", task=task) == runs
        assert readings.value("docket_tasks_scheduled", task=task) == runs
        (added,) = readings.matching("docket_tasks_added", {"docket.task": task})
        assert dict(added.attributes) == {"docket.name": docket.name, "docket.task": task}
    duration = readings.histogram("docket_task_duration", task="good")
    assert 0 <= duration.sum < 5
    assert duration.explicit_bounds[0] == 0.001, "buckets in seconds"


async def test_retries_and_perpetuations_are_counted(docket: Docket, readings: Readings) -> None:
    async def always_fails(retry: Retry = Retry(attempts=3)) -> None:
        raise RuntimeError("still no")

    runs = 0

    async def thrice(perpetual: Perpetual = Perpetual(every=timedelta(0))) -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            perpetual.cancel()

    await docket.add(always_fails)()
    await docket.add(thrice, key="thrice")()
    async with fast_worker(docket) as worker:
        await worker.run_until_finished()

    assert readings.value("docket_tasks_started", task="always_fails") == 3
    assert readings.value("docket_tasks_failed", task="always_fails") == 3
    assert readings.value("docket_tasks_retried", task="always_fails") == 2
    assert readings.value("docket_tasks_started", task="thrice") == 3
    assert readings.value("docket_tasks_succeeded", task="thrice") == 3
    assert readings.value("docket_tasks_perpetuated", task="thrice") == 2


async def test_replace_cancel_clear_and_strikes_are_counted(
    docket: Docket, readings: Readings
) -> None:
    async def job(n: int) -> None: ...

    later = datetime.now(UTC) + timedelta(hours=1)
    await docket.add(job, when=later, key="a")(1)
    await docket.add(job, when=later, key="a")(1)  # already scheduled: added, not scheduled
    await docket.replace(job, when=later, key="a")(2)
    await docket.cancel("a")
    await docket.cancel("a")  # nothing left to cancel
    await docket.add_many([docket.call(job, when=later)(n) for n in range(3)])
    assert await docket.clear() == 3
    await docket.strike(job, "n", "==", 13)
    await docket.add(job)(13)

    assert readings.value("docket_tasks_added", task="job") == 2 + 3
    assert readings.value("docket_tasks_replaced", task="job") == 1
    assert readings.value("docket_tasks_scheduled", task="job") == 1 + 1 + 3
    # The replace counts as a cancel of what it replaced, as the released docket does.
    assert readings.value("docket_tasks_cancelled") == 1 + 1 + 3
    assert readings.value("docket_tasks_stricken", task="job") == 1


async def test_a_strike_that_reaches_a_queued_task_is_counted_by_the_worker(
    docket: Docket, readings: Readings
) -> None:
    async def doomed() -> None: ...

    await docket.add(doomed)()
    await docket.strike(doomed)
    async with fast_worker(docket, name="w-strike") as worker:
        await worker.run_until_finished()

    assert readings.value("docket_tasks_stricken", task="doomed", worker="w-strike") == 1
    assert readings.value("docket_tasks_started", task="doomed") == 0


async def test_a_perpetuation_overridden_by_a_replace_is_superseded(
    docket: Docket, readings: Readings
) -> None:
    async def chained(perpetual: Perpetual = Perpetual(every=timedelta(0))) -> None:
        # Someone reschedules the key while this run goes: their schedule wins.
        await docket.replace(
            chained, when=datetime.now(UTC) + timedelta(milliseconds=50), key="chain"
        )()

    await docket.add(chained, key="chain")()
    async with fast_worker(docket) as worker:
        # The second (last allowed) run schedules no successor, and the replace its body
        # makes is withdrawn when it ends.
        await worker.run_at_most({"chain": 2})

    assert readings.value("docket_tasks_superseded", task="chained") == 1
    assert readings.value("docket_tasks_perpetuated", task="chained") == 0


async def test_dead_lettered_messages_are_counted(docket: Docket, readings: Readings) -> None:
    async with docket.redis() as redis:
        await redis.xadd(docket.keys.stream, {"key": "broken", "function": "nothing"})
    async with fast_worker(docket, name="w-dead") as worker:
        await worker.run_until_finished()

    assert readings.value("docket_dead_lettered", worker="w-dead") == 1


async def test_automatic_tasks_are_not_recounted_on_every_heartbeat(
    redis_url: str, docket_name: str
) -> None:
    async def tick(
        perpetual: Perpetual = Perpetual(every=timedelta(hours=1), automatic=True),
    ) -> None: ...

    async with Docket(
        name=docket_name, url=redis_url, heartbeat_interval=timedelta(milliseconds=20)
    ) as docket:
        docket.register(tick)
        readings = Readings(_reader(), docket)
        async with fast_worker(docket) as worker:
            task = asyncio.create_task(worker.run_forever())
            await wait_for(
                lambda: readings.value("docket_tasks_started", task="tick") == 1,
                what="the first run",
            )
            await asyncio.sleep(0.2)  # ten heartbeats, each finding the task in place
            worker.stop()
            await task
        assert readings.value("docket_tasks_added", task="tick") == 1
        assert readings.value("docket_tasks_scheduled", task="tick") == 1
        await docket.cancel("tick")


# -- gauges ------------------------------------------------------------------------------


async def test_gauges_report_running_queue_and_schedule_depth(
    redis_url: str, docket_name: str
) -> None:
    release = asyncio.Event()

    async def hold() -> None:
        await release.wait()

    async with Docket(
        name=docket_name, url=redis_url, heartbeat_interval=timedelta(milliseconds=20)
    ) as docket:
        readings = Readings(_reader(), docket)
        for n in range(3):
            await docket.add(hold, key=f"now-{n}")()
        for n in range(2):
            await docket.add(hold, key=f"later-{n}", when=datetime.now(UTC) + timedelta(hours=1))()
        async with fast_worker(docket, name="w-gauge", concurrency=1) as worker:
            task = asyncio.create_task(worker.run_forever())

            def sampled() -> bool:
                return (
                    readings.value("docket_tasks_running", task="hold", worker="w-gauge") == 1
                    and readings.value("docket_queue_depth") == 2
                    and readings.value("docket_schedule_depth") == 2
                )

            await wait_for(sampled, what="one running, two queued, two scheduled")
            (depth,) = readings.points("docket_queue_depth")
            assert dict(depth.attributes) == {"docket.name": docket.name}
            # Collected off the event loop's thread: the callbacks only read samples.
            await asyncio.to_thread(readings.points, "docket_tasks_running")

            release.set()
            await docket.cancel("later-0")
            await docket.cancel("later-1")
            await wait_for(
                lambda: (
                    readings.value("docket_tasks_running", task="hold") == 0
                    and readings.value("docket_queue_depth") == 0
                    and readings.value("docket_schedule_depth") == 0
                ),
                what="everything drained",
            )
            worker.stop()
            await task
        # An up-down counter (as released): a worker that left reports nothing running.
        assert all(point.value == 0 for point in readings.points("docket_tasks_running"))


# -- Prometheus --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        body: bytes = response.read()
        return body.decode()


async def scrape_until(port: int, pattern: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        try:
            text = await asyncio.to_thread(scrape, port)
        except (urllib.error.URLError, ConnectionError):
            text = ""
        if re.search(pattern, text, re.MULTILINE):
            return text
        await asyncio.sleep(0.1)
    raise AssertionError(f"no line matching {pattern!r} in:\n{text}")


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample ``name`` whose labels include ``labels``."""
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(
            re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', match.group(2) or "")
        )
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    raise AssertionError(f"no sample {name}{labels} in:\n{text}")


async def test_worker_run_serves_prometheus_metrics(
    docket: Docket, redis_url: str, readings: Readings
) -> None:
    port = free_port()
    run = asyncio.create_task(
        Worker.run(
            docket_name=docket.name,
            url=redis_url,
            name="w-prom",
            metrics_port=port,
            minimum_check_interval=timedelta(milliseconds=5),
        )
    )
    try:
        await docket.add("trace")("hello")
        await docket.add("fail")("oops")
        labels = {"docket_name": docket.name, "docket_worker": "w-prom"}
        text = await scrape_until(
            port,
            rf'^docket_tasks_completed_total{{.*docket_name="{docket.name}".*docket_task="fail"',
        )
        assert sample(text, "docket_tasks_started_total", docket_task="trace", **labels) == 1
        assert sample(text, "docket_tasks_succeeded_total", docket_task="trace", **labels) == 1
        # The built-in fail task retries once, so this scrape may have seen one or both.
        assert sample(text, "docket_tasks_failed_total", docket_task="fail", **labels) >= 1
        assert (
            sample(text, "docket_tasks_added_total", docket_task="trace", docket_name=docket.name)
            == 1
        )
        assert (
            sample(text, "docket_task_duration_seconds_count", docket_task="trace", **labels) == 1
        )
        assert (
            sample(
                text,
                "docket_task_duration_seconds_bucket",
                docket_task="trace",
                le="+Inf",
                **labels,
            )
            == 1
        )
        assert (
            sample(text, "docket_task_punctuality_seconds_count", docket_task="trace", **labels)
            == 1
        )
        assert sample(text, "docket_tasks_running", docket_task="trace", **labels) == 0
        assert "# TYPE docket_tasks_started_total counter" in text
        assert "# TYPE docket_task_duration_seconds histogram" in text
        assert "# TYPE docket_tasks_running gauge" in text
    finally:
        run.cancel()  # a cancelled worker stops and returns, as released
        await run
    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(scrape, port)


async def test_a_missing_metrics_extra_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(
        metrics_server.MetricsUnavailable, match=r"pip install 'pydocket\[metrics\]'"
    ):
        await Worker.run(url=redis_url, metrics_port=free_port())


async def test_a_taken_metrics_port_is_a_clear_error(redis_url: str) -> None:
    _reader()
    with socket.socket() as squatter:
        squatter.bind(("0.0.0.0", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(OSError, match=f"Cannot serve metrics on 0.0.0.0:{port}"):
            await Worker.run(url=redis_url, metrics_port=port)


def _python(code: str, **kwargs: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


async def test_a_worker_process_installs_its_own_meter_provider(
    docket: Docket, redis_url: str
) -> None:
    """The CLI path: a fresh process with no MeterProvider; SIGTERM drains and exits 0."""
    port = free_port()
    process = _python(
        f"""
        import asyncio
        from datetime import timedelta
        from docket.worker import Worker
        asyncio.run(Worker.run(
            docket_name={docket.name!r}, url={redis_url!r}, name="w-proc",
            metrics_port={port}, minimum_check_interval=timedelta(milliseconds=5),
        ))
        """
    )
    try:
        await docket.add("trace")("from the test")
        text = await scrape_until(port, r'^docket_tasks_succeeded_total{.*docket_task="trace"')
        assert (
            sample(
                text,
                "docket_tasks_succeeded_total",
                docket_name=docket.name,
                docket_task="trace",
                docket_worker="w-proc",
            )
            == 1
        )
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(process.communicate, timeout=30)
        assert process.returncode == 0, output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_process_with_its_own_meter_provider_must_add_dockets_reader() -> None:
    process = _python(
        """
        import asyncio
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from docket.metrics_server import MetricsUnavailable
        from docket.worker import Worker
        metrics.set_meter_provider(MeterProvider())
        try:
            asyncio.run(Worker.run(url="redis://127.0.0.1:1/0", metrics_port=0))
        except MetricsUnavailable as error:
            print("refused:", error)
        """
    )
    output, _ = process.communicate(timeout=60)
    assert "refused: This process already has an OpenTelemetry MeterProvider" in output
    assert "metrics_reader()" in output


async def test_sampling_depths_never_fails_the_heartbeat(
    docket: Docket, readings: Readings
) -> None:
    """After a Redis restart the consumer group is gone until the read loop recreates it;
    the gauge sample must not turn that into a failed heartbeat."""
    async with fast_worker(docket) as worker:
        await docket.add("trace", when=datetime.now(UTC) + timedelta(hours=1))("later")
        async with docket.redis() as redis:
            await redis.xgroup_destroy(docket.keys.stream, "docket-workers")
        await worker._health.sample_depths()
        assert readings.value("docket_schedule_depth") == 1
        assert readings.value("docket_queue_depth") == 0


async def test_runs_an_admission_gate_turns_away_are_not_started(
    docket: Docket, readings: Readings
) -> None:
    """A run parked behind a ConcurrencyLimit counts once, when it is finally admitted."""
    release = asyncio.Event()

    async def exclusive(
        key: str, hold: bool, limit: ConcurrencyLimit = ConcurrencyLimit("key", 1)
    ) -> None:
        if hold:
            await asyncio.wait_for(release.wait(), 10)

    holder = await docket.add(exclusive)("k", True)
    async with fast_worker(docket) as worker:
        task = asyncio.create_task(worker.run_until_finished())
        await wait_for(
            lambda: readings.value("docket_tasks_started", task="exclusive") == 1, what="the holder"
        )
        await docket.add(exclusive)("k", False)
        await asyncio.sleep(0.3)  # claimed, turned away, parked
        assert readings.value("docket_tasks_started", task="exclusive") == 1
        release.set()
        await asyncio.wait_for(task, 10)
    assert holder.key
    assert readings.value("docket_tasks_started", task="exclusive") == 2
    assert readings.value("docket_tasks_completed", task="exclusive") == 2
    assert readings.value("docket_tasks_succeeded", task="exclusive") == 2
    assert readings.histogram("docket_task_duration", task="exclusive").count == 2


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("delete", "no task record"),
        ("newer-generation", "superseded by a newer schedule"),
        ("cancelled", "its run is no longer waiting to start"),
    ],
)
async def test_a_stale_copy_dropped_by_a_worker_is_logged_and_counted_with_its_reason(
    docket: Docket,
    readings: Readings,
    redis_client: Any,
    caplog: pytest.LogCaptureFixture,
    tamper: str,
    reason: str,
) -> None:
    # A well-formed entry whose record says it must not run: dropped, but never silently,
    # so an operator can tell a superseded copy from a task whose record was lost.
    async def job() -> None:
        raise AssertionError("a stale copy ran")

    execution = await docket.add(job, key="stale-one")()
    record = docket.keys.record(execution.key)
    if tamper == "delete":
        await redis_client.delete(record)
    elif tamper == "newer-generation":
        await redis_client.hset(record, "gen", str(execution.generation + 1))
    else:
        await redis_client.hset(record, "state", "cancelled")

    with caplog.at_level("INFO", logger="docket.worker"):
        async with fast_worker(docket) as worker:
            await worker.run_until_finished()

    dropped = [r.getMessage() for r in caplog.records if "stale copy" in r.getMessage()]
    assert len(dropped) == 1
    assert "'stale-one'" in dropped[0] and reason in dropped[0]
    (series,) = readings.matching("docket_stale_messages_dropped", {"docket.task": "job"})
    assert series.value == 1 and series.attributes["docket.reason"].startswith(reason)
    assert readings.value("docket_tasks_superseded", task="job") == 1
    assert await redis_client.xlen(docket.keys.stream) == 0

"""OpenTelemetry spans: producer spans for every change, a consumer span per run linked to
its producer (also when the run was scheduled for later), errors, and internal polling
left untraced unless asked for.

A process can set its global TracerProvider once, so the first test here installs an SDK
provider with an in-memory exporter and every later test (in this module or another)
reuses it; each test clears the exporter first and looks only at its own docket's spans.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from _helpers import span_exporter
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from docket import instrumentation
from docket._worker_reading import WireReader
from docket.dependencies import Retry
from docket.docket import Docket
from docket.execution import ExecutionState
from docket.worker import Worker


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = span_exporter()
    exporter.clear()
    yield exporter
    exporter.clear()


def of(exporter: InMemorySpanExporter, docket: Docket) -> list[ReadableSpan]:
    """The finished spans that belong to ``docket``."""
    return [
        span
        for span in exporter.get_finished_spans()
        if (span.attributes or {}).get("docket.name") == docket.name
    ]


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    """The spans called ``name`` in the order they started. The exporter has them in the
    order they ended: a retry's run can end before the failed run's span closes."""
    return sorted((span for span in spans if span.name == name), key=lambda s: s.start_time or 0)


def fast_worker(docket: Docket, **kwargs: Any) -> Worker:
    return Worker(
        docket,
        minimum_check_interval=timedelta(milliseconds=5),
        scheduling_resolution=timedelta(milliseconds=5),
        **kwargs,
    )


def linked_to(consumer: ReadableSpan, producer: ReadableSpan) -> bool:
    assert producer.context is not None
    return any(
        link.context.span_id == producer.context.span_id
        and link.context.trace_id == producer.context.trace_id
        for link in consumer.links
    )


# -- producer spans ----------------------------------------------------------------------


async def test_producer_spans_for_every_change(docket: Docket, spans: InMemorySpanExporter) -> None:
    async def greet(name: str) -> None: ...

    later = datetime.now(UTC) + timedelta(hours=1)
    await docket.add(greet, key="g-1", when=later)("ada")
    await docket.replace(greet, when=later, key="g-1")("grace")
    await docket.cancel("g-1")
    await docket.add_many([docket.call(greet, when=later)("x") for _ in range(3)])
    await docket.strike(greet, "name", "==", "mallory")
    await docket.restore(greet, "name", "==", "mallory")
    assert await docket.clear() == 3

    produced = of(spans, docket)
    assert [span.name for span in produced] == [
        "docket.add",
        "docket.replace",
        "docket.cancel",
        "docket.add_many",
        "docket.strike",
        "docket.restore",
        "docket.clear",
    ]
    assert all(span.kind is SpanKind.PRODUCER for span in produced)
    add, replace, cancel, many, strike, restore, clear = produced
    for span in (add, replace):
        attributes = dict(span.attributes or {})
        assert attributes["docket.task"] == "greet"
        assert attributes["docket.key"] == "g-1"
        assert attributes["docket.disposition"] == "scheduled"
        assert attributes["docket.when"] == later.isoformat()
    assert dict(cancel.attributes or {})["docket.key"] == "g-1"
    assert dict(cancel.attributes or {})["docket.cancelled"] is True
    assert dict(many.attributes or {})["docket.batch.count"] == 3
    for span in (strike, restore):
        attributes = dict(span.attributes or {})
        assert attributes["docket.task"] == "greet"
        assert attributes["docket.strike.parameter"] == "name"
        assert attributes["docket.strike.operator"] == "=="
        assert attributes["docket.strike.value"] == "'mallory'"
    assert dict(clear.attributes or {})["docket.cleared"] == 3


async def test_a_struck_add_still_gets_its_span(
    docket: Docket, spans: InMemorySpanExporter
) -> None:
    async def risky() -> None: ...

    await docket.strike(risky)
    execution = await docket.add(risky, key="r-1")()
    assert execution.disposition.value == "struck"
    (add,) = named(of(spans, docket), "docket.add")
    assert dict(add.attributes or {})["docket.disposition"] == "struck"


# -- consumer spans ----------------------------------------------------------------------


async def test_a_run_gets_a_consumer_span_linked_to_its_producer(
    docket: Docket, spans: InMemorySpanExporter
) -> None:
    async def greet(name: str) -> None: ...

    await docket.add(greet, key="now-1")("ada")
    async with fast_worker(docket, name="w-trace") as worker:
        await worker.run_until_finished()

    produced = of(spans, docket)
    (producer,) = named(produced, "docket.add")
    (consumer,) = named(produced, "greet")
    assert consumer.kind is SpanKind.CONSUMER
    assert linked_to(consumer, producer)
    attributes = dict(consumer.attributes or {})
    assert attributes == {
        "docket.name": docket.name,
        "docket.task": "greet",
        "docket.key": "now-1",
        "docket.attempt": 1,
        "docket.when": attributes["docket.when"],
        "code.function.name": "greet",
        "docket.worker": "w-trace",
    }
    assert datetime.fromisoformat(str(attributes["docket.when"])).tzinfo is not None
    # A run that succeeded says so, as the released docket's spans do.
    assert consumer.status.status_code is StatusCode.OK


async def test_a_task_scheduled_for_later_keeps_its_link(
    docket: Docket, spans: InMemorySpanExporter
) -> None:
    """The trace context travels in the record while the task waits in the schedule and
    is copied into the stream entry when it falls due."""

    async def later() -> None: ...

    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        execution = await docket.add(
            later, key="later-1", when=datetime.now(UTC) + timedelta(milliseconds=300)
        )()
    assert execution.state is ExecutionState.SCHEDULED, "precondition: held in the schedule"
    async with docket.redis() as redis:
        assert await redis.hget(docket.keys.record("later-1"), "trace")

    async with fast_worker(docket) as worker:
        await worker.run_until_finished()

    produced = of(spans, docket)
    (producer,) = named(produced, "docket.add")
    (consumer,) = named(produced, "later")
    assert producer.parent is not None
    assert producer.parent.span_id == request.get_span_context().span_id
    assert linked_to(consumer, producer)
    # A new trace of its own, linked rather than parented: the run may come much later.
    assert consumer.context is not None and producer.context is not None
    assert consumer.context.trace_id != producer.context.trace_id


async def test_a_failed_run_has_error_status_and_the_exception(
    docket: Docket, spans: InMemorySpanExporter
) -> None:
    async def explode() -> None:
        raise ValueError("boom")

    await docket.add(explode, key="boom-1")()
    async with fast_worker(docket) as worker:
        await worker.run_until_finished()

    (consumer,) = named(of(spans, docket), "explode")
    assert consumer.status.status_code is StatusCode.ERROR
    assert consumer.status.description == "boom"
    (event,) = [event for event in consumer.events if event.name == "exception"]
    attributes = dict(event.attributes or {})
    assert attributes["exception.type"] == "ValueError"
    assert attributes["exception.message"] == "boom"


async def test_a_retry_links_to_the_run_that_failed(
    docket: Docket, spans: InMemorySpanExporter
) -> None:
    attempts = 0

    async def flaky(retry: Retry = Retry(attempts=2)) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("first time unlucky")

    await docket.add(flaky, key="flaky-1")()
    async with fast_worker(docket) as worker:
        await worker.run_until_finished()

    first, second = named(of(spans, docket), "flaky")
    assert dict(first.attributes or {})["docket.attempt"] == 1
    assert dict(second.attributes or {})["docket.attempt"] == 2
    assert first.status.status_code is StatusCode.ERROR
    assert second.status.status_code is StatusCode.OK
    assert linked_to(second, first)


async def test_spans_inside_a_task_are_children_of_its_consumer_span(
    docket: Docket, spans: InMemorySpanExporter
) -> None:
    async def outer() -> None:
        with trace.get_tracer("test").start_as_current_span(
            "inner", attributes={"docket.name": docket.name}
        ):
            # Task code is never under the suppression meant for docket's polling.
            assert not instrumentation.suppressed()

    await docket.add(outer)()
    async with fast_worker(docket) as worker:
        await worker.run_until_finished()

    produced = of(spans, docket)
    (consumer,) = named(produced, "outer")
    (inner,) = named(produced, "inner")
    assert inner.parent is not None and consumer.context is not None
    assert inner.parent.span_id == consumer.context.span_id


# -- internal operations -----------------------------------------------------------------

INTERNAL = {
    "docket.read",
    "docket.claim",
    "docket.settle",
    "docket.move_due",
    "docket.heartbeat",
    "docket.reclaim",
    "docket.listen",
    "docket.renew",
    "docket.finished",
    "docket.strikes",
    "docket.schedule_automatic",
}


async def test_internal_polling_is_not_traced_by_default(
    docket: Docket, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No spans of docket's own, and instrumentation (an instrumented Redis client, say)
    is told to stay quiet for the polling calls."""
    seen: dict[str, bool] = {}
    # Every script call goes through Scripts._run (on the lean connection, where there is
    # one), whichever way it was made.
    original_run = docket.engine.scripts._run

    def spy_run(name: str, *args: Any) -> Any:
        if name in ("heartbeat", "move_due", "claim", "settle"):
            seen[name] = instrumentation.suppressed()
        return original_run(name, *args)

    # On a real server a worker reads and claims in one script call.
    original_read_and_claim = WireReader.read

    def spy_read_and_claim(self: WireReader, *args: Any) -> Any:
        seen["claim"] = instrumentation.suppressed()
        return original_read_and_claim(self, *args)

    monkeypatch.setattr(docket.engine.scripts, "_run", spy_run)
    monkeypatch.setattr(WireReader, "read", spy_read_and_claim)

    async def work() -> None: ...

    await docket.add(work, when=datetime.now(UTC) + timedelta(milliseconds=50))()
    async with fast_worker(docket) as worker:
        await worker.run_until_finished()
        await asyncio.sleep(0.05)

    names = {span.name for span in of(spans, docket)}
    assert names == {"docket.add", "work"}
    assert seen == {"heartbeat": True, "move_due": True, "claim": True, "settle": True}


@pytest.mark.parametrize("on", ["worker", "docket"])
async def test_internal_instrumentation_traces_the_polling(
    docket: Docket, spans: InMemorySpanExporter, on: str
) -> None:
    async def work() -> None: ...

    if on == "docket":
        docket.enable_internal_instrumentation = True
    await docket.add(work, when=datetime.now(UTC) + timedelta(milliseconds=50))()
    async with fast_worker(docket, enable_internal_instrumentation=on == "worker") as worker:
        await worker.run_until_finished()

    produced = of(spans, docket)
    internal = {span.name for span in produced if span.kind is SpanKind.INTERNAL}
    assert {"docket.read", "docket.settle", "docket.move_due"} <= internal
    # On a real server the read claims what it reads in the same script call.
    assert ("docket.claim" in internal) is docket.engine.connection.is_memory
    assert internal <= INTERNAL
    (consumer,) = named(produced, "work")
    # The run is not a child of the claim that started it.
    assert consumer.parent is None or consumer.parent.span_id not in {
        span.context.span_id for span in produced if span.kind is SpanKind.INTERNAL and span.context
    }

"""Poison messages: garbage in the task stream never crashes or stalls a worker.

Every case writes a bad entry straight into the docket's stream with ``XADD``, between
two good tasks added the normal way, and only then starts a worker, so all three arrive
in the same ``XREADGROUP`` batch. Then, for every case:

- the worker's run loop is still running, and keeps taking new work afterwards;
- both good neighbours ran;
- the bad entry is in ``{name}:dead-letters`` with its raw fields (``field:<name>``), a
  ``reason`` naming the problem, its delivery count and the id it had;
- it is gone from the task stream and from the consumer group's PEL;
- the worker logged it.

(docs/reliability.md, "Poison messages and the dead-letter stream".)
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import cloudpickle  # type: ignore[import-untyped]
import pytest
from _helpers import running_throughout
from redis.asyncio import Redis

import docket.worker as worker_module
from docket import Docket, ExecutionState, Worker, serialization
from docket._redis.keys import GROUP

pytestmark = pytest.mark.timeout(60)

REQUIRED_FIELDS = ("key", "gen", "function", "when", "attempt", "payload")
MISSING = object()

FieldValue = str | bytes
Fields = dict[str, FieldValue]


@pytest.fixture(autouse=True)
def _quick_stop_and_no_ambient_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # run_forever() blocks in XREADGROUP for BLOCK_SECONDS at a time, so stop() only
    # takes effect after that; a short block keeps each test quick. And no signing key
    # from the environment: these dockets are meant to be unsigned.
    monkeypatch.setattr(worker_module, "BLOCK_SECONDS", 0.05)
    monkeypatch.delenv("DOCKET_SIGNING_KEY", raising=False)


def _as_bytes(value: FieldValue) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def pickled_call(*args: Any, **kwargs: Any) -> bytes:
    return serialization.dump_call(serialization.get_serializer("pickle"), args, kwargs)


def entry(**overrides: object) -> Fields:
    """The fields schedule.lua writes, for a call of ``good("poison")``, with overrides
    (``MISSING`` drops a field). No task record goes with it."""
    fields: dict[str, object] = {
        "key": f"poison-{uuid.uuid4().hex}",
        "gen": "1",
        "function": "good",
        "when": f"{time.time():.6f}",
        "attempt": "1",
        "payload": pickled_call("poison"),
        "sig": "",
        "trace": "",
        "ser": "pickle",
    }
    fields.update(overrides)
    return {k: v for k, v in fields.items() if v is not MISSING}  # type: ignore[misc]


class _Canary:
    """Unpickling this touches ``path``: proof that a payload's code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


class _RaisesOnLoad:
    def __reduce__(self) -> tuple[Any, ...]:
        return (int, ("not a number",))


def missing_module_pickle() -> bytes:
    # Protocol 0 GLOBAL opcode for a module that does not exist, then a call shape.
    return b"cdocket_no_such_module_xyz\nthing\n."


async def wait_until(
    predicate: Callable[[], Awaitable[bool]],
    what: str,
    run: asyncio.Task[None] | None = None,
    timeout: float = 8.0,
    state: Callable[[], Awaitable[str]] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if run is not None and run.done():
            error = None if run.cancelled() else run.exception()
            raise AssertionError(f"the worker's run loop exited ({error!r}) before {what}")
        if time.monotonic() > deadline:
            seen = f" ({await state()})" if state is not None else ""
            raise AssertionError(f"timed out waiting for {what}{seen}")
        await asyncio.sleep(0.01)


class Harness:
    def __init__(self, docket: Docket, redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
        self.docket = docket
        self.redis = redis
        self.caplog = caplog
        self.ran: list[Any] = []

        async def good(tag: Any) -> None:
            self.ran.append(tag)

        docket.register(good)

    @property
    def stream(self) -> str:
        return self.docket.keys.stream

    async def add_good(self, tag: str) -> None:
        await self.docket.add("good")(tag)

    async def inject(self, fields: Fields) -> str:
        mid = await self.redis.xadd(self.stream, fields)  # type: ignore[arg-type]
        return mid.decode()

    async def dead_letters(self) -> dict[str, dict[bytes, bytes]]:
        """Dead letters by the stream id the entry had."""
        entries = await self.redis.xrange(self.docket.keys.dead_letters, "-", "+")
        return {fields[b"stream_id"].decode(): fields for _, fields in entries}

    async def pending(self) -> int:
        info = await self.redis.xpending(self.stream, GROUP)
        return int(info["pending"])

    async def in_stream(self, mid: str) -> bool:
        return bool(await self.redis.xrange(self.stream, mid, mid))

    async def assert_gone_from_stream(self, mid: str) -> None:
        assert await self.redis.xrange(self.stream, mid, mid) == [], "still in the task stream"
        assert await self.pending() == 0, "still in the PEL"

    def assert_logged(self, mid: str) -> None:
        assert any(
            record.levelno >= logging.ERROR and mid in record.getMessage()
            for record in self.caplog.records
        ), f"no error was logged about {mid}"

    async def assert_dead_lettered(
        self, worker: Worker, fields: Fields, *reason_words: str
    ) -> dict[bytes, bytes]:
        """The whole scenario: good, garbage, good in one batch; then one more good."""
        await self.add_good("before")
        mid = await self.inject(fields)
        await self.add_good("after")

        async with running_throughout(worker) as run:

            async def batch_done() -> bool:
                # Dead-lettering is one script (copy, ack, delete), so an entry that has
                # left the stream without reaching the dead letters was dropped silently.
                if not {"before", "after"} <= set(self.ran):
                    return False
                return mid in await self.dead_letters() or not await self.in_stream(mid)

            async def state() -> str:
                dead = mid in await self.dead_letters()
                return f"ran {sorted(self.ran)}, dead-lettered: {dead}"

            await wait_until(
                batch_done,
                "the good tasks to run and the bad one to be dead-lettered",
                run,
                state=state,
            )
            # The loop still takes new work after the poison.
            await self.add_good("later")

            async def later_ran() -> bool:
                return "later" in self.ran

            await wait_until(later_ran, "a task added after the poison to run", run)

        dead_letters = await self.dead_letters()
        assert mid in dead_letters, "the bad entry was acked away without being dead-lettered"
        dead = dead_letters[mid]
        for name, value in fields.items():
            assert dead.get(b"field:" + _as_bytes(name)) == _as_bytes(value), name
        reason = dead[b"reason"].decode()
        assert reason.strip(), "the dead letter has no reason"
        for word in reason_words:
            assert word.lower() in reason.lower(), f"reason {reason!r} does not mention {word!r}"
        assert dead[b"deliveries"] == b"1"
        await self.assert_gone_from_stream(mid)
        assert await self.redis.xlen(self.stream) == 0
        self.assert_logged(mid)
        assert sorted(self.ran) == ["after", "before", "later"]
        return dead


@pytest.fixture
def harness(docket: Docket, redis_client: Redis, caplog: pytest.LogCaptureFixture) -> Harness:
    return Harness(docket, redis_client, caplog)


# --- the corpus -----------------------------------------------------------------------------

_GOOD_PICKLE = pickled_call("poison")

MALFORMED_FIELDS: list[Any] = [
    *(pytest.param({name: MISSING}, [name], id=f"missing-{name}") for name in REQUIRED_FIELDS),
    pytest.param({"attempt": "one"}, ["attempt"], id="attempt-one"),
    pytest.param({"attempt": "-1"}, ["attempt"], id="attempt-minus-one"),
    pytest.param({"attempt": "0"}, ["attempt"], id="attempt-zero"),
    pytest.param({"attempt": "1.5"}, ["attempt"], id="attempt-fraction"),
    pytest.param({"attempt": "1e309"}, ["attempt"], id="attempt-1e309"),
    pytest.param({"when": "soon"}, ["when"], id="when-not-a-number"),
    pytest.param({"when": "2025-01-01T00:00:00+00:00"}, ["when"], id="when-iso-text"),
    pytest.param({"when": ""}, ["when"], id="when-empty"),
    pytest.param({"when": "nan"}, ["when"], id="when-nan"),
    pytest.param({"when": "inf"}, ["when"], id="when-inf"),
    pytest.param({"when": "-inf"}, ["when"], id="when-minus-inf"),
    pytest.param({"when": "1e309"}, ["when"], id="when-1e309"),
    pytest.param({"when": "253402300800"}, ["when"], id="when-year-10000"),
    pytest.param({"when": "1e18"}, ["when"], id="when-far-beyond-9999"),
    pytest.param({"when": "-1e12"}, ["when"], id="when-before-year-1"),
    pytest.param({"gen": "abc"}, ["gen"], id="gen-not-an-int"),
    pytest.param({"gen": "1.5"}, ["gen"], id="gen-fraction"),
    pytest.param({"gen": ""}, ["gen"], id="gen-empty"),
    pytest.param({"key": ""}, ["key"], id="key-empty"),
    pytest.param({"key": b"\xff\xfe"}, ["utf-8"], id="key-not-utf8"),
    pytest.param({"function": ""}, ["function"], id="function-empty"),
    pytest.param({"function": b"go\xffod"}, ["utf-8"], id="function-not-utf8"),
    pytest.param({"ser": "yaml"}, ["yaml"], id="unknown-serializer"),
]

BAD_PICKLES: list[Any] = [
    pytest.param(_GOOD_PICKLE[: len(_GOOD_PICKLE) // 2], ["deserializ"], id="truncated"),
    pytest.param(b"\x80\x05garbage\x00\xff\xfe", ["deserializ"], id="corrupt"),
    pytest.param(b"this is not a pickle", ["deserializ"], id="not-a-pickle"),
    pytest.param(b"", ["deserializ"], id="empty"),
    pytest.param(missing_module_pickle(), ["docket_no_such_module_xyz"], id="missing-module"),
    pytest.param(cloudpickle.dumps(((_RaisesOnLoad(),), {})), ["deserializ"], id="raises-on-load"),
    pytest.param(pickle.dumps(42), ["args"], id="not-a-pair"),
    pytest.param(pickle.dumps(((), {}, ())), ["args"], id="triple"),
    pytest.param(pickle.dumps(("x", {})), ["args"], id="args-a-string"),
    pytest.param(pickle.dumps(((), {1: 2})), ["args"], id="kwargs-not-named"),
]

BAD_JSON: list[Any] = [
    pytest.param(b"{not json", ["deserializ"], id="invalid"),
    pytest.param(b'{"args": ["x"], "kw', ["deserializ"], id="truncated"),
    pytest.param(b"", ["deserializ"], id="empty"),
    pytest.param(b'{"args": ["\xff"], "kwargs": {}}', ["deserializ"], id="invalid-utf8"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, ["deserializ"], id="deeply-nested"),
    pytest.param(b'[["x"], {}]', ["args"], id="root-a-list"),
    pytest.param(b'"x"', ["args"], id="root-a-string"),
    pytest.param(b'{"args": ["x"]}', ["kwargs"], id="no-kwargs"),
    pytest.param(b'{"kwargs": {}}', ["args"], id="no-args"),
    pytest.param(b'{"args": [], "kwargs": {}, "extra": 1}', ["args"], id="extra-key"),
    pytest.param(b'{"args": [], "kwargs": [1]}', ["kwargs"], id="kwargs-a-list"),
    pytest.param(b'{"args": 1, "kwargs": {}}', ["args"], id="args-a-number"),
    pytest.param(b'{"args": null, "kwargs": {}}', ["args"], id="args-null"),
    pytest.param(b'{"args": "xyz", "kwargs": {}}', ["args"], id="args-a-string"),
    pytest.param(b'{"args": {"a": 1}, "kwargs": {}}', ["args"], id="args-an-object"),
]

UNKNOWN_TASK_NAMES: list[Any] = [
    pytest.param("no_such_task", id="unregistered"),
    pytest.param("t" * 10 * 1024, id="10-KB-name"),
    pytest.param("evil\x00\x1b[31m\r\nFAKE LOG LINE\t", id="control-chars"),
    pytest.param("task*?[]{}", id="glob-chars"),
    pytest.param("задача-مهمة-\u202etxt.exe", id="unicode-rtl"),
]


@pytest.mark.parametrize(("overrides", "reason_words"), MALFORMED_FIELDS)
async def test_malformed_entry_is_dead_lettered(
    harness: Harness, worker: Worker, overrides: dict[str, object], reason_words: list[str]
) -> None:
    await harness.assert_dead_lettered(worker, entry(**overrides), *reason_words)


@pytest.mark.parametrize(("payload", "reason_words"), BAD_PICKLES)
async def test_undeserializable_pickle_payload_is_dead_lettered(
    harness: Harness, worker: Worker, payload: bytes, reason_words: list[str]
) -> None:
    await harness.assert_dead_lettered(worker, entry(payload=payload), *reason_words)


@pytest.mark.parametrize(("payload", "reason_words"), BAD_JSON)
async def test_bad_json_payload_is_dead_lettered(
    harness: Harness, worker: Worker, payload: bytes, reason_words: list[str]
) -> None:
    await harness.assert_dead_lettered(worker, entry(ser="json", payload=payload), *reason_words)


@pytest.mark.parametrize("name", UNKNOWN_TASK_NAMES)
async def test_unknown_task_is_dead_lettered(harness: Harness, worker: Worker, name: str) -> None:
    dead = await harness.assert_dead_lettered(worker, entry(function=name), "unknown task")
    # The reason stays short and printable however long or hostile the name is.
    reason = dead[b"reason"].decode()
    assert len(reason) < 1000
    assert not any(c in reason for c in "\x00\x1b\r\n")


async def test_control_characters_in_a_task_name_do_not_reach_the_log_raw(
    harness: Harness, worker: Worker
) -> None:
    await harness.assert_dead_lettered(worker, entry(function="evil\r\nFAKE\x1b[2J"), "unknown")
    for record in harness.caplog.records:
        message = record.getMessage()
        assert "\x1b[2J" not in message and "\r\nFAKE" not in message, message


async def test_entry_with_only_an_unrelated_field_is_dead_lettered(
    harness: Harness, worker: Worker
) -> None:
    # XADD needs at least one field, so this is as close to an empty entry as Redis allows.
    await harness.assert_dead_lettered(worker, {"": ""}, "missing")


async def test_entry_with_every_field_empty_is_dead_lettered(
    harness: Harness, worker: Worker
) -> None:
    await harness.assert_dead_lettered(worker, dict.fromkeys(REQUIRED_FIELDS, ""))


async def test_many_bad_entries_in_one_batch_are_all_dead_lettered(
    harness: Harness, worker: Worker
) -> None:
    bad = [
        entry(attempt="one"),
        entry(payload=b"\x80garbage"),
        entry(function="no_such_task"),
        entry(when="nan"),
        {"": ""},
    ]
    mids = []
    for index, fields in enumerate(bad):
        await harness.add_good(f"good-{index}")
        mids.append(await harness.inject(fields))
    await harness.add_good("good-last")
    expected = {f"good-{i}" for i in range(len(bad))} | {"good-last"}

    async with running_throughout(worker) as run:

        async def done() -> bool:
            return set(harness.ran) == expected and set(mids) <= set(await harness.dead_letters())

        await wait_until(done, "every good task to run and every bad one to be dead-lettered", run)

    dead = await harness.dead_letters()
    for mid, fields in zip(mids, bad, strict=True):
        for name, value in fields.items():
            assert dead[mid][b"field:" + _as_bytes(name)] == _as_bytes(value)
        await harness.assert_gone_from_stream(mid)
    assert len(dead) == len(bad)
    assert sorted(harness.ran) == sorted(expected)


async def test_poison_redelivered_from_a_dead_worker_is_dead_lettered_with_its_delivery_count(
    harness: Harness, docket: Docket, redis_client: Redis
) -> None:
    await harness.add_good("before")
    mid = await harness.inject(entry(payload=b"\x80garbage"))
    await harness.add_good("after")
    # A worker read the whole batch and died without settling any of it.
    await redis_client.xreadgroup(GROUP, "dead-worker", {harness.stream: ">"}, count=10)

    worker = Worker(
        docket,
        redelivery_timeout=timedelta(milliseconds=200),
        minimum_check_interval=timedelta(milliseconds=5),
    )
    async with worker, running_throughout(worker) as run:

        async def done() -> bool:
            return {"before", "after"} <= set(harness.ran) and mid in await harness.dead_letters()

        await wait_until(done, "the redelivered batch to be handled", run)

    dead = (await harness.dead_letters())[mid]
    assert int(dead[b"deliveries"]) == 2
    assert b"deserializ" in dead[b"reason"]
    assert dead[b"field:payload"] == b"\x80garbage"
    await harness.assert_gone_from_stream(mid)
    assert sorted(harness.ran) == ["after", "before"]


async def test_task_delivered_more_than_max_deliveries_is_dead_lettered(
    harness: Harness, docket: Docket, redis_client: Redis
) -> None:
    execution = await docket.add("good")("too-often")
    await harness.add_good("neighbour")
    mid = execution.message_id
    assert mid is not None
    # Read and claimed over and over by workers that all died mid-task.
    await redis_client.xreadgroup(GROUP, "dead-1", {harness.stream: ">"}, count=1)
    for n in range(2, 7):
        await redis_client.xclaim(harness.stream, GROUP, f"dead-{n}", 0, [mid])

    worker = Worker(
        docket,
        redelivery_timeout=timedelta(milliseconds=200),
        minimum_check_interval=timedelta(milliseconds=5),
    )
    async with worker, running_throughout(worker) as run:

        async def done() -> bool:
            return "neighbour" in harness.ran and mid in await harness.dead_letters()

        await wait_until(done, "the over-delivered task to be dead-lettered", run)

    dead = (await harness.dead_letters())[mid]
    assert int(dead[b"deliveries"]) > worker.max_deliveries
    assert b"delivered" in dead[b"reason"]
    assert dead[b"field:key"] == execution.key.encode()
    assert "too-often" not in harness.ran
    await harness.assert_gone_from_stream(mid)
    await execution.sync()
    assert execution.state == ExecutionState.FAILED


GARBLES: list[Any] = [
    pytest.param({b"payload": b"\x80\x05trunc"}, id="truncated-payload"),
    pytest.param({b"attempt": b"one"}, id="attempt-one"),
    pytest.param({b"when": b"nan"}, id="when-nan"),
    pytest.param({b"function": b"no_such_task"}, id="unknown-task"),
]


@pytest.mark.parametrize("garble", GARBLES)
async def test_task_whose_stream_entry_is_garbled_ends_failed(
    harness: Harness,
    docket: Docket,
    worker: Worker,
    redis_client: Redis,
    garble: dict[bytes, bytes],
) -> None:
    execution = await docket.add("good")("victim")
    assert execution.message_id is not None
    record_key = docket.keys.record(execution.key)
    # Swap the real entry for a garbled copy (same key and generation) and point the
    # record at it, as if the bytes had been corrupted in place.
    [(_, fields)] = await redis_client.xrange(
        harness.stream, execution.message_id, execution.message_id
    )
    await redis_client.xdel(harness.stream, execution.message_id)
    mid = (await redis_client.xadd(harness.stream, {**fields, **garble})).decode()  # type: ignore[dict-item]
    await redis_client.hset(record_key, "mid", mid)

    async with running_throughout(worker) as run:

        async def done() -> bool:
            return mid in await harness.dead_letters()

        await wait_until(done, "the garbled entry to be dead-lettered", run)

    assert "victim" not in harness.ran
    await harness.assert_gone_from_stream(mid)
    await execution.sync()
    assert execution.state == ExecutionState.FAILED
    assert execution.error and "dead-letter" in execution.error
    assert await redis_client.pttl(record_key) > 0, "the failed record never expires"
    with pytest.raises(Exception, match="dead-letter"):
        await execution.get_result(timeout=5)


def test_the_canary_payload_really_runs_code_when_unpickled(tmp_path: Path) -> None:
    # The control for the canary tests: without it "the file was not created" proves nothing.
    canary = tmp_path / "canary"
    cloudpickle.loads(pickled_call(_Canary(canary)))
    assert canary.exists()


async def test_canary_pickle_is_never_unpickled_when_signing_is_on(
    redis_url: str,
    redis_client: Redis,
    docket_name: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    canary = tmp_path / "canary"
    async with Docket(name=docket_name, url=redis_url, signing_key="the-real-key") as docket:
        harness = Harness(docket, redis_client, caplog)
        worker = Worker(docket, minimum_check_interval=timedelta(milliseconds=5))
        async with worker:
            await harness.assert_dead_lettered(
                worker, entry(payload=pickled_call(_Canary(canary))), "unsigned"
            )
    assert not canary.exists(), "the worker unpickled an unsigned payload"


async def test_dead_lettered_bytes_are_kept_exactly(harness: Harness, worker: Worker) -> None:
    raw = bytes(range(256)) * 4
    fields = entry(payload=raw, trace=b"\x00\xff{not json", extra=b"\r\n\x00")
    dead = await harness.assert_dead_lettered(worker, fields)
    assert dead[b"field:payload"] == raw
    assert dead[b"field:extra"] == b"\r\n\x00"

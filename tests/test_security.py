"""Security defaults (docs/reliability.md): payload limits, signing, the JSON serializer,
arguments and passwords kept out of logs and reprs, and docket name validation."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import cloudpickle  # type: ignore[import-untyped]
import pytest
from _helpers import running_throughout, wait_for
from _redis_server import RedisServer, free_port
from redis.asyncio import Redis
from redis.credentials import UsernamePasswordCredentialProvider
from redis.exceptions import AuthenticationError

import docket.worker as worker_module
from docket import Docket, ExecutionState, Logged, PayloadTooLarge, Worker, serialization
from docket._redis.keys import GROUP
from docket.logging import DocketFormatter

pytestmark = pytest.mark.timeout(60)

FAST = timedelta(milliseconds=5)


@pytest.fixture(autouse=True)
def _quick_stop_and_no_ambient_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # run_forever() blocks in XREADGROUP for BLOCK_SECONDS at a time; a short block lets
    # stop() take effect quickly. Tests that want a key from the environment set it.
    monkeypatch.setattr(worker_module, "BLOCK_SECONDS", 0.05)
    monkeypatch.delenv("DOCKET_SIGNING_KEY", raising=False)


async def run_until_finished(worker: Worker, timeout: float = 10.0) -> None:
    await asyncio.wait_for(worker.run_until_finished(), timeout)


class _Canary:
    """Unpickling this touches ``path``: proof that a payload's code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def pickled_call(*args: Any, **kwargs: Any) -> bytes:
    return serialization.dump_call(serialization.get_serializer("pickle"), args, kwargs)


def raw_entry(
    function: str,
    payload: bytes,
    *,
    key: str | None = None,
    sig: str = "",
    ser: str | None = "pickle",
) -> dict[str, str | bytes]:
    fields: dict[str, str | bytes] = {
        "key": key or f"raw-{uuid.uuid4().hex}",
        "gen": "1",
        "function": function,
        "when": f"{time.time():.6f}",
        "attempt": "1",
        "payload": payload,
        "sig": sig,
        "trace": "",
    }
    if ser is not None:
        fields["ser"] = ser
    return fields


async def dead_letters(redis: Redis, docket: Docket) -> dict[str, dict[bytes, bytes]]:
    entries = await redis.xrange(docket.keys.dead_letters, "-", "+")
    return {fields[b"stream_id"].decode(): fields for _, fields in entries}


def handled(redis: Redis, docket: Docket, mid: str) -> Callable[[], Awaitable[bool]]:
    """True once the entry has left the stream and the PEL, whatever became of it."""

    async def check() -> bool:
        if await redis.xrange(docket.keys.stream, mid, mid):
            return False
        return int((await redis.xpending(docket.keys.stream, GROUP))["pending"]) == 0

    return check


async def nothing_written(redis: Redis, docket: Docket, key: str) -> None:
    assert await redis.xlen(docket.keys.stream) == 0
    assert await redis.zcard(docket.keys.queue) == 0
    assert not await redis.exists(docket.keys.record(key))
    assert await redis.get(docket.keys.generation) is None


# --- payload size limit ---------------------------------------------------------------------


def _argument_of_payload_size(size: int) -> bytes:
    """A bytes argument whose pickled call is exactly ``size`` bytes."""
    overhead = len(pickled_call(b"x" * 1000)) - 1000
    argument = b"x" * (size - overhead)
    assert len(pickled_call(argument)) == size
    return argument


async def echo_size(data: bytes) -> int:
    return len(data)


@pytest.mark.parametrize("limit", [4096, None], ids=["limit-4096", "default-limit"])
async def test_payload_of_exactly_the_limit_is_accepted(
    redis_url: str, docket_name: str, limit: int | None
) -> None:
    size = limit or serialization.DEFAULT_MAX_PAYLOAD_BYTES
    options: dict[str, Any] = {} if limit is None else {"max_payload_bytes": limit}
    argument = _argument_of_payload_size(size)
    async with Docket(name=docket_name, url=redis_url, **options) as docket:
        execution = await docket.add(echo_size)(argument)
        async with Worker(docket, minimum_check_interval=FAST) as worker:
            await run_until_finished(worker)
        assert await execution.get_result(timeout=5) == len(argument)


@pytest.mark.parametrize("limit", [4096, None], ids=["limit-4096", "default-limit"])
@pytest.mark.parametrize("later", [False, True], ids=["now", "scheduled"])
async def test_payload_one_byte_over_the_limit_raises_and_writes_nothing(
    redis_url: str, redis_client: Redis, docket_name: str, limit: int | None, later: bool
) -> None:
    size = (limit or serialization.DEFAULT_MAX_PAYLOAD_BYTES) + 1
    options: dict[str, Any] = {} if limit is None else {"max_payload_bytes": limit}
    argument = _argument_of_payload_size(size)
    when = datetime.now(UTC) + timedelta(hours=1) if later else None
    async with Docket(name=docket_name, url=redis_url, **options) as docket:
        with pytest.raises(PayloadTooLarge) as caught:
            await docket.add(echo_size, when=when, key="too-big")(argument)
        message = str(caught.value)
        assert "echo_size" in message
        assert str(size) in message.replace(",", "").replace("_", "")
        await nothing_written(redis_client, docket, "too-big")


async def test_replace_and_add_many_enforce_the_limit_too(
    redis_url: str, redis_client: Redis, docket_name: str
) -> None:
    argument = _argument_of_payload_size(1025)
    async with Docket(name=docket_name, url=redis_url, max_payload_bytes=1024) as docket:
        with pytest.raises(PayloadTooLarge):
            await docket.replace(echo_size, None, key="too-big")(argument)
        with pytest.raises(PayloadTooLarge):
            await docket.add_many(
                [
                    docket.call(echo_size, key="small")(b"ok"),
                    docket.call(echo_size, key="too-big")(argument),
                ]
            )
        await nothing_written(redis_client, docket, "too-big")
        assert not await redis_client.exists(docket.keys.record("small"))


async def test_payload_too_large_is_a_value_error_exported_by_docket() -> None:
    import docket

    assert docket.PayloadTooLarge is serialization.PayloadTooLarge
    assert issubclass(PayloadTooLarge, ValueError)


async def test_no_payload_limit_when_it_is_none(redis_url: str, docket_name: str) -> None:
    argument = b"z" * (2 * serialization.DEFAULT_MAX_PAYLOAD_BYTES)
    async with Docket(name=docket_name, url=redis_url, max_payload_bytes=None) as docket:
        execution = await docket.add(echo_size)(argument)
        async with Worker(docket, minimum_check_interval=FAST) as worker:
            await run_until_finished(worker)
        assert await execution.get_result(timeout=5) == len(argument)


@pytest.mark.parametrize("value", [0, -1, -(2**40), "1024", 1.5j])
def test_invalid_payload_limits_are_rejected(value: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        Docket(name="limits", url="redis://127.0.0.1:1/0", max_payload_bytes=value)


# --- signing --------------------------------------------------------------------------------


async def answer(question: str) -> str:
    return f"answer to {question}"


async def explode(question: str) -> str:
    raise ValueError(f"no answer to {question}")


async def test_signed_docket_runs_its_tasks(
    redis_url: str, redis_client: Redis, docket_name: str
) -> None:
    async with Docket(name=docket_name, url=redis_url, signing_key="k" * 32) as docket:
        execution = await docket.add(answer)("life")
        [(_, fields)] = await redis_client.xrange(docket.keys.stream, "-", "+")
        assert (
            fields[b"sig"]
            == serialization.sign_payload(
                b"k" * 32, "answer", execution.key, "pickle", fields[b"payload"]
            ).encode()
        )
        async with Worker(docket, minimum_check_interval=FAST) as worker:
            await run_until_finished(worker)
        assert await execution.get_result(timeout=5) == "answer to life"
        assert await dead_letters(redis_client, docket) == {}


def _forge(kind: str, canary: Path, key: str) -> dict[str, str | bytes]:
    """An entry an attacker with Redis access but without the real key could write."""
    evil = pickled_call(_Canary(canary))
    honest = pickled_call("life")
    if kind == "unsigned":
        return raw_entry("answer", evil, key=key)
    if kind == "signed-with-another-key":
        sig = serialization.sign_payload(b"not-the-key", "answer", key, "pickle", evil)
        return raw_entry("answer", evil, key=key, sig=sig)
    if kind == "garbage-signature":
        return raw_entry("answer", evil, key=key, sig="zz" * 40)
    real = b"the-real-key"
    sig = serialization.sign_payload(real, "answer", key, "pickle", honest)
    if kind == "tampered-payload":
        return raw_entry("answer", evil, key=key, sig=sig)
    if kind == "payload-moved-to-another-task":
        sig = serialization.sign_payload(real, "explode", key, "pickle", evil)
        return raw_entry("answer", evil, key=key, sig=sig)
    if kind == "payload-moved-to-another-key":
        sig = serialization.sign_payload(real, "answer", key + "-other", "pickle", evil)
        return raw_entry("answer", evil, key=key, sig=sig)
    raise AssertionError(kind)


FORGERIES = [
    "unsigned",
    "signed-with-another-key",
    "garbage-signature",
    "tampered-payload",
    "payload-moved-to-another-task",
    "payload-moved-to-another-key",
]


def test_the_canary_really_runs_code_when_unpickled(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    cloudpickle.loads(pickled_call(_Canary(canary)))
    assert canary.exists()


@pytest.mark.parametrize("kind", FORGERIES)
async def test_forged_entry_is_dead_lettered_and_never_unpickled(
    redis_url: str, redis_client: Redis, docket_name: str, tmp_path: Path, kind: str
) -> None:
    canary = tmp_path / "canary"
    async with Docket(name=docket_name, url=redis_url, signing_key="the-real-key") as docket:
        docket.register(answer)
        docket.register(explode)
        good = await docket.add(answer)("before")
        mid = (await redis_client.xadd(docket.keys.stream, _forge(kind, canary, "forged"))).decode()  # type: ignore[arg-type]
        after = await docket.add(answer)("after")
        worker = Worker(docket, minimum_check_interval=FAST)
        async with worker, running_throughout(worker):
            await wait_for(
                handled(redis_client, docket, mid), what="the forged entry to be handled"
            )
            assert await good.get_result(timeout=5) == "answer to before"
            assert await after.get_result(timeout=5) == "answer to after"

        assert not canary.exists(), "a forged payload was unpickled"
        dead = (await dead_letters(redis_client, docket))[mid]
        assert re.search(rb"sign|unsigned", dead[b"reason"]), dead[b"reason"]
        assert await redis_client.xrange(docket.keys.stream, mid, mid) == []
        assert (await redis_client.xpending(docket.keys.stream, GROUP))["pending"] == 0


async def test_entry_from_a_producer_with_another_key_is_dead_lettered(
    redis_url: str, redis_client: Redis, docket_name: str, tmp_path: Path
) -> None:
    # The same attack through the public API: a producer holding a different key.
    canary = tmp_path / "canary"
    async with Docket(name=docket_name, url=redis_url, signing_key="intruder") as intruder:
        forged = await intruder.add(answer)(_Canary(canary))  # type: ignore[arg-type]
    async with Docket(name=docket_name, url=redis_url, signing_key="the-real-key") as docket:
        docket.register(answer)
        async with Worker(docket, minimum_check_interval=FAST) as worker:
            await run_until_finished(worker)
        execution = await docket.get_execution(forged.key)
        assert execution is not None
        assert execution.state == ExecutionState.FAILED
        assert execution.error and "signature" in execution.error
        assert forged.message_id in await dead_letters(redis_client, docket)
    assert not canary.exists(), "a payload signed with the wrong key was unpickled"


async def test_signing_key_from_the_environment_is_honoured(
    redis_url: str, redis_client: Redis, docket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKET_SIGNING_KEY", "from-the-environment")
    async with Docket(name=docket_name, url=redis_url) as docket:
        execution = await docket.add(answer)("env")
        [(_, fields)] = await redis_client.xrange(docket.keys.stream, "-", "+")
        assert serialization.verify_payload(
            b"from-the-environment",
            "answer",
            execution.key,
            "pickle",
            fields[b"payload"],
            fields[b"sig"].decode(),
        )
        # A worker configured from the environment demands signatures.
        unsigned = raw_entry("answer", pickled_call("unsigned"))
        mid = (await redis_client.xadd(docket.keys.stream, unsigned)).decode()  # type: ignore[arg-type]
        async with Worker(docket, minimum_check_interval=FAST) as worker:
            await run_until_finished(worker)
        assert await execution.get_result(timeout=5) == "answer to env"
        assert mid in await dead_letters(redis_client, docket)


async def test_an_explicit_signing_key_wins_over_the_environment(
    redis_url: str, redis_client: Redis, docket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKET_SIGNING_KEY", "from-the-environment")
    async with Docket(name=docket_name, url=redis_url, signing_key="explicit") as docket:
        execution = await docket.add(answer)("x")
        [(_, fields)] = await redis_client.xrange(docket.keys.stream, "-", "+")
        assert serialization.verify_payload(
            b"explicit",
            "answer",
            execution.key,
            "pickle",
            fields[b"payload"],
            fields[b"sig"].decode(),
        )


@pytest.mark.parametrize("task", [answer, explode], ids=["result", "exception"])
async def test_results_are_signed(
    redis_url: str, docket_name: str, task: Callable[[str], Awaitable[str]]
) -> None:
    async with Docket(name=docket_name, url=redis_url, signing_key="alpha") as alpha:
        execution = await alpha.add(task)("q")
        async with Worker(alpha, minimum_check_interval=FAST) as worker:
            await run_until_finished(worker)
        # The right key reads it back.
        if task is answer:
            assert await execution.get_result(timeout=5) == "answer to q"
        else:
            with pytest.raises(ValueError, match="no answer to q"):
                await execution.get_result(timeout=5)

    async with Docket(name=docket_name, url=redis_url, signing_key="beta") as beta:
        other = await beta.get_execution(execution.key)
        assert other is not None
        with pytest.raises(ValueError, match="signature"):
            await other.get_result(timeout=5)

    async with Docket(name=docket_name, url=redis_url) as keyless:
        other = await keyless.get_execution(execution.key)
        assert other is not None
        with pytest.raises(ValueError, match="signed"):
            await other.get_result(timeout=5)


async def test_forged_unsigned_result_is_refused_and_never_unpickled(
    redis_url: str, redis_client: Redis, docket_name: str, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    async with Docket(name=docket_name, url=redis_url, signing_key="alpha") as docket:
        key = "forged-result"
        await redis_client.hset(
            docket.keys.record(key),
            mapping={
                "state": "completed",
                "gen": "1",
                "function": "answer",
                "result": "1",
                "when": f"{time.time():.6f}",
            },
        )
        await redis_client.set(
            docket.keys.result(key, 1), b"0" + cloudpickle.dumps(_Canary(canary))
        )
        execution = await docket.get_execution(key)
        assert execution is not None
        with pytest.raises(ValueError, match="not signed"):
            await execution.get_result(timeout=5)
    assert not canary.exists(), "an unsigned result was unpickled"


@pytest.mark.parametrize("reader", ["get_execution", "snapshot"])
@pytest.mark.parametrize(
    "options",
    [{"signing_key": "alpha"}, {"serializer": "json"}],
    ids=["signing-docket", "json-docket"],
)
async def test_reading_executions_never_unpickles_an_unverified_payload(
    redis_url: str,
    redis_client: Redis,
    docket_name: str,
    tmp_path: Path,
    options: dict[str, Any],
    reader: str,
) -> None:
    # get_execution() and snapshot() show a task's arguments; on a signing (or JSON-only)
    # docket they must not unpickle bytes nobody verified: the CLI and dashboards call
    # these, not just workers.
    canary = tmp_path / "canary"
    async with Docket(name=docket_name, url=redis_url, **options) as docket:
        docket.register(answer)
        key = "forged-queued"
        fields = raw_entry("answer", pickled_call(_Canary(canary)), key=key)
        mid = (await redis_client.xadd(docket.keys.stream, fields)).decode()  # type: ignore[arg-type]
        await redis_client.hset(
            docket.keys.record(key),
            mapping={
                "state": "queued",
                "gen": "1",
                "function": "answer",
                "mid": mid,
                "when": fields["when"],
                "attempt": "1",
            },
        )
        if reader == "get_execution":
            execution = await docket.get_execution(key)
            assert execution is not None and execution.state == ExecutionState.QUEUED
        else:
            snapshot = await docket.snapshot()
            assert [e.key for e in snapshot.future] == [key]
    assert not canary.exists(), f"{reader}() unpickled an unverified payload"


# --- the JSON serializer --------------------------------------------------------------------


async def describe(text: str, numbers: list[Any], *, options: dict[str, Any]) -> dict[str, Any]:
    return {"text": text, "numbers": numbers, "options": options}


async def test_json_serializer_runs_tasks_with_json_arguments(
    redis_url: str, redis_client: Redis, docket_name: str
) -> None:
    numbers = [1, 2.5, -3, None, True, False, "four"]
    options = {"nested": {"list": [1, {"deep": "yes"}]}, "empty": {}, "unicode": "été ✓"}
    async with Docket(name=docket_name, url=redis_url, serializer="json") as docket:
        execution = await docket.add(describe)("hello", numbers, options=options)
        [(_, fields)] = await redis_client.xrange(docket.keys.stream, "-", "+")
        assert fields[b"ser"] == b"json"
        assert json.loads(fields[b"payload"]) == {
            "args": ["hello", numbers],
            "kwargs": {"options": options},
        }
        async with Worker(docket, minimum_check_interval=FAST) as worker:
            await run_until_finished(worker)
        expected = {"text": "hello", "numbers": numbers, "options": options}
        assert await execution.get_result(timeout=5) == expected
        stored = await redis_client.get(docket.keys.result(execution.key, execution.generation))
        assert stored is not None and json.loads(stored[1:]) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(datetime(2025, 1, 1, tzinfo=UTC), id="datetime"),
        pytest.param({1, 2}, id="set"),
        pytest.param(b"bytes", id="bytes"),
        pytest.param(object(), id="object"),
        pytest.param(Decimal("1.5"), id="decimal"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="inf"),
        pytest.param({(1, 2): "tuple key"}, id="tuple-key"),
    ],
)
async def test_json_serializer_refuses_non_json_arguments_at_enqueue(
    redis_url: str, redis_client: Redis, docket_name: str, value: Any
) -> None:
    async with Docket(name=docket_name, url=redis_url, serializer="json") as docket:
        with pytest.raises(TypeError):
            await docket.add(describe, key="not-json")("x", [value], options={})
        with pytest.raises(TypeError):
            await docket.add(describe, key="not-json")("x", [], options={"v": value})
        await nothing_written(redis_client, docket, "not-json")


@pytest.mark.parametrize("ser", ["pickle", None], ids=["ser-pickle", "no-ser-field"])
async def test_json_docket_never_unpickles_a_pickle_entry(
    redis_url: str, redis_client: Redis, docket_name: str, tmp_path: Path, ser: str | None
) -> None:
    # A deployment that chose JSON to forbid pickle must not unpickle whatever an entry
    # claims to be: the worker accepts only its own serializer.
    canary = tmp_path / "canary"
    async with Docket(name=docket_name, url=redis_url, serializer="json") as docket:
        docket.register(answer)
        good = await docket.add(answer)("json")
        fields = raw_entry("answer", pickled_call(_Canary(canary)), ser=ser)
        mid = (await redis_client.xadd(docket.keys.stream, fields)).decode()  # type: ignore[arg-type]
        worker = Worker(docket, minimum_check_interval=FAST)
        async with worker, running_throughout(worker):
            await wait_for(
                handled(redis_client, docket, mid), what="the pickle entry to be handled"
            )
            assert await good.get_result(timeout=5) == "answer to json"
        assert not canary.exists(), "a JSON-only docket unpickled a payload"
        dead = (await dead_letters(redis_client, docket))[mid]
        assert b"pickle" in dead[b"reason"] or b"serializ" in dead[b"reason"]


async def test_json_docket_fails_a_task_whose_result_is_not_json(
    redis_url: str, docket_name: str
) -> None:
    async def when_is_it() -> datetime:
        return datetime.now(UTC)

    async with Docket(name=docket_name, url=redis_url, serializer="json") as docket:
        execution = await docket.add(when_is_it)()
        async with Worker(docket, minimum_check_interval=FAST) as worker:
            await run_until_finished(worker)
        await execution.sync()
        assert execution.state == ExecutionState.FAILED
        assert execution.error and "json" in execution.error.lower()


# --- arguments never logged unless Logged ---------------------------------------------------


SECRET = "hunter2-" + uuid.uuid4().hex
OTHER_SECRET = "token-" + uuid.uuid4().hex
SHOWN = "visible-user-" + uuid.uuid4().hex


def _rendered(record: logging.LogRecord, handler: logging.Handler) -> list[str]:
    texts = [record.getMessage(), handler.format(record)]
    for output in ("plain", "json"):
        texts.append(DocketFormatter(output).format(record))  # type: ignore[arg-type]
    if record.exc_info and record.exc_info[1] is not None:
        texts.append("".join(traceback.format_exception(record.exc_info[1])))
    texts.append(repr(record.args))
    texts.extend(repr(value) for value in record.__dict__.values())
    return texts


async def quiet_task(
    password: str,
    user: Annotated[str, Logged],
    items: Annotated[list[str], Logged(length_only=True)],
    *,
    token: str,
) -> None:
    pass


async def failing_quiet_task(password: str, *, token: str) -> None:
    raise RuntimeError("the task failed")


@pytest.mark.parametrize("task", ["quiet_task", "failing_quiet_task"])
async def test_arguments_are_never_logged_unless_logged(
    docket: Docket, worker: Worker, caplog: pytest.LogCaptureFixture, task: str
) -> None:
    caplog.set_level(logging.DEBUG)
    if task == "quiet_task":
        items = ["hidden-a", "hidden-b", "c"]
        await docket.add(quiet_task)(SECRET, SHOWN, items, token=OTHER_SECRET)
    else:
        await docket.add(failing_quiet_task)(SECRET, token=OTHER_SECRET)
    await run_until_finished(worker)

    texts = [text for record in caplog.records for text in _rendered(record, caplog.handler)]
    assert texts, "the worker logged nothing at all"
    for text in texts:
        assert SECRET not in text
        assert OTHER_SECRET not in text
        assert "hidden-a" not in text
    joined = "\n".join(texts)
    assert task in joined, "the run was not logged"
    if task == "quiet_task":
        assert SHOWN in joined, "a Logged argument should appear in the log"
        assert "[len 3]" in joined, "Logged(length_only=True) should show the length"


# --- Redis passwords ------------------------------------------------------------------------


@pytest.fixture
def password() -> str:
    return "pw-" + uuid.uuid4().hex


@pytest.fixture
def secured_redis(redis_server_factory: Callable[..., RedisServer], password: str) -> RedisServer:
    return redis_server_factory(["--requirepass", password])


@pytest.mark.parametrize("user", ["", "default"], ids=["password-only", "user-and-password"])
async def test_password_is_not_in_reprs(
    secured_redis: RedisServer, password: str, docket_name: str, user: str
) -> None:
    url = f"redis://{user}:{password}@127.0.0.1:{secured_redis.port}/0"
    async with Docket(name=docket_name, url=url) as docket:
        await docket.add("trace")("hello")  # the password works
        worker = Worker(docket)
        for text in (repr(docket), str(docket), repr(worker), str(worker)):
            assert password not in text
        assert f"127.0.0.1:{secured_redis.port}" in repr(docket)


async def test_password_is_never_in_worker_logs(
    secured_redis: RedisServer,
    password: str,
    docket_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"redis://:{password}@127.0.0.1:{secured_redis.port}/0"
    ran: list[str] = []

    async def note(tag: Annotated[str, Logged]) -> None:
        ran.append(tag)

    async with Docket(name=docket_name, url=url) as docket:
        worker = Worker(
            docket,
            minimum_check_interval=FAST,
            reconnection_delay=timedelta(milliseconds=50),
        )
        async with worker, running_throughout(worker):
            await docket.add(note)("first")
            await wait_for(lambda: ran == ["first"], what="the first task")
            # Redis goes away: the worker logs its connection errors and retries...
            await asyncio.to_thread(secured_redis.stop)
            await wait_for(
                lambda: any(r.levelno >= logging.WARNING for r in caplog.records),
                what="the worker to log the outage",
            )
            await asyncio.sleep(0.3)
            # ...and reconnects (with the password) when it is back.
            await asyncio.to_thread(secured_redis.start)

            async def second_ran() -> bool:
                with suppress(Exception):  # the producer may still be reconnecting
                    if "second" not in ran:
                        await docket.add(note, key="second")("second")
                return "second" in ran

            await wait_for(second_ran, what="a task after the outage", timeout=15)

    texts = [text for record in caplog.records for text in _rendered(record, caplog.handler)]
    address = f"127.0.0.1:{secured_redis.port}"
    assert any(address in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    for text in texts:
        assert password not in text


async def test_connection_error_does_not_reveal_the_password(
    password: str, docket_name: str
) -> None:
    port = free_port()
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    with pytest.raises(ConnectionError) as caught:
        async with Docket(name=docket_name, url=url):
            pass
    assert password not in str(caught.value)
    assert password not in "".join(traceback.format_exception(caught.value))
    assert f"127.0.0.1:{port}" in str(caught.value), "the error should say where it tried"


@pytest.mark.parametrize("given", ["wrong-password", "no-password"])
async def test_wrong_credentials_fail_at_the_first_command_with_redis_pys_error(
    secured_redis: RedisServer, password: str, docket_name: str, given: str
) -> None:
    """As released: entering does not check credentials; the first command raises
    redis-py's own AuthenticationError (which names no password)."""
    secret = "wrong-" + password
    credentials = f":{secret}@" if given == "wrong-password" else ""
    url = f"redis://{credentials}127.0.0.1:{secured_redis.port}/0"
    async with Docket(name=docket_name, url=url) as docket:
        with pytest.raises(AuthenticationError) as caught:
            await docket.add("trace")("hello")
    assert secret not in "".join(traceback.format_exception(caught.value))
    assert password not in "".join(traceback.format_exception(caught.value))


async def test_a_credential_provider_authenticates_every_connection(
    secured_redis: RedisServer, password: str, docket_name: str
) -> None:
    provider = UsernamePasswordCredentialProvider("default", password)
    url = f"redis://127.0.0.1:{secured_redis.port}/0"
    async with Docket(name=docket_name, url=url, credential_provider=provider) as docket:
        execution = await docket.add(_double)(21)
        async with Worker(docket, minimum_check_interval=FAST) as worker:
            await run_until_finished(worker)
        assert await execution.get_result(timeout=5) == 42


async def test_a_wrong_credential_provider_fails_at_the_first_command(
    secured_redis: RedisServer, password: str, docket_name: str
) -> None:
    provider = UsernamePasswordCredentialProvider("default", "wrong-" + password)
    url = f"redis://127.0.0.1:{secured_redis.port}/0"
    async with Docket(name=docket_name, url=url, credential_provider=provider) as docket:
        with pytest.raises(AuthenticationError):
            await docket.add(_double)(21)


@pytest.mark.parametrize(
    "url",
    [
        "redis://user:pw@127.0.0.1:6390/0",
        "redis://:pw@127.0.0.1:6390/0",
        "rediss://user@127.0.0.1:6390/0",
    ],
)
def test_url_credentials_and_a_credential_provider_are_refused_together(url: str) -> None:
    provider = UsernamePasswordCredentialProvider("default", "pw")
    with pytest.raises(ValueError, match=r"^Pass credentials in the URL or in credential_provider"):
        Docket(name="refused", url=url, credential_provider=provider)


async def _double(x: int) -> int:
    return x * 2


# --- docket names ---------------------------------------------------------------------------


BAD_NAMES = [
    "a*b", "a?b", "a[b]", "a{b}", "{a}", "a}", "a:b", ":", "a b", " a", "a ", "a\tb", "a\nb",
    "a\n", "", "x" * 129, "a/b", "other}:stream", "a\x00b",
]  # fmt: skip


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_docket_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        Docket(name=name, url="redis://127.0.0.1:1/0")


@pytest.mark.parametrize("name", ["docket", "my-app.tasks_v2", "A1", "x" * 128])
def test_valid_docket_names_are_accepted_and_tag_every_key(name: str) -> None:
    docket = Docket(name=name, url="redis://127.0.0.1:1/0")
    keys = docket.keys
    for key in (keys.stream, keys.queue, keys.dead_letters, keys.record("k"), keys.result("k", 1)):
        assert key.startswith("{" + name + "}:")

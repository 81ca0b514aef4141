"""Every Lua script is called through a ``Call`` whose fields name its keys and arguments;
the names in the script's header and the class must agree, or the class is refused."""

# No postponed annotations here: the classes defined inside the tests must have theirs
# evaluated where they are defined.
from collections.abc import Sequence
from importlib import resources

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from docket import Docket
from docket._redis import scripts
from docket._redis.scripts import (
    CALLS,
    Call,
    Group,
    Key,
    Layout,
    Scripts,
    ScriptSignatureError,
    Settle,
    SettleRun,
    check_signature,
    parse_header,
    script_source,
)


def shipped_scripts() -> set[str]:
    folder = resources.files("docket._redis").joinpath("lua")
    return {
        entry.name.removesuffix(".lua")
        for entry in folder.iterdir()
        if entry.name.endswith(".lua") and not entry.name.startswith("_")
    }


def test_every_shipped_script_has_one_call_that_matches_its_header() -> None:
    assert set(CALLS) == shipped_scripts()
    assert len(CALLS) == 28
    for name, call in CALLS.items():
        assert call.script == name
        check_signature(call, script_source(name))


def test_a_call_naming_an_argument_differently_is_refused() -> None:
    with pytest.raises(ScriptSignatureError) as refused:

        class Misnamed(Call, script="ensure_group"):
            stream: Key
            grop: str

    message = str(refused.value)
    assert "ensure_group.lua" in message and "Misnamed" in message
    assert "'group' in the header, 'grop' in Misnamed" in message
    assert "ARGV" in message
    assert "ensure_group" in CALLS and CALLS["ensure_group"] is scripts.EnsureGroup


def test_a_call_with_its_keys_in_another_order_is_refused() -> None:
    with pytest.raises(
        ScriptSignatureError, match=r"KEYS: 'workers' in the header, 'worker_tasks'"
    ):

        class Swapped(Call, script="worker_gone"):
            worker_tasks: Key
            workers: Key
            worker: str


def test_a_call_missing_an_argument_is_refused() -> None:
    with pytest.raises(ScriptSignatureError, match=r"strike\.lua .*the header has 3 names"):

        class Short(Call, script="strike"):
            strikes: Key
            action: str
            condition: str


def test_a_repeated_group_must_name_the_same_fields() -> None:
    class Message(Group):
        deliveries: int
        mid: str

    refused = r"'messages\.mid' in the header, 'messages\.deliveries' in Renews"
    with pytest.raises(ScriptSignatureError, match=refused):

        class Renews(Call, script="renew"):
            stream: Key
            group: str
            worker: str
            messages: Sequence[Message]


def test_a_header_that_drifted_from_its_call_is_refused() -> None:
    source = script_source("settle").replace(
        "-- KEYS: stream, failures, runs[record, result_key]",
        "-- KEYS: stream, failures, runs[record, result]",
    )
    assert source != script_source("settle")
    with pytest.raises(ScriptSignatureError) as refused:
        check_signature(Settle, source)
    message = str(refused.value)
    assert message.startswith("settle.lua and Settle disagree on KEYS")
    assert "'runs.result' in the header, 'runs.result_key' in Settle" in message


def test_headers_are_read_across_continued_lines() -> None:
    keys, argv = parse_header(
        "example",
        "-- KEYS: stream, runs[record]\n"
        "-- ARGV: group,\n"
        "--       runs[mid, deliveries]\n"
        "--   group: not a declaration\n"
        "return 1\n",
    )
    assert keys == Layout(("stream",), "runs", ("record",))
    assert argv == Layout(("group",), "runs", ("mid", "deliveries"))
    assert str(argv) == "group, runs[mid, deliveries]"

    _, values = parse_header("example", "-- KEYS: a\n-- ARGV: b, names...\n")
    assert values == Layout(("b",), "names", None)


def test_a_header_without_declarations_is_refused() -> None:
    with pytest.raises(ScriptSignatureError, match=r"no '-- ARGV:' line"):
        parse_header("example", "-- KEYS: stream\nreturn 1\n")
    with pytest.raises(ScriptSignatureError, match=r"must come last"):
        parse_header("example", "-- KEYS: items[a], b\n-- ARGV: c\n")


def test_a_call_lays_out_keys_and_arguments_as_the_script_reads_them() -> None:
    def run(n: int) -> SettleRun:
        return SettleRun(
            record=f"record{n}",
            result_key=f"result{n}",
            mid=f"{n}-0",
            generation=n,
            deliveries=1,
            state="completed",
            error="",
            result=b"",
            traceback="",
        )

    call = Settle(
        stream="stream",
        failures="failures",
        group="group",
        worker="worker",
        ttl=60.0,
        events_prefix="events:",
        record_prefix="runs:",
        failures_kept=1000,
        runs=[run(1), run(2)],
    )
    keys, args = call.flatten()
    assert keys == ["stream", "failures", "record1", "result1", "record2", "result2"]
    assert args == [
        *("group", "worker", 60.0, "events:", "runs:", 1000),
        *("1-0", 1, 1, "completed", "", b"", ""),
        *("2-0", 2, 1, "completed", "", b"", ""),
    ]
    heartbeat = scripts.Heartbeat(
        workers="w", worker_tasks="t", worker="me", window=2.0, task_names=["a", "b"]
    )
    assert heartbeat.flatten() == (["w", "t"], ["me", 2.0, "a", "b"])


# --- the one path, against a real server ---------------------------------------------------


def ensure_group(docket: Docket, stream: str) -> scripts.EnsureGroup:
    return scripts.EnsureGroup(stream=f"{docket.prefix}:{stream}", group="readers")


@pytest.mark.parametrize("lean", [True, False], ids=["wire", "redis-py"])
async def test_calls_run_once_each_on_a_server_that_forgot_its_scripts(
    docket: Docket, redis_client: Redis, lean: bool
) -> None:
    wire = docket.engine.connection.wire
    assert wire is not None, "a plain redis:// URL gets the lean connection"
    runner = Scripts(docket.engine.connection.client, wire if lean else None)

    await redis_client.script_flush()
    assert await runner.send(ensure_group(docket, "one")) == 1
    assert await runner.send(ensure_group(docket, "one")) == 0

    await redis_client.script_flush()
    calls = [ensure_group(docket, name) for name in ("a", "b", "a", "c")]
    assert await runner.send_many(calls) == [1, 1, 0, 1]
    assert await runner.send_many([]) == []
    with pytest.raises(ValueError, match="one script"):
        other = scripts.WorkerGone(workers="w", worker_tasks="t", worker="me")
        await runner.send_many([calls[0], other])


async def test_a_call_queued_on_a_pipeline_of_the_callers(
    docket: Docket, redis_client: Redis
) -> None:
    await redis_client.script_flush()
    async with redis_client.pipeline(transaction=False) as pipe:
        pipe.ping()
        await docket.engine.scripts.queue(pipe, ensure_group(docket, "piped"))
        await docket.engine.scripts.queue(pipe, ensure_group(docket, "piped"))
        assert await pipe.execute() == [True, 1, 0]


async def test_a_call_sent_after_a_command_in_one_write(
    docket: Docket, redis_client: Redis
) -> None:
    wire = docket.engine.connection.wire
    assert wire is not None
    counter = f"{docket.prefix}:counter"

    await redis_client.script_flush()
    replies = await docket.engine.scripts.send_after(
        wire, ("INCR", counter), ensure_group(docket, "after")
    )
    assert replies == (1, 1)
    assert await docket.engine.scripts.send_after(
        wire, ("INCR", counter), ensure_group(docket, "after")
    ) == (2, 0)

    # The command's own error comes first; the script still ran.
    await redis_client.hset(f"{docket.prefix}:a-hash", "field", "value")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await docket.engine.scripts.send_after(
            wire, ("INCR", f"{docket.prefix}:a-hash"), ensure_group(docket, "later")
        )
    assert await docket.engine.scripts.send(ensure_group(docket, "later")) == 0

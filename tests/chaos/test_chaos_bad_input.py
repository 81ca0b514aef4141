"""Garbage written straight into the task stream while good tasks flow through.

A raw redis client ``XADD``s malformed entries (the corpus below: missing and mistyped
fields, unknown tasks, bad pickles and JSON, huge fields, bad and missing HMAC signatures
on a docket with a ``signing_key``) into the docket's stream between the producer's
batches, with the workers running. Every good task must run exactly once, every bad entry
must end in the dead-letter stream with a reason that names its problem and its raw
fields kept, no worker may exit, and no payload may be unpickled unsigned.

Beside them go well-formed, correctly signed entries that have no task record (the
"missing record" case, and generations docket never hands out, -1 or 30 digits): the
worker cannot tell those from a task whose record expired, so they are not dead-lettered
but dropped as stale copies. They must never run and must leave the stream all the same.
"""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from _redis_server import RedisServer
from chaos_harness import Cluster, Producer, check, publish, run_scenario
from ledger_tasks import chaos_task
from redis.asyncio import Redis

from docket import Docket, serialization
from docket._redis.keys import GROUP, Keys
from docket.execution import from_entry

pytestmark = pytest.mark.chaos

SIGNING_KEY = "chaos-signing-key"
OTHER_KEY = "not-the-docket's-key"
TASK = "chaos_task"
MISSING = object()


@dataclass(frozen=True)
class Size:
    tasks: int
    over: float
    # How many times the whole corpus is injected, spread over the production.
    rounds: int
    drain_timeout: float = 60.0


SIZES = {
    "smoke": Size(tasks=1_000, over=4.0, rounds=2),
    "full": Size(tasks=20_000, over=40.0, rounds=20, drain_timeout=300.0),
}


class _Canary:
    """Unpickling this creates ``path``: proof that a payload's code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def pickled(*args: Any) -> bytes:
    return serialization.dump_call(serialization.get_serializer("pickle"), args, {})


@dataclass(frozen=True)
class Kind:
    """One kind of bad entry: how it differs from a good ``chaos_task`` entry, and the
    words its dead letter's reason must contain."""

    name: str
    words: tuple[str, ...]
    overrides: dict[str, Any] = field(default_factory=dict)
    # Sign the final fields with this secret (None: leave 'sig' as the overrides say).
    signed_with: str | None = SIGNING_KEY
    # Sign as if the entry had these fields instead (a signature of another message).
    signed_as: dict[str, Any] = field(default_factory=dict)
    # The whole entry, replacing the good one (for entries with nothing of it left).
    whole: dict[str, Any] | None = None


def corpus(canary: Path) -> list[Kind]:
    good = pickled(0.0, 0.001)
    return [
        *(
            Kind(f"missing-{name}", (name,), {name: MISSING})
            for name in ("key", "gen", "function", "when", "attempt", "payload")
        ),
        Kind("nothing-but-junk", ("missing",), whole={"junk": "x"}),
        Kind("key-empty", ("key",), {"key": ""}),
        Kind("key-not-utf8", ("utf-8",), {"key": b"bad-\xff\xfe"}),
        Kind("function-not-utf8", ("utf-8",), {"function": b"chaos\xfftask"}),
        Kind("gen-not-an-integer", ("gen",), {"gen": "abc"}),
        Kind("gen-fraction", ("gen",), {"gen": "1.5"}),
        Kind("attempt-not-an-integer", ("attempt",), {"attempt": "one"}),
        Kind("attempt-zero", ("attempt",), {"attempt": "0"}),
        Kind("when-not-a-number", ("when",), {"when": "soon"}),
        Kind("when-nan", ("when",), {"when": "nan"}),
        Kind("when-year-10000", ("when",), {"when": "253402300800"}),
        Kind("unknown-task", ("unknown task",), {"function": "no_such_task"}),
        Kind("huge-task-name", ("unknown task",), {"function": "t" * (1024 * 1024)}),
        Kind("unknown-serializer", ("yaml",), {"ser": "yaml"}),
        Kind("corrupt-pickle", ("deserializ",), {"payload": b"\x80\x05garbage\x00\xff"}),
        Kind("truncated-pickle", ("deserializ",), {"payload": good[: len(good) // 2]}),
        Kind("pickle-not-a-call", ("args",), {"payload": pickle.dumps(42)}),
        Kind("bad-json", ("deserializ",), {"ser": "json", "payload": b"{not json"}),
        Kind("truncated-json", ("deserializ",), {"ser": "json", "payload": b'{"args": [0'}),
        Kind(
            "json-not-a-call",
            ("args",),
            {"ser": "json", "payload": b'{"args": 1, "kwargs": {}}'},
        ),
        # Twice the producer's limit (max_payload_bytes), so no producer wrote it.
        Kind("huge-payload", ("deserializ",), {"payload": b"\x80\x05" + b"\xee" * (2 << 20)}),
        Kind("unsigned", ("unsigned",), {"sig": ""}, signed_with=None),
        Kind("no-sig-field", ("unsigned",), {"sig": MISSING}, signed_with=None),
        Kind("wrong-signature", ("signature",), {"sig": "0" * 64}, signed_with=None),
        Kind("signed-with-another-secret", ("signature",), signed_with=OTHER_KEY),
        Kind("signature-of-another-key", ("signature",), signed_as={"key": "someone-else"}),
        Kind("signature-of-another-payload", ("signature",), signed_as={"payload": pickled(1.0)}),
        Kind("signature-of-another-task", ("signature",), signed_as={"function": "other"}),
        Kind(
            "unsigned-canary",
            ("unsigned",),
            {"sig": "", "payload": pickled(_Canary(canary))},
            signed_with=None,
        ),
        Kind(
            "canary-signed-with-another-secret",
            ("signature",),
            {"payload": pickled(_Canary(canary))},
            signed_with=OTHER_KEY,
        ),
    ]


def stale(signed_canary: Path) -> list[Kind]:
    """Well-formed, signed entries with no task record: dropped, never run.

    The signed canary is the cross-process control for the unsigned ones: a worker
    decodes an entry before it claims it, so a payload signed with the docket's key is
    unpickled (its file appears) even though the stale copy never runs."""
    return [
        Kind("no-record", ()),
        Kind("no-record-gen-negative", (), {"gen": "-1"}),
        Kind("no-record-gen-huge", (), {"gen": "9" * 30}),
        Kind("no-record-signed-canary", (), {"payload": pickled(_Canary(signed_canary))}),
    ]


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def bad_entry(kind: Kind, key: str) -> dict[bytes, bytes]:
    """The stream entry of ``kind``, for the (otherwise good) call under ``key``."""
    if kind.whole is not None:
        return {_bytes(k): _bytes(v) for k, v in kind.whole.items()}
    fields: dict[str, Any] = {
        "key": key,
        "gen": "1",
        "function": TASK,
        "when": f"{time.time():.6f}",
        "attempt": "1",
        "payload": pickled(0.0, 0.001),
        "sig": "",
        "trace": "",
        "ser": "pickle",
    }
    fields.update(kind.overrides)
    if kind.signed_with is not None:
        signed = {**fields, **kind.signed_as}
        fields["sig"] = serialization.sign_payload(
            kind.signed_with.encode(),
            _bytes(signed["function"]).decode(errors="replace"),
            _bytes(signed["key"]).decode(errors="replace"),
            _bytes(signed["ser"]).decode(errors="replace"),
            _bytes(signed["payload"]),
        )
    return {_bytes(k): _bytes(v) for k, v in fields.items() if v is not MISSING}


async def xadd(raw: Redis, stream: str, fields: dict[bytes, bytes]) -> str:
    mid = await raw.xadd(stream, fields)  # type: ignore[arg-type]
    return mid.decode() if isinstance(mid, bytes) else mid


def test_the_canary_really_runs_code_when_unpickled(tmp_path: Path) -> None:
    # The control: without it, "the canary file was never created" would prove nothing.
    canary = tmp_path / "canary"
    cloudpickle.loads(pickled(_Canary(canary)))
    assert canary.exists()


def test_the_corpus_differs_from_a_good_entry_only_where_it_says(tmp_path: Path) -> None:
    # The control: the entry every kind starts from is one the worker would run, so each
    # dead letter is for the kind's own problem.
    kinds = corpus(tmp_path / "canary")
    assert len(kinds) >= 16
    assert len({kind.name for kind in kinds}) == len(kinds)
    docket = Docket("bad-input-control", url="memory://bad-input-control", signing_key=SIGNING_KEY)
    execution = from_entry(
        docket, bad_entry(Kind("good", ()), "good"), chaos_task, message_id="1-0", redelivered=False
    )
    assert (execution.key, execution.args) == ("good", (0.0, 0.001))


@pytest.mark.timeout(900)
async def test_bad_entries_beside_good_tasks_are_all_dead_lettered_and_stop_no_worker(
    chaos_size: str,
    make_cluster: Callable[..., Cluster],
    private_redis: RedisServer,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    size = SIZES[chaos_size]
    canary = tmp_path / "canary"
    kinds = corpus(canary)
    signed_canary = tmp_path / "signed-canary"
    stale_kinds = stale(signed_canary)
    cluster = make_cluster(
        private_redis.url,
        concurrency=10,
        redelivery_timeout=2.0,
        env={"DOCKET_SIGNING_KEY": SIGNING_KEY},
    )
    keys = Keys(cluster.docket)
    # mid -> (kind, the fields written)
    injected: dict[str, tuple[Kind, dict[bytes, bytes]]] = {}
    dead_lettered_after = 0.0
    dropped = 0

    async def inject(producer: Producer) -> int:
        nonlocal dead_lettered_after, dropped
        raw = Redis.from_url(cluster.url)
        try:
            interval = size.over / (size.rounds + 1)
            for round_ in range(size.rounds):
                await asyncio.sleep(interval)
                for kind in kinds:
                    fields = bad_entry(kind, f"bad-{kind.name}-{round_}")
                    injected[await xadd(raw, keys.stream, fields)] = (kind, fields)
                for kind in stale_kinds:
                    fields = bad_entry(kind, f"stale-{kind.name}-{round_}")
                    await xadd(raw, keys.stream, fields)
                    dropped += 1
            began = time.monotonic()
            deadline = began + size.drain_timeout
            while await raw.xlen(keys.dead_letters) < len(injected):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            dead_lettered_after = time.monotonic() - began
        finally:
            await raw.aclose()
        return len(injected) + dropped

    outcome = await run_scenario(
        scenario="bad-input",
        size=chaos_size,
        cluster=cluster,
        workers=2,
        tasks=size.tasks,
        over=size.over,
        horizon=1.0,
        fault="bad_entries",
        inflict=inject,
        drain_timeout=size.drain_timeout,
        docket_options={"signing_key": SIGNING_KEY},
    )
    raw = Redis.from_url(cluster.url)
    try:
        letters: list[tuple[bytes, dict[bytes, bytes]]] = await raw.xrange(
            keys.dead_letters, "-", "+"
        )  # type: ignore[assignment]
        pending: dict[str, Any] = await raw.xpending(keys.stream, GROUP)
        left_in_stream = await raw.xlen(keys.stream)
    finally:
        await raw.aclose()
    dead = {fields[b"stream_id"].decode(): fields for _, fields in letters}
    outcome.figures.extra.update(
        {
            "kinds": len(kinds),
            "dead_letters": len(dead),
            "stale_dropped": dropped,
            "dead_lettered_within_s": round(dead_lettered_after, 2),
        }
    )
    publish(outcome.figures, request.node.user_properties)

    check(outcome)
    assert not outcome.exited, f"workers exited: {outcome.exited}\n{outcome.explain()}"
    # Every good task exactly once: no fault here excuses a second run.
    assert outcome.figures.duplicates == 0, outcome.explain()
    assert outcome.analysis.runs == size.tasks, outcome.explain()
    assert not canary.exists(), "a worker unpickled a payload that was not signed by the key"
    assert signed_canary.exists(), "the control failed: not even a signed canary was unpickled"

    missing = [f"{mid} ({kind.name})" for mid, (kind, _) in injected.items() if mid not in dead]
    assert not missing, f"{len(missing)} bad entries not dead-lettered: {missing[:20]}"
    # Only the bad entries: no good task was taken for one.
    assert set(dead) == set(injected), sorted(set(dead) - set(injected))[:10]
    wrong: list[str] = []
    for mid, (kind, fields) in injected.items():
        letter = dead[mid]
        reason = letter.get(b"reason", b"").decode(errors="replace")
        if not reason.strip() or not all(w.lower() in reason.lower() for w in kind.words):
            wrong.append(f"{kind.name}: reason {reason[:200]!r} lacks {kind.words}")
        kept = {
            name[len(b"field:") :]: v for name, v in letter.items() if name.startswith(b"field:")
        }
        if kept != fields:
            wrong.append(f"{kind.name}: raw fields not kept exactly")
    assert not wrong, "\n".join(wrong)
    # Nothing left behind: no bad entry pending in the group or sitting in the stream,
    # the stale copies included (acked away without running: a run would be in the
    # ledger under a key never added, which check() refuses).
    assert pending["pending"] == 0, pending
    assert left_in_stream == 0

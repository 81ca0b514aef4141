"""The Lua scripts behind every state change, each called by name through one typed
signature, and the one path every call takes.

Each script lives in ``lua/<name>.lua``; ``lua/_common.lua`` is prepended to all of them so
helpers like the server clock are written once. A script's header names its keys and its
arguments, in order::

    -- KEYS: stream, failures, runs[record, result_key]
    -- ARGV: group, worker, ttl, events_prefix, record_prefix, failures_kept,
    --       runs[mid, generation, deliveries, state, error, result, traceback]

A plain name is one slot. ``runs[...]`` is a group repeated once per item after the plain
slots, each item filling the names in the brackets; a group named in both lines is one
list of items that bring both keys and arguments. ``task_names...`` is any number of
single values. A line that ends in a comma goes on in the next comment line.

The script's ``Call`` below declares the same names: a keyword-only dataclass, read-only
to the type checker, with a ``Key`` field per key, a field per argument and a ``Sequence``
of a ``Group`` for a repeated group.
Defining the class compares it with the header, so the two cannot drift apart unnoticed;
callers then name every slot instead of counting positions::

    await docket.engine.scripts.send(Settle(stream=..., group=..., ..., runs=[SettleRun(...)]))
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from functools import cache
from hashlib import sha1
from importlib import resources
from operator import attrgetter
from typing import (
    Annotated,
    Any,
    ClassVar,
    Literal,
    TypeAlias,
    dataclass_transform,
    get_args,
    get_origin,
    get_type_hints,
)

from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from .client import RedisClient
from .wire import Wire, is_noscript


@cache
def script_source(name: str) -> str:
    """The text sent to Redis for ``lua/<name>.lua``: the common helpers, then it."""
    folder = resources.files(__package__).joinpath("lua")
    common = folder.joinpath("_common.lua").read_text()
    return common + "\n" + folder.joinpath(f"{name}.lua").read_text()


# -- headers ----------------------------------------------------------------------------


class ScriptSignatureError(TypeError):
    """A script's header and its ``Call`` disagree (or a header cannot be read)."""


class _KeyMark:
    """Marks a field (``Annotated`` metadata) that fills a KEYS slot."""


Key: TypeAlias = Annotated[str, _KeyMark]
"""A field that fills one of the script's KEYS; every other field fills ARGV."""

Value: TypeAlias = str | bytes | int | float
"""What one ARGV slot takes (a bool is refused: pass an int or a string)."""


@dataclass(frozen=True)
class Layout:
    """The names of one side (KEYS or ARGV) of a script's call, in order: ``single`` slots,
    then ``each`` (the repeated part's name, if any) with ``per_item`` names per item, or
    ``per_item`` None for any number of single values."""

    single: tuple[str, ...]
    each: str | None = None
    per_item: tuple[str, ...] | None = None

    def __str__(self) -> str:
        items = list(self.single)
        if self.each is not None:
            if self.per_item is None:
                items.append(f"{self.each}...")
            else:
                items.append(f"{self.each}[{', '.join(self.per_item)}]")
        return ", ".join(items)

    def names(self) -> list[str]:
        """Every name, a repeated part's as ``each.name``, for naming differences."""
        names = list(self.single)
        if self.each is not None:
            names += [f"{self.each}..."] if self.per_item is None else []
            names += [f"{self.each}.{name}" for name in self.per_item or ()]
        return names


_NAME = r"[a-z_][a-z0-9_]*"
_ITEM = re.compile(rf"({_NAME})(?:(\.\.\.)|\[\s*({_NAME}(?:\s*,\s*{_NAME})*)\s*\])?")
_DECLARATION = re.compile(r"--\s*(KEYS|ARGV):(.*)")


def _split_items(text: str) -> list[str]:
    items: list[str] = []
    depth, start = 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    items.append(text[start:].strip())
    return [item for item in items if item]


def _parse_layout(script: str, side: str, text: str) -> Layout:
    single: list[str] = []
    each: str | None = None
    per_item: tuple[str, ...] | None = None
    for item in _split_items(text):
        match = _ITEM.fullmatch(item)
        if match is None:
            raise ScriptSignatureError(f"{script}.lua: cannot read {item!r} in its {side} header")
        if each is not None:
            raise ScriptSignatureError(
                f"{script}.lua: {side} names {match[1]!r} after the repeated {each!r}, "
                "which must come last"
            )
        if match[2] is None and match[3] is None:
            single.append(match[1])
        else:
            each = match[1]
            per_item = None if match[2] else tuple(re.split(r"\s*,\s*", match[3]))
    return Layout(tuple(single), each, per_item)


def parse_header(script: str, source: str) -> tuple[Layout, Layout]:
    """The KEYS and ARGV layouts the header of ``source`` (a script's text) declares."""
    found: dict[str, str] = {}
    lines = iter(source.splitlines())
    for line in lines:
        match = _DECLARATION.fullmatch(line.strip())
        if match is None or match[1] in found:
            continue
        text = match[2].strip()
        while text.endswith(","):
            following = next(lines, "").strip()
            if not following.startswith("--"):
                raise ScriptSignatureError(f"{script}.lua: its {match[1]} header ends in a comma")
            text += " " + following.removeprefix("--").strip()
        found[match[1]] = text
    missing = [side for side in ("KEYS", "ARGV") if side not in found]
    if missing:
        raise ScriptSignatureError(f"{script}.lua: no '-- {missing[0]}:' line in its header")
    return (
        _parse_layout(script, "KEYS", found["KEYS"]),
        _parse_layout(script, "ARGV", found["ARGV"]),
    )


# -- calls ------------------------------------------------------------------------------


def _tuple_getter(names: Sequence[str]) -> Callable[[Any], tuple[Any, ...]]:
    """Reads ``names`` off an object as a tuple (attrgetter, the fast way, in C)."""
    if not names:
        return lambda _: ()
    if len(names) == 1:
        one = attrgetter(names[0])
        return lambda item: (one(item),)
    return attrgetter(*names)


class _Fields:
    """How one class's fields split into KEYS and ARGV."""

    def __init__(self, cls: type) -> None:
        hints = get_type_hints(cls, include_extras=True)
        keys: list[str] = []
        args: list[str] = []
        self.each: str | None = None
        self.group: type[Group] | None = None
        for field in fields(cls):
            hint = hints[field.name]
            if get_origin(hint) is Annotated and _KeyMark in get_args(hint)[1:]:
                keys.append(field.name)
            elif get_origin(hint) is Sequence:
                if self.each is not None:
                    raise ScriptSignatureError(
                        f"{cls.__name__} repeats both {self.each!r} and {field.name!r}; "
                        "a script takes one repeated part"
                    )
                self.each = field.name
                (item,) = get_args(hint)
                if isinstance(item, type) and issubclass(item, Group):
                    self.group = item
            else:
                args.append(field.name)
        self.keys = tuple(keys)
        self.args = tuple(args)

    def layouts(self) -> tuple[Layout, Layout]:
        if self.each is None:
            return Layout(self.keys), Layout(self.args)
        if self.group is None:
            return Layout(self.keys), Layout(self.args, self.each)
        per_key, per_arg = self.group._fields.keys, self.group._fields.args
        return (
            Layout(self.keys, self.each if per_key else None, per_key or None),
            Layout(self.args, self.each if per_arg else None, per_arg or None),
        )


def _declare(cls: type[Group] | type[Call]) -> None:
    """Make ``cls`` the keyword-only dataclass its base promises, and note how its fields
    fill KEYS and ARGV."""
    # Frozen to the type checker only (dataclass_transform below): a frozen dataclass's
    # __init__ costs three times a plain one's, and a call is built per task on the hot
    # path. A changed call is a new one, made with dataclasses.replace.
    dataclass(kw_only=True)(cls)
    cls._fields = _Fields(cls)
    cls._keys = _tuple_getter(cls._fields.keys)
    cls._args = _tuple_getter(cls._fields.args)


@dataclass_transform(kw_only_default=True, frozen_default=True)
class Group:
    """One item of a script's repeated part: its ``Key`` fields go to KEYS, the rest to
    ARGV, both in the order declared. Subclasses are keyword-only dataclasses."""

    _fields: ClassVar[_Fields]
    _keys: ClassVar[Callable[[Any], tuple[Any, ...]]]
    _args: ClassVar[Callable[[Any], tuple[Any, ...]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _declare(cls)
        if cls._fields.each is not None:
            raise ScriptSignatureError(f"{cls.__name__}: a group cannot repeat a part itself")


def check_signature(call: type[Call], source: str) -> None:
    """Refuse ``call`` unless its fields name exactly what the header of ``source``
    declares, in the same order."""
    script = call.script
    declared = call._fields.layouts()
    for side, header, ours in zip(
        ("KEYS", "ARGV"), parse_header(script, source), declared, strict=True
    ):
        if header == ours:
            continue
        theirs, mine = header.names(), ours.names()
        differing = next(
            (
                f"{a!r} in the header, {b!r} in {call.__name__}"
                for a, b in zip(theirs, mine, strict=False)
                if a != b
            ),
            f"the header has {len(theirs)} names, {call.__name__} {len(mine)}",
        )
        raise ScriptSignatureError(
            f"{script}.lua and {call.__name__} disagree on {side}: {differing} "
            f"(header: {header}; {call.__name__}: {ours})"
        )


CALLS: dict[str, type[Call]] = {}
"""Every script's ``Call``, by script name."""


@dataclass_transform(kw_only_default=True, frozen_default=True)
class Call:
    """One call of one script, every key and argument named. A subclass names its script
    (``class Settle(Call, script="settle")``) and is checked against its header as it is
    defined; subclasses are keyword-only dataclasses."""

    script: ClassVar[str]
    source: ClassVar[str]
    sha: ClassVar[str]
    _fields: ClassVar[_Fields]
    _keys: ClassVar[Callable[[Any], tuple[Any, ...]]]
    _args: ClassVar[Callable[[Any], tuple[Any, ...]]]

    def __init_subclass__(cls, *, script: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.script = script
        cls.source = script_source(script)
        cls.sha = sha1(cls.source.encode()).hexdigest()
        _declare(cls)
        check_signature(cls, cls.source)
        CALLS.setdefault(script, cls)

    def flatten(self) -> tuple[list[Any], list[Any]]:
        """The script's KEYS and ARGV for this call."""
        keys = list(type(self)._keys(self))
        args = list(type(self)._args(self))
        each = self._fields.each
        if each is not None:
            items: Sequence[Any] = getattr(self, each)
            group = self._fields.group
            if group is None:
                args.extend(items)
            else:
                for item in items:
                    keys.extend(group._keys(item))
                    args.extend(group._args(item))
        return keys, args


# -- the scripts ------------------------------------------------------------------------
#
# What each argument means, and what each script returns, is written in its header.


class Schedule(Call, script="schedule"):
    stream: Key
    queue: Key
    record: Key
    generation_counter: Key
    high_stream: Key
    low_stream: Key
    mode: str
    key: str
    function: str
    when: str
    payload: bytes
    signature: str
    attempt: int
    trace: str
    expected_generation: str
    events_prefix: str
    wake_channel: str
    serializer: str
    generated_key: str
    priority: int
    meta: bytes


class MoveDue(Call, script="move_due"):
    queue: Key
    stream: Key
    high_stream: Key
    low_stream: Key
    record_prefix: str
    limit: int
    events_prefix: str


class ClaimMessage(Group):
    record: Key
    mid: str
    generation: int
    redelivered: int
    deliveries: int


class Claim(Call, script="claim"):
    stream: Key
    group: str
    worker: str
    events_prefix: str
    record_prefix: str
    messages: Sequence[ClaimMessage]


class TakeLevel(Group):
    stream: Key
    watermark: str
    scan: int
    reserve: int


class Take(Call, script="take"):
    group: str
    worker: str
    count: int
    read: int
    events_prefix: str
    record_prefix: str
    levels: Sequence[TakeLevel]


class SettleRun(Group):
    record: Key
    result_key: Key
    mid: str
    generation: int
    deliveries: int
    state: str
    error: str
    result: str | bytes
    traceback: str


class Settle(Call, script="settle"):
    stream: Key
    failures: Key
    group: str
    worker: str
    ttl: float
    events_prefix: str
    record_prefix: str
    failures_kept: int
    runs: Sequence[SettleRun]


class RenewMessage(Group):
    mid: str
    deliveries: int


class Renew(Call, script="renew"):
    stream: Key
    group: str
    worker: str
    messages: Sequence[RenewMessage]


class Reclaim(Call, script="reclaim"):
    stream: Key
    dead_letters: Key
    group: str
    worker: str
    min_idle_ms: int
    cursor: str
    count: int
    max_deliveries: int
    record_prefix: str
    events_prefix: str
    ttl: float


class DeadMessage(Group):
    mid: str
    reason: str
    deliveries: int


class DeadLetter(Call, script="dead_letter"):
    stream: Key
    dead_letters: Key
    group: str
    worker: str
    record_prefix: str
    events_prefix: str
    ttl: float
    messages: Sequence[DeadMessage]


class RequeueEntry(Group):
    record: Key
    id: str


class Requeue(Call, script="requeue"):
    stream: Key
    origin: Key
    generation_counter: Key
    high_stream: Key
    low_stream: Key
    record_prefix: str
    events_prefix: str
    attempt: str
    entries: Sequence[RequeueEntry]


class Cancel(Call, script="cancel"):
    stream: Key
    queue: Key
    record: Key
    high_stream: Key
    low_stream: Key
    key: str
    ttl: float
    events_prefix: str
    cancel_channel: str
    expected_generation: str
    spared_generation: str


class Clear(Call, script="clear"):
    stream: Key
    queue: Key
    group: str
    record_prefix: str
    ttl: float
    events_prefix: str
    batch: int


class Progress(Call, script="progress"):
    record: Key
    generation: str
    increment: int
    total: int | str
    message: str
    message_set: int
    events_prefix: str
    key: str
    ttl: float


class Mark(Call, script="mark"):
    record: Key
    result_key: Key
    stream: Key
    generation: int
    state: str
    worker: str
    error: str
    result: str | bytes
    ttl: float
    events_prefix: str
    key: str
    group: str
    mid: str


class Heartbeat(Call, script="heartbeat"):
    workers: Key
    worker_tasks: Key
    worker: str
    window: float
    task_names: Sequence[str]


class Cooldown(Call, script="cooldown"):
    cooldown: Key
    op: Literal["start", "undo"]
    token: str
    window_ms: int


class WorkerGone(Call, script="worker_gone"):
    workers: Key
    worker_tasks: Key
    worker: str


class Strike(Call, script="strike"):
    strikes: Key
    action: str
    condition: str
    strikes_channel: str


class EnsureGroup(Call, script="ensure_group"):
    stream: Key
    group: str


class RateLimit(Call, script="rate_limit"):
    window: Key
    op: Literal["take", "give_back"]
    member: str
    limit: int
    window_ms: int
    expiry_margin_ms: int


class Debounce(Call, script="debounce"):
    burst: Key
    key: str
    settle_ms: int
    expiry_ms: int
    record_prefix: str
    checked_winner: str
    winner_pending: str


class ConcurrencyAcquire(Call, script="concurrency_acquire"):
    holders: Key
    waiters: Key
    stream: Key
    record: Key
    registry: Key
    limits: Key
    group: str
    worker: str
    key: str
    max_concurrent: int
    lease: float
    mid: str
    deliveries: int
    generation: int
    events_prefix: str


class ConcurrencyRelease(Call, script="concurrency_release"):
    holders: Key
    waiters: Key
    stream: Key
    registry: Key
    limits: Key
    high_stream: Key
    low_stream: Key
    key: str
    lease: float
    record_prefix: str
    events_prefix: str


class ConcurrencyTake(Call, script="concurrency_take"):
    holders: Key
    waiters: Key
    registry: Key
    limits: Key
    key: str
    max_concurrent: int
    lease: float


class ConcurrencyPark(Call, script="concurrency_park"):
    stream: Key
    record: Key
    group: str
    worker: str
    key: str
    mid: str
    deliveries: int
    generation: int
    holders: str
    events_prefix: str


class ConcurrencyFree(Call, script="concurrency_free"):
    holders: Key
    waiters: Key
    registry: Key
    limits: Key
    waking: Key
    key: str
    lease: float


class ConcurrencyWoken(Call, script="concurrency_woken"):
    holders: Key
    waiters: Key
    registry: Key
    limits: Key
    waking: Key
    key: str


class ConcurrencyWake(Call, script="concurrency_wake"):
    stream: Key
    record: Key
    high_stream: Key
    low_stream: Key
    key: str
    holders: str
    events_prefix: str


class HeldSlot(Group):
    holders: Key
    key: str


class ConcurrencyRenew(Call, script="concurrency_renew"):
    lease: float
    slots: Sequence[HeldSlot]


SCRIPT_NAMES = tuple(CALLS)


# -- running them -----------------------------------------------------------------------


class Scripts:
    """The scripts registered on one client, and the one way they are run: on the lean
    connection (``Wire``) when there is one, else through redis-py's script objects. Both
    load a script the server does not know (after a restart, say) and run it again."""

    def __init__(
        self,
        client: RedisClient,
        wire: Wire | None = None,
        *,
        cluster: bool = False,
        route: Callable[[str], Wire | None] | None = None,
    ) -> None:
        self._client = client
        self._wire = wire
        self._cluster = cluster
        # On a Cluster, the lean connection serving a call's first key (a partitioned
        # docket's partitions live on different shards).
        self._route = route if wire is not None else None
        self._registered: dict[str, AsyncScript] = {
            name: client.register_script(script_source(name)) for name in SCRIPT_NAMES
        }

    async def send(self, call: Call) -> Any:
        """Run one call."""
        keys, args = call.flatten()
        return await self._run(call.script, keys, args)

    async def send_many(self, calls: Sequence[Call]) -> list[Any]:
        """Run calls of one script in one pipeline; a failed call's error is returned in
        its place, not raised."""
        if not calls:
            return []
        script = calls[0].script
        if any(call.script != script for call in calls):
            raise ValueError("send_many runs calls of one script")
        flat = [call.flatten() for call in calls]
        registered = self._registered[script]
        if self._route is not None:
            return await self._routed_many(registered.sha, script_source(script), flat)
        if self._wire is not None:
            return await self._wire.evalsha_many(registered.sha, script_source(script), flat)
        replies = await self._pipelined(registered, flat)
        missing = [i for i, reply in enumerate(replies) if is_noscript(reply)]
        if missing:
            # A cluster pipeline does not load scripts first as a plain one does (and a
            # replica promoted by a failover knows none): load it, and send those again.
            await self._client.script_load(registered.script)
            again = await self._pipelined(registered, [flat[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def _routed_many(
        self, sha: str, source: str, flat: Sequence[tuple[list[Any], list[Any]]]
    ) -> list[Any]:
        """``send_many`` over the lean connections of several shards: each shard's calls
        in one pipeline, the pipelines at once, the replies back in the calls' order."""
        assert self._route is not None
        by_wire: dict[int, tuple[Wire, list[int]]] = {}
        for index, (keys, _) in enumerate(flat):
            wire = self._route(keys[0]) if keys else self._wire
            assert wire is not None
            by_wire.setdefault(id(wire), (wire, []))[1].append(index)
        if len(by_wire) == 1:
            wire, _ = next(iter(by_wire.values()))
            return await wire.evalsha_many(sha, source, flat)
        groups = list(by_wire.values())
        replies = await asyncio.gather(
            *(wire.evalsha_many(sha, source, [flat[i] for i in group]) for wire, group in groups)
        )
        ordered: list[Any] = [None] * len(flat)
        for (_, indexes), group_replies in zip(groups, replies, strict=True):
            for index, reply in zip(indexes, group_replies, strict=True):
                ordered[index] = reply
        return ordered

    async def _pipelined(
        self, registered: AsyncScript, flat: Sequence[tuple[list[Any], list[Any]]]
    ) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for keys, args in flat:
                if self._cluster:
                    # redis-py refuses evalsha() on a cluster pipeline (it cannot load the
                    # script first), not the command itself; NOSCRIPT is handled above.
                    pipe.execute_command("EVALSHA", registered.sha, len(keys), *keys, *args)
                else:
                    await registered(keys=keys, args=args, client=pipe)
            return list(await pipe.execute(raise_on_error=False))

    async def queue(self, pipe: Any, call: Call) -> None:
        """Add a call to a redis-py pipeline of the caller's (its reply comes with the
        pipeline's, which loads the script first if the server does not know it).

        A cluster pipeline loads nothing first, so there the call carries its source
        (``EVAL``): the pipeline's reply cannot be sent again from here."""
        keys, args = call.flatten()
        if self._cluster:
            pipe.execute_command("EVAL", script_source(call.script), len(keys), *keys, *args)
            return
        await self._registered[call.script](keys=keys, args=args, client=pipe)

    async def send_after(self, wire: Wire, command: Sequence[Any], call: Call) -> tuple[Any, Any]:
        """Send ``command`` and then ``call`` in one write on ``wire``, so Redis runs the
        script the moment the command is done (even one that blocked); returns both
        replies. An error reply to the command is raised before the script's."""
        keys, args = call.flatten()
        sha = self._registered[call.script].sha
        first, reply = await wire.pipeline([command, ("EVALSHA", sha, len(keys), *keys, *args)])
        if isinstance(first, ResponseError):
            raise first
        if isinstance(reply, ResponseError):
            if not is_noscript(reply):
                raise reply
            # The server lost its scripts (a restart): load it, and run the call alone.
            reply = await wire.evalsha(sha, call.source, keys, args)
        return first, reply

    async def _run(self, script: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Where every single call goes."""
        registered = self._registered[script]
        wire = self._wire
        if self._route is not None and keys:
            wire = self._route(keys[0])
        if wire is not None:
            return await wire.evalsha(registered.sha, script_source(script), keys, args)
        return await registered(keys=list(keys), args=list(args))

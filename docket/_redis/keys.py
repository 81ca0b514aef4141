"""Where a docket keeps things in Redis.

Every key and channel of a docket starts with ``{name}``: the braces make it a hash tag,
so on Redis Cluster all of a docket lives in one slot and every script stays legal.

A partitioned docket (``partitions=N``) keeps partition 0 under ``{name}`` (the control
partition: strikes, workers, concurrency and rate-limit state, the stored partition
count) and partition ``p`` of the rest under ``{name/p...}`` (see ``partition_tag``):
another hash tag, so on a Cluster another slot. Each task key lives wholly in one
partition (its stream entry, schedule, record and result), so every script that
touches a task stays in one slot.
``/`` cannot occur in a docket name, so no docket's keys fall under another's.
Channels are the docket's, whatever the partition: a plain PUBLISH reaches every
subscriber of a Cluster.
"""

from __future__ import annotations

import itertools
import re
import zlib
from dataclasses import dataclass
from functools import cache
from typing import Self, overload

from redis.crc import key_slot

GROUP = "docket-workers"

# Names end up in key patterns, ACL globs and hash tags, so characters that mean
# something to any of those are refused rather than escaped.
_VALID_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


def validate_name(name: str, what: str = "docket name") -> str:
    return checked_name(
        _VALID_NAME,
        name,
        what,
        "use 1-128 letters, digits, '_', '-' or '.' (no spaces, ':', glob characters or "
        "braces, which would reach other dockets' keys)",
    )


def checked_name(pattern: re.Pattern[str], name: str, what: str, rule: str) -> str:
    """``name`` if ``pattern`` matches all of it; otherwise a ValueError naming ``what``
    and the ``rule`` it breaks."""
    if not isinstance(name, str) or not pattern.fullmatch(name):
        raise ValueError(f"Invalid {what} {name!r}: {rule}")
    return name


class _Under:
    """A key (or key prefix) of the docket: ``stream = _Under("stream")`` makes
    ``keys.stream`` read ``{name}:stream``.

    Built once per ``Keys``: the first read keeps the name in the instance's ``__dict__``,
    which then answers every later read directly (the producer and the worker read these
    for every task)."""

    def __init__(self, suffix: str, channel: bool = False) -> None:
        self.suffix = suffix
        # Channels are the docket's, under ``{name}`` whatever the partition.
        self.channel = channel
        self.attribute = ""

    def __set_name__(self, owner: type[Keys], name: str) -> None:
        self.attribute = name

    def value(self, keys: Keys) -> str:
        prefix = "{" + keys.name + "}" if self.channel else keys.prefix
        return f"{prefix}:{self.suffix}"

    @overload
    def __get__(self, keys: None, owner: type[Keys]) -> Self: ...
    @overload
    def __get__(self, keys: Keys, owner: type[Keys]) -> str: ...
    def __get__(self, keys: Keys | None, owner: type[Keys]) -> str | Self:
        if keys is None:
            return self
        value = self.value(keys)
        # Keys is frozen, so its own __setattr__ refuses; the name never changes anyway.
        keys.__dict__[self.attribute] = value
        return value


SLOTS = 16384
# How close to its place on the slot ring a partition's slot must fall.
_SLOT_WINDOW = 32


@cache
def partition_tag(name: str, partition: int, partitions: int) -> str:
    """The hash tag of partition ``partition`` of ``partitions`` of docket ``name``.

    Partition 0's is ``{name}``. Partition p's is ``{name/p}``, or ``{name/p.k}`` for the
    first k that puts its Cluster slot within a few slots of p/partitions of the way round
    the slot ring from partition 0's: the partitions' slots are spread evenly, so on a
    Cluster whose slots are split evenly between N primaries (as ``redis-cli --cluster
    create`` splits them), N partitions land one on each instead of wherever the hash
    puts them. Every process finds the same tags."""
    if partition == 0:
        return "{" + name + "}"
    start = key_slot(name.encode())
    target = (start + partition * SLOTS // partitions) % SLOTS
    for attempt in itertools.count():
        tag = f"{name}/{partition}" if attempt == 0 else f"{name}/{partition}.{attempt}"
        if (key_slot(tag.encode()) - target) % SLOTS < _SLOT_WINDOW:
            return "{" + tag + "}"
    raise AssertionError("unreachable")


class _LevelStream(_Under):
    """The stream of a lane's level: ``{name}:stream`` for NORMAL (the released name),
    ``{name}:stream:high`` and ``{name}:stream:low`` for the others."""

    def value(self, keys: Keys) -> str:
        return super().value(keys) + LEVEL_SUFFIXES[keys.level]


LEVELS = (1, 0, -1)
"""The priority levels (``docket.Priority`` values), in the order a worker reads them."""
LEVEL_SUFFIXES = {1: ":high", 0: "", -1: ":low"}


@dataclass(frozen=True)
class Keys:
    name: str
    partition: int = 0
    partitions: int = 1
    level: int = 0
    """The priority level whose stream ``stream`` names (a lane; see ``lane``): every
    other key is the partition's, whatever the level."""

    @property
    def prefix(self) -> str:
        return partition_tag(self.name, self.partition, self.partitions)

    stream = _LevelStream("stream")
    queue = _Under("queue")
    generation = _Under("generation")
    dead_letters = _Under("dead-letters")
    failures = _Under("failures")
    """The recent failures: runs that ended failed, with their messages (``docket.failures``)."""
    workers = _Under("workers")
    strikes = _Under("strikes")
    record_prefix = _Under("task:")
    results = _Under("result")
    """The collection results live in: one key per run, ``<collection>:<result key>``."""
    concurrency_registry = _Under("concurrency-keys")
    """Every concurrency limit that has holders or waiters right now."""
    concurrency_limits = _Under("concurrency-limits")
    """Each such limit's max_concurrent, for the sweeps that wake its waiters."""

    # Pub/sub channels
    events_prefix = _Under(channel=True, suffix="events:")
    wake_channel = _Under(channel=True, suffix="wake")
    cancel_channel = _Under(channel=True, suffix="cancel")
    strikes_channel = _Under(channel=True, suffix="strikes-changed")
    partition_count = _Under("partitions")
    """The partition count a partitioned docket was made with (control partition only)."""

    # For others' data: a docket's own keys never start with this, so nothing it does
    # (clear(), expiry, the test suite's leak checks) touches what lives under it.
    external_prefix = _Under("ext:")

    def lane(self, level: int) -> Keys:
        """These keys with ``stream`` naming the stream of priority ``level``."""
        if level == self.level:
            return self
        return _lane(self.name, self.partition, self.partitions, level)

    def lanes(self) -> tuple[Keys, ...]:
        """One lane per level, in the order a worker reads them (HIGH first)."""
        return tuple(self.lane(level) for level in LEVELS)

    def level_stream(self, level: int) -> str:
        return self.lane(level).stream

    @property
    def streams(self) -> tuple[str, ...]:
        """Every level's stream of this partition, HIGH first."""
        return tuple(lane.stream for lane in self.lanes())

    def record(self, key: str) -> str:
        return self.record_prefix + key

    def result(self, key: str, generation: int | str) -> str:
        """Where the default store keeps one run's result (its generation in the name, so
        a superseded run's result is never the one read)."""
        return f"{self.results}:{key}:{generation}"

    def worker_tasks(self, worker: str) -> str:
        return f"{self.prefix}:worker-tasks:{worker}"

    def events(self, key: str) -> str:
        return self.events_prefix + key

    def external(self, suffix: str) -> str:
        return self.external_prefix + suffix

    # The released layout's names for things this layout keeps elsewhere (in the task's
    # record, or on one channel for the whole docket): keys under the prefix that
    # nothing reads or writes, so code that touches them disturbs nothing.
    def unused(self, name: str) -> str:
        return f"{self.prefix}:unused:{name}"

    def permanent(self) -> set[str]:
        """Keys that legitimately outlive every task (what a leak check may ignore)."""
        return {
            *self.streams,
            self.generation,
            self.dead_letters,
            self.failures,
            self.workers,
            self.strikes,
            self.partition_count,
        }


@cache
def _lane(name: str, partition: int, partitions: int, level: int) -> Keys:
    if level not in LEVEL_SUFFIXES:
        raise ValueError(f"No priority level {level!r}: the levels are {LEVELS}")
    return Keys(name, partition, partitions, level)


MAX_PARTITIONS = 1024


def partition_of(key: str, partitions: int) -> int:
    """The partition a task key lives in: the same for every process, forever (CRC-32,
    not Python's per-process string hash)."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % partitions


def validate_partitions(partitions: object) -> int:
    if isinstance(partitions, bool) or not isinstance(partitions, int):
        raise ValueError(
            f"partitions must be a whole number from 1 to {MAX_PARTITIONS}, not {partitions!r}"
        )
    if not 1 <= partitions <= MAX_PARTITIONS:
        raise ValueError(f"partitions must be from 1 to {MAX_PARTITIONS}, not {partitions}")
    return partitions

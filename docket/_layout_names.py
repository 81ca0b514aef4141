"""The released docket's names for its Redis layout (``docket.queue_key``,
``docket.runs_key(key)``...), each read off this docket's ``Keys``.

Code written for the released docket reads these to find its data; names the released
layout has and ours does not use still answer, under a prefix nothing here writes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, Self, overload

from ._redis.keys import GROUP, Keys


class _HasKeys(Protocol):
    keys: Keys


class _Name[T]:
    """A released name, read off the owner's ``Keys`` by ``read``: a key (a property in
    the released docket) or a function of a task's key (a method there)."""

    def __init__(self, read: Callable[[Keys], T], doc: str) -> None:
        self.read = read
        self.name = ""
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, owner_instance: None, owner: type) -> Self: ...
    @overload
    def __get__(self, owner_instance: _HasKeys, owner: type) -> T: ...
    def __get__(self, owner_instance: _HasKeys | None, owner: type) -> T | Self:
        if owner_instance is None:
            return self
        return self.read(owner_instance.keys)

    def __set__(self, owner_instance: _HasKeys, value: object) -> None:
        # Read-only, as the released properties are: the layout follows the name.
        raise AttributeError(f"{self.name!r} is read off the docket's name; it cannot be set")


def _unused(stem: str) -> Callable[[Keys], Callable[[str], str]]:
    """A released per-task name this layout has no use for: it names a key under the
    unused prefix, so code that reads it finds nothing rather than another key."""
    return lambda keys: lambda name: keys.unused(f"{stem}:{name}")


class ReleasedLayoutNames:
    """The released layout names, for a class with ``keys`` (``Docket``)."""

    keys: Keys

    @property
    def prefix(self) -> str:
        """What every key and channel of this docket starts with: ``{name}``, a hash tag,
        so all of it lives in one Redis Cluster slot."""
        return self.keys.prefix

    def key(self, suffix: str) -> str:
        """A key of your own under this docket's prefix (same hash slot), for data that
        lives beside the docket's (FastMCP keeps its task metadata here). The docket never
        reads, writes, clears or expires anything under it."""
        return self.keys.external(suffix)

    @property
    def worker_group_name(self) -> str:
        return GROUP

    @property
    def redelivery_sweep_key(self) -> str:
        """Unused here: workers reclaim stalled tasks without a shared lock."""
        return self.keys.unused("redelivery-sweep")

    queue_key = _Name(
        lambda keys: keys.queue,
        "The sorted set of scheduled tasks' keys, scored by when they are due.",
    )
    stream_key = _Name(
        lambda keys: keys.stream,
        "The stream of tasks due now, which workers read as ``worker_group_name``.",
    )
    results_collection = _Name(
        lambda keys: keys.results,
        "The collection results live in by default (``<collection>:<result_key>``).",
    )
    workers_set = _Name(
        lambda keys: keys.workers, "The sorted set of workers, scored by their last heartbeat."
    )
    runs_key = _Name(
        lambda keys: keys.record,
        "The hash recording a task's state (``state``, ``worker``, ``error``...).",
    )
    worker_tasks_set = _Name(
        lambda keys: keys.worker_tasks, "The set of task names a worker can run."
    )
    known_task_key = _Name(
        _unused("known"),
        "Unused here: a task's record (``runs_key``) is what makes its key known.",
    )
    parked_task_key = _Name(
        _unused("parked"),
        "Unused here: a scheduled task's call is kept in its record (``runs_key``).",
    )
    stream_id_key = _Name(
        _unused("stream-id"),
        "Unused here: a queued task's stream id is kept in its record (``runs_key``).",
    )
    cancel_channel = _Name(
        _unused("cancel"),
        "Unused here: workers hear every cancellation on one channel per docket.",
    )
    task_workers_set = _Name(
        _unused("task-workers"),
        "Unused here: which workers run a task is read from ``worker_tasks_set``.",
    )

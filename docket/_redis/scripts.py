"""The Lua scripts behind every state change, loaded once per process.

Each script lives in ``lua/<name>.lua``; ``_common.lua`` is prepended to all of them
so helpers like the server clock are written once. redis-py's ``Script`` objects run
``EVALSHA`` and fall back to ``EVAL`` when a server has not seen the script yet (after a
restart, say), and they work inside pipelines.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript

from .client import RedisClient
from .wire import Wire

SCRIPT_NAMES = (
    "schedule",
    "move_due",
    "claim",
    "claim_delivered",
    "settle",
    "renew",
    "reclaim",
    "dead_letter",
    "dead_letter_requeue",
    "cancel",
    "clear",
    "progress",
    "mark",
    "heartbeat",
    "worker_gone",
    "strike",
    "ensure_group",
    "rate_limit",
    "cooldown",
    "debounce",
    "concurrency_acquire",
    "concurrency_release",
    "concurrency_renew",
)


@cache
def script_source(name: str) -> str:
    folder = resources.files(__package__).joinpath("lua")
    common = folder.joinpath("_common.lua").read_text()
    return common + "\n" + folder.joinpath(f"{name}.lua").read_text()


class Scripts:
    """The scripts registered on one client."""

    def __init__(self, client: RedisClient, wire: Wire | None = None) -> None:
        self._client = client
        self._wire = wire
        for name in SCRIPT_NAMES:
            setattr(self, name, client.register_script(script_source(name)))

    async def run(self, name: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run one script on the hot path (the lean connection when there is one)."""
        script: AsyncScript = getattr(self, name)
        if self._wire is not None:
            return await self._wire.evalsha(script.sha, script_source(name), keys, args)
        return await script(keys=list(keys), args=list(args))

    async def run_many(
        self, name: str, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]
    ) -> list[Any]:
        """Many runs of one script in one pipeline; a failed run's error is returned in
        its place, not raised."""
        script: AsyncScript = getattr(self, name)
        if self._wire is not None:
            return await self._wire.evalsha_many(script.sha, script_source(name), calls)
        async with self._client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                await script(keys=list(keys), args=list(args), client=pipe)
            return list(await pipe.execute(raise_on_error=False))

    schedule: AsyncScript
    move_due: AsyncScript
    claim: AsyncScript
    claim_delivered: AsyncScript
    settle: AsyncScript
    renew: AsyncScript
    reclaim: AsyncScript
    dead_letter: AsyncScript
    dead_letter_requeue: AsyncScript
    cancel: AsyncScript
    clear: AsyncScript
    progress: AsyncScript
    mark: AsyncScript
    heartbeat: AsyncScript
    worker_gone: AsyncScript
    strike: AsyncScript
    ensure_group: AsyncScript
    rate_limit: AsyncScript
    cooldown: AsyncScript
    debounce: AsyncScript
    concurrency_acquire: AsyncScript
    concurrency_release: AsyncScript
    concurrency_renew: AsyncScript

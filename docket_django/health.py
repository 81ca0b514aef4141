"""Health: is Redis reachable, and are workers heartbeating?"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Any

from .conf import DEFAULT_ALIAS, aliases
from .portal import forget_dockets, get_portal


@dataclass
class DocketHealth:
    alias: str
    redis: bool
    workers: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def healthy(self, require_workers: bool = True) -> bool:
        return self.redis and (bool(self.workers) or not require_workers)


async def read_status(alias: str) -> DocketHealth:
    try:
        docket = await get_portal().docket(alias)
        async with docket.redis() as redis:
            await redis.ping()
        workers = await docket.workers()
    except Exception as error:
        forget_dockets()  # reconnect next time
        return DocketHealth(alias, False, error=f"{type(error).__name__}: {error}")
    return DocketHealth(
        alias,
        True,
        [
            {"name": w.name, "last_seen": w.last_seen.isoformat(), "tasks": sorted(w.tasks)}
            for w in workers
        ],
    )


def status(alias: str = DEFAULT_ALIAS, timeout: float = 5.0) -> DocketHealth:
    async def bounded() -> DocketHealth:
        try:
            return await asyncio.wait_for(read_status(alias), timeout)
        except TimeoutError:
            return DocketHealth(alias, False, error=f"no answer within {timeout}s")

    return get_portal().run(bounded())


def ping(alias: str = DEFAULT_ALIAS, timeout: float = 5.0) -> str | None:
    """None when ``alias``'s Redis answers, else the error."""
    health = status(alias, timeout)
    return None if health.redis else health.error


def report(selected: list[str] | None = None, require_workers: bool = True) -> dict[str, Any]:
    results = [status(alias) for alias in (selected or aliases())]
    return {
        "healthy": all(r.healthy(require_workers) for r in results),
        "dockets": [asdict(r) for r in results],
    }

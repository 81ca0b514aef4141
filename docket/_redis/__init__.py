"""How docket talks to Redis: connections, key names, scripts and the wire protocol."""

from __future__ import annotations

from typing import Any

__all__ = ["confirm_subscriptions"]


async def confirm_subscriptions(pubsub: Any, count: int) -> None:
    """Wait until the server has confirmed ``count`` (P)SUBSCRIBE commands on ``pubsub``.

    ``subscribe()`` only sends the command; until its confirmation comes back, a
    message published from another connection may be missed. On a fresh connection
    the confirmations are the first messages to arrive, so reading ``count`` of them
    is exactly the wait.
    """
    for _ in range(count):
        await pubsub.get_message(ignore_subscribe_messages=False, timeout=None)

"""Building ``Docket`` objects from the ``DOCKET`` setting."""

from __future__ import annotations

from docket import Docket

from .conf import DEFAULT_ALIAS, docket_settings
from .registry import register_all
from .signing import signing_key_for


def build_docket(
    alias: str = DEFAULT_ALIAS, *, enable_internal_instrumentation: bool = False
) -> Docket:
    """A new, not yet entered ``Docket`` for ``alias``, with the alias's tasks (those
    declared with ``@docket_django.task`` and the ``django.tasks`` runner) registered.
    Touches nothing: use it with ``async with``. ``enable_internal_instrumentation`` is
    the worker option of that name, which reaches the docket's own polling too."""
    config = docket_settings(alias)
    docket = Docket(
        name=config.name,
        url=config.url,
        heartbeat_interval=config.heartbeat_interval,
        missed_heartbeats=config.missed_heartbeats,
        execution_ttl=config.execution_ttl,
        signing_key=signing_key_for(config),
        serializer=config.serializer,
        max_payload_bytes=config.max_payload_bytes,
        partitions=config.partitions,
        enable_internal_instrumentation=enable_internal_instrumentation,
    )
    register_all(docket, alias)
    return docket


def get_docket(alias: str = DEFAULT_ALIAS) -> Docket:
    """The docket configured under ``alias`` in ``DOCKET``, not entered yet::

        async with docket_django.get_docket() as docket:
            await docket.add(send_receipt)(order_id=7)

    For synchronous code (views, signals, admin actions) use ``task.enqueue(...)`` or
    ``docket_django.enqueue(...)``, which share one connection per process and respect
    transactions.
    """
    return build_docket(alias)

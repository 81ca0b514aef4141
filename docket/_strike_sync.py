"""Keeping a docket's ``strike_list`` the same as the strikes stored in Redis: strikes and
restores written through the strike script, every change heard on the strikes channel and
the whole set read again, in this process and every other one on the docket."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AbstractContextManager, suppress
from typing import TYPE_CHECKING, Any, Literal

from ._redis import scripts
from ._strike_codec import decode_condition, encode_condition
from ._text import as_text
from .execution import TaskFunction
from .instrumentation import internal
from .strikes import Operator, StrikeCondition

if TYPE_CHECKING:
    from .docket import Docket

logger = logging.getLogger("docket")


class StrikeSync:
    """One docket's side of the strikes: what it changes, and what it hears."""

    def __init__(self, docket: Docket) -> None:
        self._docket = docket
        self._loaded = asyncio.Event()
        self._loads = 0
        self._applied = 0
        self._monitor: asyncio.Task[None] | None = None

    async def change(
        self,
        action: Literal["strike", "restore"],
        function: TaskFunction | str | None,
        parameter: str | None,
        operator: Operator | str,
        value: Any,
    ) -> None:
        docket = self._docket
        if function is not None and not isinstance(function, str):
            function = getattr(function, "__name__", str(function))
        if function is None and parameter is None:
            raise ValueError("A strike needs a task name, a parameter, or both")
        try:
            condition = StrikeCondition(function, parameter, Operator(operator), value)
        except TypeError as error:
            # An unhashable value can never be stored or matched; as released, that is
            # reported and the strike does nothing, rather than failing the caller.
            logger.warning(
                "Incompatible type for strike condition: %s %r (%s)", operator, value, error
            )
            return
        if action == "strike":
            docket.strike_list.add(condition)
        else:
            docket.strike_list.discard(condition)
        attributes = dict(docket.labels())
        if function is not None:
            attributes["docket.task"] = function
        if parameter is not None:
            attributes["docket.strike.parameter"] = parameter
            attributes["docket.strike.operator"] = condition.operator.value
            attributes["docket.strike.value"] = repr(value)[:200]
        with docket.engine.producer_span(f"docket.{action}", attributes):
            await docket.engine.scripts.send(
                scripts.Strike(
                    strikes=docket.keys.strikes,
                    action=action,
                    condition=encode_condition(condition),
                    strikes_channel=docket.keys.strikes_channel,
                )
            )
        await self.load()

    async def load(self) -> None:
        """Read every stored strike into the docket's ``strike_list``."""
        # Loads may overlap (the monitor's and one after our own strike); a load that
        # started earlier must not overwrite what a later one found.
        self._loads += 1
        ticket = self._loads
        docket = self._docket
        encoded = await docket.engine.connection.client.hkeys(docket.keys.strikes)
        if ticket < self._applied:
            return
        self._applied = ticket
        conditions = []
        for item in encoded:
            try:
                conditions.append(decode_condition(as_text(item) or ""))
            except ValueError as error:
                logger.warning("Ignoring an unreadable strike %r: %s", item, error)
        docket.strike_list.replace_all(conditions)
        self._loaded.set()

    async def wait_loaded(self) -> None:
        await self._loaded.wait()

    def start(self) -> None:
        """Follow the strikes channel until ``stop``."""
        self._monitor = asyncio.create_task(
            self._follow(), name=f"docket-strikes-{self._docket.name}"
        )

    async def stop(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await self._monitor

    def _internal(self) -> AbstractContextManager[Any]:
        # Read each time: instrumentation may be switched on while the docket is open.
        docket = self._docket
        return internal(docket.enable_internal_instrumentation, "docket.strikes", docket.labels())

    async def _follow(self) -> None:
        docket = self._docket
        while True:
            try:
                pubsub = docket.engine.connection.pubsub()
                with self._internal():
                    await pubsub.subscribe(docket.keys.strikes_channel)
                try:
                    # Reload after subscribing so no change slips between the two.
                    await self.load()
                    while True:
                        with self._internal():
                            message = await pubsub.get_message(
                                ignore_subscribe_messages=True, timeout=1.0
                            )
                            if message is not None:
                                await self.load()
                finally:
                    await pubsub.aclose()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.warning("Strike monitor lost Redis (%s); retrying in 1s", error)
                await asyncio.sleep(1.0)

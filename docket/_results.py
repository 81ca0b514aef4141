"""Where task results live, behind the one interface the worker and Execution use.

By default a docket keeps each run's result in its own Redis, written by the settle script
in the same step that records the final state (nothing extra on the hot path). Given
``Docket(result_storage=...)``, any py-key-value ``AsyncKeyValue`` store, the worker puts
each result there before settling, and the settle script only notes that it did.

Either way a run's result is named ``<task key>:<generation>`` (``Execution.result_key``),
so a superseded run's result is never the one read, and ``docket.result_storage`` is an
``AsyncKeyValue`` holding ``{"data": <base64 of the sealed result>}`` under that name: the
given store, or a view of the docket's own Redis.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, SupportsFloat

if TYPE_CHECKING:
    from key_value.aio.protocols.key_value import AsyncKeyValue

    from ._engine import Engine
    from .execution import Execution

logger = logging.getLogger("docket.results")

# What the settle script is told instead of the sealed bytes when the result went to the
# docket's result_storage (sealed results start with b"0" or b"1", never with these).
IN_STORE = b"s"
LOST = b"x"


def result_key(task_key: str, generation: int | str) -> str:
    return f"{task_key}:{generation}"


def _as_stored(sealed: bytes) -> dict[str, Any]:
    return {"data": base64.b64encode(sealed).decode("ascii")}


class RedisResultStore:
    """The default ``docket.result_storage``: an ``AsyncKeyValue`` over the results the
    docket keeps in its own Redis.

    A collection's entry lives at ``<collection>:<key>``, the default collection being
    ``docket.results_collection``. Results the settle script wrote hold the sealed bytes
    and read back as ``{"data": <base64>}``; anything ``put`` here is stored as JSON.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def __repr__(self) -> str:
        return f"RedisResultStore({self._engine.docket.name!r})"

    def _key(self, key: str, collection: str | None) -> str:
        if collection:
            return f"{collection}:{key}"
        docket = self._engine.docket
        if docket.partitions == 1:
            return f"{docket.keys.results}:{key}"
        # A run's result lives in its task key's partition (result_key: "<key>:<gen>").
        task_key = key.rpartition(":")[0] or key
        return f"{docket.keys_for(task_key).results}:{key}"

    @property
    def _client(self) -> Any:
        return self._engine.connection.client

    async def setup(self) -> None:
        return None

    @staticmethod
    def _decode(raw: bytes | str | None) -> dict[str, Any] | None:
        if raw is None:
            return None
        data = raw.encode() if isinstance(raw, str) else raw
        if data[:1] == b"{":
            value: dict[str, Any] = json.loads(data)
            return value
        return _as_stored(data)

    async def get(self, key: str, *, collection: str | None = None) -> dict[str, Any] | None:
        return self._decode(await self._client.get(self._key(key, collection)))

    async def ttl(
        self, key: str, *, collection: str | None = None
    ) -> tuple[dict[str, Any] | None, float | None]:
        name = self._key(key, collection)
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.get(name)
            pipe.pttl(name)
            raw, remaining = await pipe.execute()
        value = self._decode(raw)
        if value is None:
            return None, None
        return value, (remaining / 1000 if remaining >= 0 else None)

    async def put(
        self,
        key: str,
        value: Mapping[str, Any],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        milliseconds = None if ttl is None else max(1, int(float(ttl) * 1000))
        await self._client.set(self._key(key, collection), json.dumps(dict(value)), px=milliseconds)

    async def delete(self, key: str, *, collection: str | None = None) -> bool:
        return bool(await self._client.delete(self._key(key, collection)))

    async def get_many(
        self, keys: Sequence[str], *, collection: str | None = None
    ) -> list[dict[str, Any] | None]:
        if not keys:
            return []
        names = [self._key(key, collection) for key in keys]
        if self._engine.docket.partitions == 1:
            raws = await self._client.mget(names)
        else:
            # Partitions are different hash slots, which one MGET cannot span on a Cluster.
            async with self._client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.get(name)
                raws = await pipe.execute()
        return [self._decode(raw) for raw in raws]

    async def ttl_many(
        self, keys: Sequence[str], *, collection: str | None = None
    ) -> list[tuple[dict[str, Any] | None, float | None]]:
        return [await self.ttl(key, collection=collection) for key in keys]

    async def put_many(
        self,
        keys: Sequence[str],
        values: Sequence[Mapping[str, Any]],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        for key, value in zip(keys, values, strict=True):
            await self.put(key, value, collection=collection, ttl=ttl)

    async def delete_many(self, keys: Sequence[str], *, collection: str | None = None) -> int:
        if not keys:
            return 0
        return int(await self._client.delete(*(self._key(key, collection) for key in keys)))


class ResultStoreError(RuntimeError):
    """The docket's result_storage could not keep (or give back) a task's result."""


class Results:
    """A docket's results: saved by the worker, read back by ``Execution.get_result``."""

    def __init__(self, engine: Engine, store: AsyncKeyValue | None) -> None:
        self._engine = engine
        # Only a store of the user's own needs the worker to write results itself; the
        # default one is the settle script's Redis.
        self.external = store is not None
        self.store: AsyncKeyValue = store if store is not None else RedisResultStore(engine)

    async def open(self) -> None:
        # The released docket sets a given store up on entering and leaves closing it to
        # its owner; a store without setup() needs none.
        setup = getattr(self.store, "setup", None)
        if self.external and setup is not None:
            await setup()

    async def save(self, execution: Execution, sealed: bytes) -> tuple[bytes, str]:
        """Put one run's sealed result in the external store; returns what the settle
        script records (``IN_STORE``, or ``LOST`` with the reason when the put failed)."""
        docket = self._engine.docket
        name = result_key(execution.key, execution.generation)
        try:
            await self.store.put(
                name,
                _as_stored(sealed),
                ttl=max(1, int(docket.execution_ttl.total_seconds())),
            )
        except Exception as error:
            reason = (
                f"The result of task {execution.key!r} could not be stored in "
                f"result_storage ({type(self.store).__name__}): "
                f"{type(error).__name__}: {error}"
            )
            logger.error("%s; its final state is kept without it", reason, exc_info=error)
            return LOST, reason
        return IN_STORE, ""

    async def load(self, name: str) -> bytes | None:
        """The sealed result stored as ``name``, or None when there is none (expired,
        or stored in a form this docket did not write)."""
        # Through docket.result_storage itself, so whatever is there now is asked.
        stored = await self._engine.docket.result_storage.get(name)
        if not isinstance(stored, Mapping) or not isinstance(stored.get("data"), str):
            return None
        try:
            return base64.b64decode(stored["data"], validate=True)
        except ValueError as error:
            raise ResultStoreError(
                f"The result of {name!r} in result_storage is not valid base64: {error}"
            ) from error

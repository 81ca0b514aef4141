"""``Debounce``: a burst of runs ends in one, after ``settle`` of quiet."""

from __future__ import annotations

from datetime import timedelta

from .._redis import scripts
from .._text import as_text
from ._base import AdmissionBlocked
from ._windows import WindowedDependency

_GO, _WAIT, _DROP = 1, 2, 3

# How long a burst's key outlives its latest run beyond ``settle``: long enough for
# the winner to come back even behind a small backlog. (A winner that never comes back
# does not hold the burst: one that is no longer pending is replaced at once.)
EXPIRY_MARGIN_MS = 1000


class Debounce(WindowedDependency["Debounce"]):
    """Trailing edge: of a burst of runs of a task (or of one argument value), exactly
    one goes, once ``settle`` has passed since the latest of them.

    The first run of a burst becomes the one that goes (so it runs with its own
    arguments): it is put back on the schedule until the burst has been quiet for
    ``settle``. Every later run of the burst is dropped at once (logged at INFO and
    recorded as cancelled) and pushes the quiet period back. A run after the one that
    went starts a new burst, and so does one that finds the waiting run gone (cancelled
    or struck).

    As a parameter default it covers the task; as ``Annotated`` metadata on a parameter
    each value of that argument is debounced separately::

        async def rebuild_index(
            debounce: Debounce = Debounce(timedelta(seconds=5)),
        ) -> None: ...

        async def sync_customer(
            customer_id: Annotated[int, Debounce(timedelta(seconds=5))],
        ) -> None: ...

    Runs are compared when a worker takes them, on the Redis server's clock. A task
    may declare one ``Debounce``; declare it before other admission dependencies, so
    that a run of the burst is dropped here before it can be held up by them.
    ``scope`` names a separate set of bursts inside the docket.
    """

    single = True
    _key_kind = "debounce"
    _label = "debounce"

    def __init__(self, settle: timedelta, *, scope: str | None = None) -> None:
        self.settle = settle
        super().__init__(settle, "Debounce's settle", scope)

    def __repr__(self) -> str:
        return f"Debounce({self.settle!r}{self._scope_repr()})"

    async def __aenter__(self) -> Debounce:
        docket, execution, key = self._this_run()
        expiry_ms = 2 * self._window_ms + EXPIRY_MARGIN_MS
        record_prefix, checked, pending = docket.keys.record_prefix, "", ""
        if docket.partitions > 1:
            # The winner's record may be in another partition (on a Cluster, another
            # shard than the burst): read its state there first, for the script.
            record_prefix, pending = "", "1"
            client = docket.engine.connection.client
            winner = as_text(await client.hget(key, "winner"))
            if winner and winner != execution.key:
                state = as_text(await client.hget(docket.keys_for(winner).record(winner), "state"))
                checked = winner
                pending = "1" if state in ("scheduled", "queued", "running") else "0"
        action, wait_ms = await docket.engine.scripts.send(
            scripts.Debounce(
                burst=key,
                key=execution.key,
                settle_ms=self._window_ms,
                expiry_ms=expiry_ms,
                record_prefix=record_prefix,
                checked_winner=checked,
                winner_pending=pending,
            )
        )
        action = int(action)
        if action == _GO:
            return self

        reason = f"{self._refusal(execution)} ({self.settle})"
        if action == _WAIT:
            raise AdmissionBlocked(
                execution, reason, retry_delay=timedelta(milliseconds=int(wait_ms))
            )
        raise AdmissionBlocked(
            execution, f"{reason}: a run of the same burst will go", reschedule=False
        )

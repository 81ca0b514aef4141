"""``Progress``: report how far a run has got, live, to anyone watching its key."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._base import Provider, current_execution

if TYPE_CHECKING:
    from ..execution import ExecutionProgress


class Progress(Provider["Progress"]):
    """The running task's progress: ``current`` of ``total`` plus a ``message``.

    async def import_rows(rows: list[Row], progress: Progress = Progress()) -> None:
        await progress.set_total(len(rows))
        for row in rows:
            await store(row)
            await progress.increment()
    """

    def __init__(self) -> None:
        self._progress: ExecutionProgress | None = None

    async def __aenter__(self) -> Progress:
        run = Progress()
        run._progress = current_execution.get().progress
        return run

    def _tracker(self) -> ExecutionProgress:
        if self._progress is None:
            raise RuntimeError("Progress reports only for a running task it was injected into")
        return self._progress

    @property
    def current(self) -> int | None:
        """How far the run has got (None until it reports anything)."""
        return self._tracker().current

    @property
    def total(self) -> int:
        """What ``current`` counts up to (100 unless set)."""
        return self._tracker().total

    @property
    def message(self) -> str | None:
        return self._tracker().message

    async def set_total(self, total: int) -> None:
        await self._tracker().set_total(total)

    async def increment(self, amount: int = 1) -> None:
        await self._tracker().increment(amount)

    async def set_message(self, message: str | None) -> None:
        await self._tracker().set_message(message)

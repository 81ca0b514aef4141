"""``docket clear``: cancel everything that has not started yet."""

from __future__ import annotations

from ..docket import Docket
from .display import say
from .options import DEFAULT_DOCKET, DEFAULT_URL, DocketOption, UrlOption, run


async def _clear(docket_name: str, url: str) -> int:
    async with Docket(name=docket_name, url=url) as docket:
        return await docket.clear()


def clear(
    docket: DocketOption = DEFAULT_DOCKET,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Cancel every scheduled and queued task; running tasks finish."""
    count = run(_clear(docket, url))
    noun = "task" if count == 1 else "tasks"
    say(f"Cleared {count} {noun} from docket {docket!r}")

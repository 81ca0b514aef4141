"""``docket clear``: cancel everything that has not started yet."""

from __future__ import annotations

from ..docket import Docket
from .display import say
from .options import DEFAULT_DOCKET, DEFAULT_URL, DocketOption, UrlOption, run


async def _clear(docket_name: str, url: str) -> int:
    async with Docket(name=docket_name, url=url) as docket:
        return await docket.clear()


def clear(
    docket_: DocketOption = DEFAULT_DOCKET,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Cancel every scheduled and queued task; running tasks finish."""
    count = run(_clear(docket_, url))
    # "tasks" even for one: the released wording, which scripts match.
    say(f"Cleared {count} tasks from docket {docket_!r}")

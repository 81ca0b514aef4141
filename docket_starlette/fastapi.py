"""FastAPI helpers: ``DocketDep`` for routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from docket import Docket

from .lifespan import get_docket


async def docket_dependency(request: Request) -> Docket:
    """The app's docket; tasks enqueued through it carry this request's snapshot.

    Async on purpose: FastAPI runs it in the request's own task, so the request it
    remembers is visible to the endpoint (a sync dependency would run in a thread).
    """
    return get_docket(request)


DocketDep = Annotated[Docket, Depends(docket_dependency)]
"""``async def route(docket: DocketDep): await docket.add(task)(...)``."""

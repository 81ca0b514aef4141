"""What the worker option tests name by ``module:name`` path."""

from typing import Any

from docket import Depends


async def fallback(*args: Any, **kwargs: Any) -> None:
    """Runs the messages of tasks the worker does not know."""


def request_id() -> str:
    return "from-the-worker"


dependencies = {"request_id": Depends(request_id)}


async def hook_task() -> None: ...


collection = [hook_task]

not_dependencies = {"request_id": request_id}  # a function, not Depends(function)

"""Dependencies that read the task's own arguments: ``TaskArgument`` and ``CallArgument``.

Both are meant for dependency functions, which use them to see what the task they
serve was called with::

    async def customer(customer_id: int = TaskArgument()) -> Customer: ...

    async def greet(customer_id: int, who: Customer = Depends(customer)) -> None: ...

Without a name they read the task parameter named like the parameter they are
declared on. ``CallArgument`` is uncalled-for's: it also sees what the task's other
dependencies produce and plain signature defaults. ``TaskArgument`` sees only what the
caller passed.
"""

from __future__ import annotations

from typing import Any, cast

from uncalled_for import CallArgument, current_frame
from uncalled_for.frames import _CallArgument

__all__ = ["CallArgument", "TaskArgument", "TaskArgumentDependency"]


class TaskArgumentDependency(_CallArgument):
    async def __aenter__(self) -> Any:
        if self.parameter is None:
            raise RuntimeError(
                "A bare TaskArgument() must be declared as a parameter default (or given "
                "the parameter's name) so it knows which argument to read"
            )
        frame = current_frame()
        try:
            return await frame.resolve(self.parameter, provided_only=True)
        except LookupError:
            if self.optional:
                return None
            # The released error (KeyError naming the parameter), with our detail in a note.
            error = KeyError(self.parameter)
            error.add_note(
                f"task {frame.function.__name__!r} was not called with an argument "
                f"{self.parameter!r}"
            )
            raise error from None

    def __repr__(self) -> str:
        return f"TaskArgument({self.parameter!r})"


def TaskArgument(parameter: str | None = None, optional: bool = False) -> Any:
    """The value the task was called with for ``parameter``.

    ``parameter`` defaults to the name of the parameter this is declared on. Only the
    caller's arguments count (positional or keyword); with ``optional=True`` a missing
    one gives None instead of failing the run.
    """
    return cast(Any, TaskArgumentDependency(parameter, optional))

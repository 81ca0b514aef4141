"""A task called with arguments that do not fit its signature, said as such.

A ``TypeError`` from calling a task function is, for an ``async def``, always Python
refusing the arguments; for a plain ``def`` it may come from the body too. Only when the
arguments really do not bind is it turned into an error that names the task and the
parameters, with a hint when a missing one is a web framework's dependency (a FastAPI
``Depends``, a Starlette ``Request``), which only a worker bound to the app resolves.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, get_type_hints


class TaskCallError(Exception):
    """A task's arguments do not fit its parameters: said with the task's name and the
    parameters', instead of Python's bare ``TypeError``."""


def explain(
    task: str,
    function: Callable[..., Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    error: TypeError,
) -> Exception:
    """``error``, or a ``TaskCallError`` naming what does not fit when the call's
    arguments do not bind to ``function``'s signature."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return error
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        pass
    else:
        return error  # the arguments fit: the body raised it
    given = set(kwargs)
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    given |= {p.name for p in positional[: len(args)]}
    missing = [
        p
        for p in signature.parameters.values()
        if p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.name not in given
    ]
    if not missing:
        return TaskCallError(f"Task {task!r} cannot take the arguments it was given: {error}")
    framework = [p.name for p in missing if _from_a_web_framework(function, p)]
    names = ", ".join(repr(p.name) for p in missing)
    message = f"Task {task!r} was run without a value for its parameter(s) {names}"
    if framework:
        which = ", ".join(repr(name) for name in framework)
        message += (
            f": {which} {'is' if len(framework) == 1 else 'are'} resolved by the web app "
            "(a FastAPI dependency or a Starlette Request), which this worker is not bound "
            "to; run it under the app's docket_lifespan or `docket worker --app module:app`"
        )
    return TaskCallError(message)


def _from_a_web_framework(function: Callable[..., Any], parameter: inspect.Parameter) -> bool:
    try:
        hints = get_type_hints(function, include_extras=True)
    except Exception:
        hints = {}
    hint = hints.get(parameter.name, parameter.annotation)
    markers: list[Any] = list(getattr(hint, "__metadata__", ()))
    base = getattr(hint, "__origin__", hint) if markers else hint
    markers.append(parameter.default)
    things = [base, *markers]
    return any(
        (type(thing).__module__ or "").split(".")[0] in ("fastapi", "starlette")
        or (isinstance(thing, type) and thing.__module__.split(".")[0] in ("fastapi", "starlette"))
        for thing in things
    )

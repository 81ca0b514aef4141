"""Commands whose parameters are built rather than written out.

typer reads a command's arguments and options from its function's signature. Where
several commands take the same ones (``strike`` and ``restore``; ``tasks trace``,
``fail`` and ``sleep``), the list is written once and each command is given it here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any


def parameter(
    name: str,
    annotation: Any,
    default: Any,
    kind: inspect._ParameterKind = inspect.Parameter.POSITIONAL_OR_KEYWORD,
) -> inspect.Parameter:
    return inspect.Parameter(name, kind, annotation=annotation, default=default)


def sign[F: Callable[..., Any]](function: F, parameters: Sequence[inspect.Parameter]) -> F:
    """Give ``function`` the signature typer reads: ``parameters``, returning None.

    The annotations are set too, evaluated: typer resolves them with
    ``typing.get_type_hints``, which would otherwise look names up in the module that
    defined ``function``, not in the one that built the parameters.
    """
    function.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined]
    function.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": None}
    return function


def command(
    name: str, doc: str, parameters: Sequence[inspect.Parameter], body: Callable[..., None]
) -> Callable[..., None]:
    """A command function ``name`` taking ``parameters``; it calls ``body`` with each of
    them by name, defaults filled in.

    It binds its arguments as a written function would (positionally too, with the same
    ``TypeError`` for a wrong call), so code that calls a command directly, as scripts
    written for the released docket do, sees no difference.
    """
    signature = inspect.Signature(parameters, return_annotation=None)

    def run_command(*args: Any, **kwargs: Any) -> None:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        body(**bound.arguments)

    run_command.__name__ = run_command.__qualname__ = name
    run_command.__doc__ = doc
    run_command.__module__ = body.__module__
    return sign(run_command, parameters)

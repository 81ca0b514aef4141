"""``docket strike`` and ``docket restore``: stop tasks from running, and let them again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import typer

from ..docket import Docket
from ..strikes import Operator, StrikeCondition
from ._commands import command, parameter
from ._support import interpret_python_value
from .display import say
from .options import DEFAULT_DOCKET, DEFAULT_URL, DocketOption, UrlOption, run

_VALUE_HELP = (
    "The value to compare with, typed by a prefix: int:5, float:2.5, bool:true, "
    "decimal:9.99, datetime:2025-01-01T00:00:00+00:00, date:, timedelta: (seconds), "
    "uuid:, none:, str: (the default), or a type's import path (decimal.Decimal:9.99). "
    "'between' takes two values, low and high."
)


def _condition(
    function: str | None, parameter: str | None, operator: Operator, values: list[str]
) -> StrikeCondition:
    """The strike the arguments describe; usage errors for anything it cannot be."""
    try:
        parsed = [interpret_python_value(text) for text in values]
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="VALUE") from None
    expected = 2 if operator is Operator.BETWEEN else 1
    if parameter in (None, "", "*"):
        if values:
            raise typer.BadParameter(
                "a value needs a parameter to compare it with", param_hint="VALUE"
            )
    elif len(parsed) != expected:
        raise typer.BadParameter(
            f"{operator.value!r} takes {expected} value{'s' if expected > 1 else ''}, "
            f"got {len(parsed)}",
            param_hint="VALUE",
        )
    value: Any = tuple(parsed) if operator is Operator.BETWEEN else (parsed or [None])[0]
    if function in (None, "", "*") and parameter in (None, "", "*"):
        raise typer.BadParameter(
            "Must provide either a function and/or a parameter: a strike needs a function, "
            "a parameter, or both (use '*' for the other)"
        )
    try:
        return StrikeCondition(function, parameter, operator, value)
    except (TypeError, ValueError) as error:
        raise typer.BadParameter(str(error)) from None


def _describe(condition: StrikeCondition) -> str:
    if condition.parameter is None:
        return f"{condition.function}"
    task = condition.function or "(all tasks)"
    return f"{task} {condition.parameter} {condition.operator.value} {condition.value!r}"


async def _change(action: str, docket_name: str, url: str, condition: StrikeCondition) -> None:
    async with Docket(name=docket_name, url=url) as docket:
        change = docket.strike if action == "strike" else docket.restore
        await change(condition.function, condition.parameter, condition.operator, condition.value)
        active = sorted(str(c) for c in docket.strike_list)
    say(f"Active strikes on {docket_name!r}: " + (", ".join(active) if active else "none"))


FunctionArgument = Annotated[
    str,
    typer.Argument(
        help="The task's name, or '*' for every task", show_default=False, metavar="FUNCTION"
    ),
]
ParameterArgument = Annotated[
    str,
    typer.Argument(
        help="The parameter to compare, or '*' to strike the whole task",
        show_default=False,
        metavar="PARAMETER",
    ),
]
OperatorArgument = Annotated[
    Operator,
    typer.Argument(help="How the argument is compared with VALUE", metavar="OPERATOR"),
]
ValueArgument = Annotated[
    list[str] | None,
    typer.Argument(help=_VALUE_HELP, show_default=False, metavar="VALUE"),
]


_ARGUMENTS = [
    parameter("function", FunctionArgument, "*"),
    parameter("parameter", ParameterArgument, "*"),
    parameter("operator", OperatorArgument, Operator.EQUAL),
    parameter("value", ValueArgument, None),
    parameter("docket_", DocketOption, DEFAULT_DOCKET),
    parameter("url", UrlOption, DEFAULT_URL),
]


def _changing(action: Literal["strike", "restore"], doc: str) -> Callable[..., None]:
    """The command that makes (or lifts) the strike its arguments describe: restoring
    takes exactly the arguments the strike was made with."""
    doing = "Striking" if action == "strike" else "Restoring"

    def change(
        function: str,
        parameter: str,
        operator: Operator,
        value: list[str] | None,
        docket_: str,
        url: str,
    ) -> None:
        condition = _condition(function, parameter, operator, value or [])
        say(f"{doing} {_describe(condition)}")
        run(_change(action, docket_, url, condition))

    return command(action, doc, _ARGUMENTS, change)


strike = _changing(
    "strike",
    """Stop a task, or the calls whose argument matches, from being scheduled or run.

    Examples: 'strike charge' strikes every call of charge; 'strike charge customer ==
    str:acme' only acme's; 'strike "*" amount ">" int:100' any task's call with amount
    over 100. Struck calls stay struck until restored.
    """,
)
restore = _changing("restore", "Lift a strike: give the same arguments the strike was made with.")

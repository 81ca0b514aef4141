"""The dashboard's actions: cancel a task, retry a failure, requeue or purge dead
letters, add or lift a strike. Each answers with a redirect back to the page it came
from, saying what was done (``?done=``) or what went wrong (``?error=``).

The mounts call ``perform`` only for a user with ``Access.MANAGE`` and only after their
CSRF check passed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from docket import dead_letters as letters
from docket import failures as failure_log
from docket.integration import parse_typed_value
from docket.strikes import Operator

if TYPE_CHECKING:
    from docket import Docket
    from docket.dead_letters import RequeueResult

    from .core import DashboardResponse, Links

OPERATORS = [operator.value for operator in Operator]
_LONGEST_MESSAGE = 300


class ActionError(ValueError):
    """An action that cannot be done as asked, with what to do instead."""


async def perform(docket: Docket, links: Links, form: Mapping[str, str]) -> DashboardResponse:
    back = _back(links, form.get("next", ""))
    action = form.get("action", "")
    handler = _ACTIONS.get(action)
    try:
        if handler is None:
            known = ", ".join(sorted(_ACTIONS))
            raise ActionError(f"Unknown action {action!r}; the dashboard's actions are {known}")
        message = await handler(docket, form)
    except (ActionError, ValueError, TypeError) as error:
        return _redirect(links, back, error=str(error))
    return _redirect(links, back, done=message)


def _back(links: Links, target: str) -> tuple[str, dict[str, str]]:
    """The page to return to: a page of this dashboard only (never another site)."""
    parts = urlsplit(target)
    path = parts.path
    base = links.base.rstrip("/")
    if parts.scheme or parts.netloc or not (path == base or path.startswith(base + "/")):
        return "", {}
    page = path[len(base) :].lstrip("/")
    query = {k: v for k, v in parse_qsl(parts.query) if k not in ("done", "error", *links.keep)}
    return page, query


def _redirect(
    links: Links, back: tuple[str, dict[str, str]], *, done: str = "", error: str = ""
) -> DashboardResponse:
    from .core import DashboardResponse

    page, query = back
    message = {"done": done} if done else {"error": error}
    short = {k: v[:_LONGEST_MESSAGE] for k, v in message.items()}
    return DashboardResponse(303, b"", headers={"location": links(page, **query, **short)})


def _required(form: Mapping[str, str], name: str, what: str) -> str:
    value = form.get(name, "").strip()
    if not value:
        raise ActionError(f"Give {what} ({name!r} was empty)")
    return value


def _ids(form: Mapping[str, str], what: str) -> list[str]:
    ids = [part for part in form.get("ids", "").replace(",", " ").split() if part]
    if not ids:
        raise ActionError(f"Choose at least one {what}")
    return ids


async def _cancel(docket: Docket, form: Mapping[str, str]) -> str:
    key = _required(form, "key", "the task key to cancel")
    execution = await docket.get_execution(key)
    if execution is None:
        raise ActionError(f"No task with key {key!r} to cancel")
    await docket.cancel(key)
    return f"Cancelled {execution.function_name} {key!r}"


def _requeue_summary(results: list[RequeueResult], verb: str) -> str:
    done = [result for result in results if result.status == "requeued"]
    refused = [f"{result.id}: {result.detail}" for result in results if result.status != "requeued"]
    message = f"{verb} {len(done)} of {len(results)}"
    if refused:
        message += "; not " + "; ".join(refused)
    if not done:
        raise ActionError(message)
    return message


async def _requeue(docket: Docket, form: Mapping[str, str]) -> str:
    if form.get("all") == "1":
        results = await letters.requeue(docket, all_entries=True)
        if not results:
            raise ActionError("There are no dead letters to requeue")
    else:
        results = await letters.requeue(docket, _ids(form, "dead letter"))
    return _requeue_summary(results, "Requeued")


async def _purge(docket: Docket, form: Mapping[str, str]) -> str:
    if form.get("all") == "1":
        return f"Purged all {await letters.purge(docket, all_entries=True)} dead letters"
    ids = _ids(form, "dead letter")
    return f"Purged {await letters.purge(docket, ids)} of {len(ids)} dead letters"


async def _retry(docket: Docket, form: Mapping[str, str]) -> str:
    return _requeue_summary(await failure_log.retry(docket, _ids(form, "failure")), "Retried")


async def _discard(docket: Docket, form: Mapping[str, str]) -> str:
    if form.get("all") == "1":
        count = await failure_log.purge_failures(docket, all_entries=True)
        return f"Cleared all {count} failures from the list"
    ids = _ids(form, "failure")
    count = await failure_log.purge_failures(docket, ids)
    return f"Cleared {count} of {len(ids)} failures from the list"


def _condition(form: Mapping[str, str]) -> tuple[str | None, str | None, str, object]:
    function = form.get("function", "").strip() or None
    parameter = form.get("parameter", "").strip() or None
    operator = form.get("operator", "==").strip() or "=="
    if operator not in OPERATORS:
        raise ActionError(f"Unknown operator {operator!r}; use one of {', '.join(OPERATORS)}")
    if function is None and parameter is None:
        raise ActionError("A strike needs a task, a parameter, or both")
    value: object = None
    if parameter is not None:
        raw = form.get("value", "")
        try:
            if operator == Operator.BETWEEN.value:
                low, comma, high = raw.partition(",")
                if not comma:
                    raise ActionError(f"'between' needs two values, low,high; got {raw!r}")
                value = (parse_typed_value(low.strip()), parse_typed_value(high.strip()))
            else:
                value = parse_typed_value(raw)
        except ValueError as error:
            raise ActionError(f"The value {raw!r}: {error}") from None
    return function, parameter, operator, value


async def _strike(docket: Docket, form: Mapping[str, str]) -> str:
    function, parameter, operator, value = _condition(form)
    await docket.strike(function, parameter, operator, value)
    return f"Struck {_describe(function, parameter, operator, value)}"


async def _lift(docket: Docket, form: Mapping[str, str]) -> str:
    shown = _required(form, "strike", "the strike to lift")
    for condition in docket.strike_list.conditions:
        if str(condition) == shown:
            await docket.restore(
                condition.function, condition.parameter, condition.operator, condition.value
            )
            return f"Lifted {shown}"
    raise ActionError(f"There is no strike {shown!r} now (lifted already?)")


def _describe(function: str | None, parameter: str | None, operator: str, value: object) -> str:
    if parameter is None:
        return str(function)
    return f"{function or '*'}({parameter} {operator} {value!r})"


_ACTIONS = {
    "cancel": _cancel,
    "requeue": _requeue,
    "purge": _purge,
    "retry": _retry,
    "discard": _discard,
    "strike": _strike,
    "lift": _lift,
}

"""Strikes: conditions that stop tasks from being scheduled or run.

A strike names a whole task (``function`` only), any task with an argument that
matches a condition (``parameter`` + ``operator`` + ``value``), or both at once.
This module is pure logic: it holds the conditions and answers "is this call
stricken?". Their stored form is ``docket._strike_codec``'s; moving the set in and
out of Redis is the docket's and the worker's business.
"""

from __future__ import annotations

import logging
import operator as _op
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any, Literal, NamedTuple

from ._strike_values import canonical_json, to_json

__all__ = [
    "LiteralOperator",
    "Operator",
    "Restore",
    "Strike",
    "StrikeChanges",
    "StrikeCondition",
    "StrikeInstruction",
    "StrikeList",
    "parse_operator",
]

logger: logging.Logger = logging.getLogger(__name__)


class Operator(StrEnum):
    EQUAL = "=="
    NOT_EQUAL = "!="
    GREATER_THAN = ">"
    GREATER_THAN_OR_EQUAL = ">="
    LESS_THAN = "<"
    LESS_THAN_OR_EQUAL = "<="
    BETWEEN = "between"


LiteralOperator = Literal["==", "!=", ">", ">=", "<", "<=", "between"]


def parse_operator(value: Operator | str) -> Operator:
    """``value`` as an ``Operator``; a ``ValueError`` listing the known ones otherwise."""
    try:
        return Operator(value)
    except ValueError:
        known = ", ".join(repr(o.value) for o in Operator)
        raise ValueError(f"unknown strike operator {value!r}; expected one of {known}") from None


def _between(argument: Any, bounds: Any) -> bool:
    low, high = bounds
    return bool(low <= argument) and bool(argument <= high)


# Each comparator is called as comparator(argument, strike_value): a strike
# "amount > 100" matches the call whose argument is greater than 100.
_COMPARATORS: dict[Operator, Callable[[Any, Any], Any]] = {
    Operator.EQUAL: _op.eq,
    Operator.NOT_EQUAL: _op.ne,
    Operator.GREATER_THAN: _op.gt,
    Operator.GREATER_THAN_OR_EQUAL: _op.ge,
    Operator.LESS_THAN: _op.lt,
    Operator.LESS_THAN_OR_EQUAL: _op.le,
    Operator.BETWEEN: _between,
}


def _freeze(value: Any) -> Any:
    # Lists become tuples so a condition is hashable and a list and a tuple with
    # the same items are one strike, as they are one stored form.
    if isinstance(value, list | tuple):
        return tuple(_freeze(item) for item in value)
    return value


@dataclass(frozen=True, eq=False)
class StrikeCondition:
    """One strike.

    ``function`` alone strikes every call of that task; ``parameter`` (with
    ``operator`` and ``value``) strikes any task called with a matching argument;
    both together strike only that task's matching calls.

    Two conditions are equal when their stored forms are equal, so equality is
    type-aware: a strike on ``1`` and one on ``True`` are different strikes even
    though ``1 == True`` in Python (and both match an argument of ``1``).
    """

    function: str | None = None
    parameter: str | None = None
    operator: Operator = Operator.EQUAL
    value: Any = None

    def __post_init__(self) -> None:
        # The CLI spells "any" as "" or "*"; both mean the field is not set.
        function = None if self.function in ("", "*") else self.function
        parameter = None if self.parameter in ("", "*") else self.parameter
        for label, name in (("function", function), ("parameter", parameter)):
            if name is not None and not isinstance(name, str):
                raise TypeError(f"strike {label} must be a str or None, not {type(name).__name__}")
        if function is None and parameter is None:
            raise ValueError("a strike needs a function, a parameter, or both")

        operator = parse_operator(self.operator)
        value = _freeze(self.value)
        if parameter is None:
            # A whole-task strike ignores operator and value; pinning them means
            # strike("f") and restore("f") agree whatever else was passed.
            operator, value = Operator.EQUAL, None
        elif operator is Operator.BETWEEN:
            if not isinstance(value, tuple) or len(value) != 2:
                raise ValueError(
                    f"'between' needs a (low, high) pair, not {type(self.value).__name__} "
                    f"{self.value!r}"
                )
            low, high = value
            try:
                inverted = bool(low > high)
            except Exception:
                inverted = False  # incomparable bounds just never match
            if inverted:
                raise ValueError(f"'between' needs low <= high, got ({low!r}, {high!r})")

        object.__setattr__(self, "function", function)
        object.__setattr__(self, "parameter", parameter)
        object.__setattr__(self, "operator", operator)
        object.__setattr__(self, "value", value)
        try:
            hash(self._identity)
        except TypeError:
            raise TypeError(
                f"a strike value must be hashable, not {type(self.value).__name__}"
            ) from None

    @cached_property
    def _identity(self) -> tuple[str | None, str | None, str, Any]:
        try:
            value_key: Any = canonical_json(to_json(self.value))
        except (TypeError, ValueError):
            # Values the stored form cannot express still work in a local list;
            # they are keyed by their own equality, and by type so 1 != True.
            value_key = ("opaque", type(self.value).__qualname__, self.value)
        return (self.function, self.parameter, self.operator.value, value_key)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StrikeCondition):
            return NotImplemented
        return self._identity == other._identity

    def __hash__(self) -> int:
        return hash(self._identity)

    @property
    def is_whole_task(self) -> bool:
        return self.parameter is None

    def matches(self, function_name: str, arguments: Mapping[str, Any]) -> bool:
        """Whether this condition strikes a call of ``function_name`` with ``arguments``."""
        if self.function is not None and self.function != function_name:
            return False
        if self.parameter is None:
            return True
        if self.parameter not in arguments:
            return False
        return _compare(self.operator, arguments[self.parameter], self.value)

    def __str__(self) -> str:
        if self.parameter is None:
            return f"{self.function}"
        return f"{self.function or '*'}({self.parameter} {self.operator.value} {self.value!r})"


def _compare(operator: Operator, argument: Any, value: Any) -> bool:
    try:
        return bool(_COMPARATORS[operator](argument, value))
    except Exception:
        # An argument of a type the strike value cannot be compared with (or whose
        # __eq__ misbehaves) is not a match: a strike must never break a task.
        return False


class StrikeInstruction:
    """A change to the strikes: ``Strike(...)`` or ``Restore(...)``, applied with
    ``StrikeList.update()`` (the released docket's instruction objects)."""

    direction: Literal["strike", "restore"]

    def __init__(
        self,
        function: str | None,
        parameter: str | None,
        operator: Operator | LiteralOperator | str,
        value: Any,
    ) -> None:
        self.function = function
        self.parameter = parameter
        self.operator = operator if isinstance(operator, Operator) else parse_operator(operator)
        self.value = value

    def condition(self) -> StrikeCondition:
        return StrikeCondition(self.function, self.parameter, self.operator, self.value)

    def labels(self) -> dict[str, str]:
        labels: dict[str, str] = {}
        if self.function:
            labels["docket.task"] = self.function
        if self.parameter:
            labels["docket.parameter"] = self.parameter
            labels["docket.operator"] = self.operator.value
            labels["docket.value"] = repr(self.value)
        return labels

    def call_repr(self) -> str:
        value = repr(self.value) if self.parameter else "*"
        return f"{self.function or '*'}({self.parameter or '*'} {self.operator.value} {value})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.call_repr()})"


class Strike(StrikeInstruction):
    direction: Literal["strike", "restore"] = "strike"


class Restore(StrikeInstruction):
    direction: Literal["strike", "restore"] = "restore"


class StrikeChanges(NamedTuple):
    added: tuple[StrikeCondition, ...]
    removed: tuple[StrikeCondition, ...]


_ParameterIndex = dict[str, tuple[tuple[Operator, Any, StrikeCondition], ...]]


class StrikeList:
    """The set of strikes in effect, indexed for the per-task check."""

    def __init__(
        self,
        url: str | None = None,
        name: str = "strikelist",
        enable_internal_instrumentation: bool = False,
        credential_provider: Any = None,
        *,
        conditions: Iterable[StrikeCondition] = (),
    ) -> None:
        # The released StrikeList took a Redis URL and name and kept itself in sync; here
        # a Docket does that for its strike_list, and these are kept for the names only.
        if url is not None and not isinstance(url, str):
            raise TypeError(
                "StrikeList's first argument is the Redis URL; pass strike conditions "
                "as StrikeList(conditions=[...])"
            )
        self.url = url
        self.name = name
        self.enable_internal_instrumentation = enable_internal_instrumentation
        self.credential_provider = credential_provider
        self._extra_conditions: list[Callable[[Any], bool]] = []
        self._conditions: dict[StrikeCondition, None] = {}
        self._whole_tasks: frozenset[str] = frozenset()
        self._by_task: dict[str, _ParameterIndex] = {}
        self._by_parameter: _ParameterIndex = {}
        # Remembers which (condition, argument type) mismatches were already
        # reported, so a mistyped strike warns once instead of on every task.
        self._warned: set[tuple[StrikeCondition, type]] = set()
        self.replace_all(conditions)

    def strike(
        self,
        function: str | None = None,
        parameter: str | None = None,
        operator: Operator | LiteralOperator | str = "==",
        value: Any = None,
    ) -> bool:
        """Add a strike; True if it was not already in effect."""
        return self.add(StrikeCondition(function, parameter, parse_operator(operator), value))

    def restore(
        self,
        function: str | None = None,
        parameter: str | None = None,
        operator: Operator | LiteralOperator | str = "==",
        value: Any = None,
    ) -> bool:
        """Lift the strike with exactly these terms; True if there was one."""
        return self.discard(StrikeCondition(function, parameter, parse_operator(operator), value))

    def add(self, condition: StrikeCondition) -> bool:
        if condition in self._conditions:
            return False
        self._conditions[condition] = None
        self._reindex()
        return True

    def discard(self, condition: StrikeCondition) -> bool:
        if condition not in self._conditions:
            return False
        del self._conditions[condition]
        self._reindex()
        return True

    def replace_all(self, conditions: Iterable[StrikeCondition]) -> StrikeChanges:
        """Make ``conditions`` the whole set (e.g. after reloading it from Redis)."""
        new = dict.fromkeys(conditions)
        added = tuple(c for c in new if c not in self._conditions)
        removed = tuple(c for c in self._conditions if c not in new)
        self._conditions = new
        self._reindex()
        return StrikeChanges(added, removed)

    def clear(self) -> None:
        self._conditions = {}
        self._reindex()

    @property
    def conditions(self) -> tuple[StrikeCondition, ...]:
        return tuple(self._conditions)

    def __len__(self) -> int:
        return len(self._conditions)

    def __bool__(self) -> bool:
        return bool(self._conditions)

    def __iter__(self) -> Iterator[StrikeCondition]:
        return iter(tuple(self._conditions))

    def __contains__(self, condition: object) -> bool:
        return condition in self._conditions

    def __repr__(self) -> str:
        return f"StrikeList([{', '.join(str(c) for c in self._conditions)}])"

    # -- the released docket's view of the strikes ---------------------------------------

    @property
    def task_strikes(self) -> dict[str, dict[str, set[tuple[Operator, Any]]]]:
        """``{task: {parameter: {(operator, value), ...}}}``; a task struck as a whole
        maps to the strikes on its parameters (an empty dict when it has none)."""
        view: dict[str, dict[str, set[tuple[Operator, Any]]]] = {}
        for c in self._conditions:
            if c.function is None:
                continue
            parameters = view.setdefault(c.function, {})
            if c.parameter is not None:
                parameters.setdefault(c.parameter, set()).add((c.operator, c.value))
        return view

    @property
    def parameter_strikes(self) -> dict[str, set[tuple[Operator, Any]]]:
        """``{parameter: {(operator, value), ...}}`` for the strikes on any task."""
        view: dict[str, set[tuple[Operator, Any]]] = {}
        for c in self._conditions:
            if c.function is None and c.parameter is not None:
                view.setdefault(c.parameter, set()).add((c.operator, c.value))
        return view

    @property
    def prefix(self) -> str:
        return self.name

    @property
    def strike_key(self) -> str:
        return f"{self.prefix}:strikes"

    def update(self, instruction: StrikeInstruction) -> None:
        """Apply a ``Strike`` or ``Restore`` to this list (locally)."""
        try:
            condition = instruction.condition()
        except (TypeError, ValueError) as error:
            # As released: a strike that cannot be kept is reported, not raised.
            logger.warning(
                "Incompatible type for strike condition: %s %r (%s)",
                instruction.operator,
                instruction.value,
                error,
            )
            return
        if instruction.direction == "strike":
            self.add(condition)
        else:
            self.discard(condition)

    def add_condition(self, condition: Callable[[Any], bool]) -> None:
        """Also count an ``Execution`` as struck when ``condition(execution)`` is true
        (consulted by ``is_stricken(execution)``)."""
        self._extra_conditions.insert(0, condition)

    def remove_condition(self, condition: Callable[[Any], bool]) -> None:
        self._extra_conditions.remove(condition)

    async def wait_for_strikes_loaded(self) -> None:
        """Nothing to wait for on a list of its own; a Docket's list is loaded when the
        Docket's ``wait_for_strikes_loaded()`` returns."""

    def _reindex(self) -> None:
        # Strikes change rarely and tasks run constantly, so the indexes are
        # rebuilt on every change to keep is_stricken down to dict lookups.
        whole: set[str] = set()
        by_task: dict[str, dict[str, list[tuple[Operator, Any, StrikeCondition]]]] = {}
        by_parameter: dict[str, list[tuple[Operator, Any, StrikeCondition]]] = {}
        for c in self._conditions:
            if c.parameter is None:
                assert c.function is not None
                whole.add(c.function)
                continue
            entry = (c.operator, c.value, c)
            if c.function is None:
                by_parameter.setdefault(c.parameter, []).append(entry)
            else:
                by_task.setdefault(c.function, {}).setdefault(c.parameter, []).append(entry)
        self._whole_tasks = frozenset(whole)
        self._by_task = {
            function: {parameter: tuple(entries) for parameter, entries in index.items()}
            for function, index in by_task.items()
        }
        self._by_parameter = {parameter: tuple(e) for parameter, e in by_parameter.items()}
        self._warned.clear()

    def is_stricken(self, function_name: Any, arguments: Mapping[str, Any] | None = None) -> bool:
        """Whether a call of ``function_name`` with ``arguments`` is struck.

        ``arguments`` maps parameter names to the values of this call (the
        caller binds positional arguments to names). As in the released docket, a
        single argument may also be an ``Execution`` (checked against every strike and
        every ``add_condition`` condition) or a mapping of arguments alone (checked
        against the strikes on parameters of any task).
        """
        if arguments is None:
            target = function_name
            if isinstance(target, Mapping):
                return self.is_stricken("", target)
            if any(condition(target) for condition in list(self._extra_conditions)):
                return True
            return self.is_stricken(target.function_name, target.arguments_by_name())
        if not self._conditions:
            return False
        if function_name in self._whole_tasks:
            return True
        task_index = self._by_task.get(function_name)
        if task_index and self._matches_any(task_index, arguments):
            return True
        return bool(self._by_parameter) and self._matches_any(self._by_parameter, arguments)

    def _matches_any(self, index: _ParameterIndex, arguments: Mapping[str, Any]) -> bool:
        for parameter, entries in index.items():
            if parameter not in arguments:
                continue
            argument = arguments[parameter]
            for operator, value, condition in entries:
                try:
                    if _COMPARATORS[operator](argument, value):
                        return True
                except Exception:
                    self._warn_incomparable(condition, argument)
        return False

    def _warn_incomparable(self, condition: StrikeCondition, argument: Any) -> None:
        key = (condition, type(argument))
        if key in self._warned:
            return
        self._warned.add(key)
        # The argument's value is deliberately not logged: arguments may be
        # private, and only its type is needed to spot a mistyped strike.
        logger.warning(
            "Incompatible type for strike condition: %s cannot be compared with an "
            "argument of type %s; treating it as no match",
            condition,
            type(argument).__name__,
        )

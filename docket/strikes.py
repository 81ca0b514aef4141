"""Strikes: conditions that stop tasks from being scheduled or run.

A strike names a whole task (``function`` only), any task with an argument that
matches a condition (``parameter`` + ``operator`` + ``value``), or both at once.
This module is pure logic: it holds the conditions, answers "is this call
stricken?", and turns a condition into a canonical string and back so the
docket can keep the set in Redis. Moving that set in and out of Redis is the
docket's and the worker's business, not this module's.

The stored form is JSON with explicitly typed values, never pickle: anyone who
can write to the Redis server could otherwise make every worker run their code.
"""

from __future__ import annotations

import json
import logging
import math
import operator as _op
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from functools import cached_property
from typing import Any, Literal, NamedTuple
from uuid import UUID

__all__ = [
    "LiteralOperator",
    "Operator",
    "Restore",
    "Strike",
    "StrikeChanges",
    "StrikeCondition",
    "StrikeInstruction",
    "StrikeList",
    "decode_condition",
    "encode_condition",
    "parse_typed_value",
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


def _operator(value: Operator | str) -> Operator:
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

        operator = _operator(self.operator)
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
            value_key: Any = _dumps(_to_json(self.value))
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
        self.operator = operator if isinstance(operator, Operator) else _operator(operator)
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
        return self.add(StrikeCondition(function, parameter, _operator(operator), value))

    def restore(
        self,
        function: str | None = None,
        parameter: str | None = None,
        operator: Operator | LiteralOperator | str = "==",
        value: Any = None,
    ) -> bool:
        """Lift the strike with exactly these terms; True if there was one."""
        return self.discard(StrikeCondition(function, parameter, _operator(operator), value))

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


# --- the stored form ------------------------------------------------------------------

_FORMAT_VERSION = 1
_MAX_DEPTH = 32
_INT_PATTERN = re.compile(r"0|-?[1-9][0-9]*")


def _dumps(obj: Any) -> str:
    # Sorted keys, fixed separators and ASCII-only output make the text a pure
    # function of the condition, which matters because it is the hash field a
    # restore has to find again.
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def _to_json(value: Any, depth: int = 0) -> list[Any]:
    if depth > _MAX_DEPTH:
        raise ValueError(f"strike value nested deeper than {_MAX_DEPTH} levels")
    # Order matters: bool is an int and datetime is a date. Subclasses (enums,
    # for instance) are stored as their base type, read through the base
    # class's own methods so an override cannot change the stored text.
    if value is None:
        return ["none", None]
    if isinstance(value, bool):
        return ["bool", bool(value)]
    if isinstance(value, int):
        return ["int", int.__repr__(value)]
    if isinstance(value, float):
        return ["float", float.__repr__(value)]
    if isinstance(value, str):
        return ["str", str.__str__(value)]
    if isinstance(value, Decimal):
        return ["decimal", Decimal.__str__(value)]
    if isinstance(value, datetime):
        return ["datetime", datetime.isoformat(value)]
    if isinstance(value, date):
        return ["date", date.isoformat(value)]
    if isinstance(value, timedelta):
        return ["timedelta", [value.days, value.seconds, value.microseconds]]
    if isinstance(value, UUID):
        return ["uuid", str(UUID(int=value.int))]
    if isinstance(value, list | tuple):
        return ["tuple", [_to_json(item, depth + 1) for item in value]]
    raise TypeError(
        f"cannot store a strike value of type {type(value).__qualname__}; supported: None, "
        "bool, int, float, str, Decimal, datetime, date, timedelta, UUID and lists or tuples "
        "of those"
    )


class _Garbled(ValueError):
    pass


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise _Garbled(message)


def _from_json(node: Any, depth: int = 0) -> Any:
    _expect(depth <= _MAX_DEPTH, f"value nested deeper than {_MAX_DEPTH} levels")
    _expect(
        isinstance(node, list) and len(node) == 2 and isinstance(node[0], str),
        f"a value must be a [type, payload] pair, not {node!r:.80}",
    )
    tag, payload = node
    match tag:
        case "none":
            _expect(payload is None, "a none value must have a null payload")
            return None
        case "bool":
            _expect(isinstance(payload, bool), "a bool value must be true or false")
            return payload
        case "int":
            _expect(
                isinstance(payload, str) and _INT_PATTERN.fullmatch(payload) is not None,
                f"bad int payload {payload!r:.80}",
            )
            return int(payload)
        case "float":
            _expect(isinstance(payload, str), "a float payload must be a string")
            result = float(payload)
            _expect(
                float.__repr__(result) == payload,
                f"bad float payload {payload!r:.80}",
            )
            return result
        case "str":
            _expect(isinstance(payload, str), "a str payload must be a string")
            return payload
        case "decimal":
            _expect(isinstance(payload, str), "a decimal payload must be a string")
            try:
                return Decimal(payload)
            except InvalidOperation:
                raise _Garbled(f"bad decimal payload {payload!r:.80}") from None
        case "datetime":
            _expect(isinstance(payload, str), "a datetime payload must be a string")
            return datetime.fromisoformat(payload)
        case "date":
            _expect(isinstance(payload, str), "a date payload must be a string")
            return date.fromisoformat(payload)
        case "timedelta":
            _expect(
                isinstance(payload, list)
                and len(payload) == 3
                and all(type(part) is int for part in payload),
                "a timedelta payload must be [days, seconds, microseconds]",
            )
            days, seconds, microseconds = payload
            return timedelta(days=days, seconds=seconds, microseconds=microseconds)
        case "uuid":
            _expect(isinstance(payload, str), "a uuid payload must be a string")
            return UUID(payload)
        case "tuple":
            _expect(isinstance(payload, list), "a tuple payload must be a list")
            return tuple(_from_json(item, depth + 1) for item in payload)
        case _:
            raise _Garbled(f"unknown value type {tag!r:.40}")


def encode_condition(condition: StrikeCondition) -> str:
    """The canonical stored form of ``condition``: equal conditions give equal text.

    Raises ``TypeError`` naming the type if the value cannot be stored.
    """
    return _dumps(
        {
            "v": _FORMAT_VERSION,
            "function": condition.function,
            "parameter": condition.parameter,
            "operator": condition.operator.value,
            "value": _to_json(condition.value),
        }
    )


_FIELDS = frozenset({"v", "function", "parameter", "operator", "value"})


def decode_condition(encoded: str | bytes) -> StrikeCondition:
    """Read a condition written by :func:`encode_condition`.

    Anything else raises ``ValueError`` saying what is wrong; nothing in the text
    can make this run code.
    """
    preview = encoded[:80]
    try:
        text = encoded.decode("utf-8") if isinstance(encoded, bytes) else encoded
        try:
            data = json.loads(text)
        except RecursionError:
            raise _Garbled("nested too deeply") from None
        _expect(isinstance(data, dict), "not a JSON object")
        _expect(data.keys() == _FIELDS, f"expected the fields {sorted(_FIELDS)}")
        _expect(
            type(data["v"]) is int and data["v"] == _FORMAT_VERSION,
            f"unsupported format version {data['v']!r:.20}",
        )
        for name in ("function", "parameter"):
            _expect(data[name] is None or isinstance(data[name], str), f"{name} is not a string")
        _expect(isinstance(data["operator"], str), "operator is not a string")
        return StrikeCondition(
            function=data["function"],
            parameter=data["parameter"],
            operator=_operator(data["operator"]),
            value=_from_json(data["value"]),
        )
    except (ValueError, TypeError, OverflowError) as e:
        # json.JSONDecodeError and UnicodeDecodeError are ValueErrors too; all of
        # them mean the same thing to the caller: this entry is not a strike.
        raise ValueError(f"not a valid encoded strike condition ({e}): {preview!r}") from None


# --- typed values for the command line ---------------------------------------------------


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError(f"expected true or false, not {text!r}")


def _parse_none(text: str) -> None:
    if text:
        raise ValueError(f"'none:' takes no value, got {text!r}")


def _parse_datetime(text: str) -> datetime:
    return datetime.fromisoformat(text.strip())


def _parse_date(text: str) -> date:
    return date.fromisoformat(text.strip())


def _parse_timedelta(text: str) -> timedelta:
    seconds = float(text)
    if not math.isfinite(seconds):
        raise ValueError(f"expected a number of seconds, not {text!r}")
    return timedelta(seconds=seconds)


def _parse_decimal(text: str) -> Decimal:
    try:
        return Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"not a decimal number: {text!r}") from None


def _parse_int(text: str) -> int:
    return int(text)


def _parse_float(text: str) -> float:
    return float(text)


def _parse_str(text: str) -> str:
    return text


def _parse_uuid(text: str) -> UUID:
    return UUID(text.strip())


_PARSERS: dict[str, Callable[[str], Any]] = {
    "int": _parse_int,
    "float": _parse_float,
    "bool": _parse_bool,
    "str": _parse_str,
    "decimal": _parse_decimal,
    "datetime": _parse_datetime,
    "date": _parse_date,
    "timedelta": _parse_timedelta,
    "uuid": _parse_uuid,
    "none": _parse_none,
}
# The released docket's CLI named types by their import path; accept those
# spellings (without importing anything) so existing scripts keep working.
_ALIASES = {
    "builtins.int": "int",
    "builtins.float": "float",
    "builtins.bool": "bool",
    "builtins.str": "str",
    "decimal.decimal": "decimal",
    "datetime.datetime": "datetime",
    "datetime.date": "date",
    "datetime.timedelta": "timedelta",
    "uuid.uuid": "uuid",
}
_PREFIX_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def parse_typed_value(text: str) -> Any:
    """Turn a command-line value such as ``int:5`` into a Python value.

    Prefixes: ``int: float: bool: str: decimal: datetime: date: timedelta:`` (seconds)
    ``uuid: none:``. Text without a known prefix is a string, except that a
    word before a colon that is not a known type is an error, to catch typos
    like ``itn:5``; write ``str:http://...`` for a string with such a colon.
    """
    prefix, colon, rest = text.partition(":")
    if not colon or not _PREFIX_PATTERN.fullmatch(prefix):
        return text
    kind = prefix.lower()
    kind = _ALIASES.get(kind, kind)
    parser = _PARSERS.get(kind)
    if parser is None:
        known = ", ".join(f"{name}:" for name in _PARSERS)
        raise ValueError(
            f"unknown type prefix {prefix!r} in {text!r}; known prefixes are {known} "
            f"(use 'str:{text}' for a string that contains a colon)"
        )
    try:
        return parser(rest)
    except (ValueError, OverflowError) as e:
        raise ValueError(f"cannot read {rest!r} as {kind}: {e}") from None

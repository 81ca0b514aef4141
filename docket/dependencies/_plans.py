"""What a function declares, worked out once per function.

Every run of a task needs the same facts about its signature: which parameters are
dependencies, where each sits positionally, which plain defaults exist. Reading them
with ``inspect`` and ``get_type_hints`` costs far more than a run's resolution, so a
``Plan`` is built on first use and kept for the life of the function.

Rules:

- A parameter whose default is a ``Dependency`` takes its value from it.
- ``Annotated[T, dep]`` metadata does too, unless ``dep`` is an *argument guard* (it
  overrides ``bind_to_parameter``): then the caller supplies the value and the guard
  is entered with it. A bare ``Dependency`` subclass in metadata means an instance
  made with no arguments.
- A function decorated with ``@Perpetual(...)`` carries that declaration as an
  attribute; it counts as one more (parameterless) dependency.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import MethodType
from typing import (
    Annotated,
    Any,
    TypeAliasType,
    get_args,
    get_origin,
    get_type_hints,
)

from ._base import CompletionHandler, Dependency, FailureHandler, Runtime

PERPETUAL_ATTRIBUTE = "__docket_perpetual__"
"""Where ``@Perpetual(...)`` leaves its declaration on the function it decorates."""

_HANDLER_KINDS = (Runtime, FailureHandler, CompletionHandler)


class FunctionCache[V]:
    """A mapping from callables to values that does not keep the callables alive.

    Bound methods are fresh objects on every attribute access, so they are keyed by
    their underlying function. Callables that refuse weak references are held
    strongly; they are rare (instances of slotted classes).
    """

    def __init__(self) -> None:
        self._functions: weakref.WeakKeyDictionary[Any, V] = weakref.WeakKeyDictionary()
        self._methods: weakref.WeakKeyDictionary[Any, V] = weakref.WeakKeyDictionary()
        self._strong: dict[Any, V] = {}

    def get(self, function: Callable[..., Any]) -> V | None:
        try:
            if isinstance(function, MethodType):
                return self._methods.get(function.__func__)
            return self._functions.get(function)
        except TypeError:
            return self._strong.get(function)

    def __setitem__(self, function: Callable[..., Any], value: V) -> None:
        try:
            if isinstance(function, MethodType):
                self._methods[function.__func__] = value
            else:
                self._functions[function] = value
        except TypeError:
            self._strong[function] = value

    def pop(self, function: Callable[..., Any], default: V | None = None) -> V | None:
        try:
            if isinstance(function, MethodType):
                return self._methods.pop(function.__func__, default)
            return self._functions.pop(function, default)
        except TypeError:
            return self._strong.pop(function, default)

    def clear(self) -> None:
        self._functions.clear()
        self._methods.clear()
        self._strong.clear()

    def __len__(self) -> int:
        return len(self._functions) + len(self._methods) + len(self._strong)


@dataclass(frozen=True, slots=True)
class Declared:
    """One dependency a function declares, and where."""

    parameter: str | None
    """The parameter it belongs to; None for the ``@Perpetual`` decorator."""

    dependency: Dependency[Any]
    """As declared, already passed through ``for_parameter``."""

    position: int | None
    """The parameter's index among positional arguments, if it can be passed so."""

    handler: bool
    """Whether it is a Runtime, FailureHandler or CompletionHandler."""

    @property
    def label(self) -> str:
        if self.parameter is None:
            return f"@{type(self.dependency).__name__} decorator"
        return f"parameter {self.parameter!r}"


@dataclass(frozen=True, slots=True)
class Plan:
    """The dependency facts of one function."""

    name: str
    suppliers: tuple[Declared, ...]
    """Parameters whose value a dependency supplies, in signature order."""

    guards: tuple[Declared, ...]
    """Argument guards from ``Annotated`` metadata, in signature order."""

    decorator: Declared | None
    """The ``@Perpetual`` declaration, when the function carries one."""

    by_name: dict[str, Dependency[Any]]
    """Supplier parameter name -> dependency (bound with ``for_parameter``)."""

    declared: dict[str, Dependency[Any]]
    """Supplier parameter name -> dependency exactly as the user wrote it."""

    guards_by_name: dict[str, list[Dependency[Any]]]
    positions: dict[str, int]
    defaults: dict[str, Any]
    """Plain (non-dependency) parameter defaults."""

    parameters: frozenset[str]

    def all_declared(self) -> tuple[Declared, ...]:
        extra = (self.decorator,) if self.decorator is not None else ()
        return (*self.suppliers, *self.guards, *extra)


_plans: FunctionCache[Plan] = FunctionCache()


def function_name(function: Callable[..., Any]) -> str:
    name = getattr(function, "__qualname__", None) or getattr(function, "__name__", None)
    return name if isinstance(name, str) else repr(function)


def get_plan(function: Callable[..., Any]) -> Plan:
    plan = _plans.get(function)
    if plan is None:
        plan = _build_plan(function)
        _plans[function] = plan
    return plan


def forget_plan(function: Callable[..., Any]) -> None:
    """Drop what is known about ``function``, after its declarations changed."""
    _plans.pop(function)
    wrapped = getattr(function, "__wrapped__", None)
    if wrapped is not None and wrapped is not function:
        _plans.pop(wrapped)


def get_dependency_parameters(function: Callable[..., Any]) -> dict[str, Dependency[Any]]:
    """The parameters of ``function`` whose value comes from a dependency.

    Parameter defaults and value-supplying ``Annotated`` metadata; computed once per
    function. The returned dict is shared: do not modify it.
    """
    return get_plan(function).declared


def get_annotation_dependencies(function: Callable[..., Any]) -> dict[str, list[Dependency[Any]]]:
    """The argument guards in ``Annotated`` metadata, by parameter.

    They wrap a run without supplying a value (``ConcurrencyLimit`` on a customer id).
    """
    return get_plan(function).guards_by_name


def declared_dependencies(function: Callable[..., Any]) -> list[Dependency[Any]]:
    """Every dependency ``function`` declares: suppliers, guards and the decorator."""
    return [declared.dependency for declared in get_plan(function).all_declared()]


def _is_guard(dependency: Dependency[Any]) -> bool:
    return type(dependency).bind_to_parameter is not Dependency.bind_to_parameter


def _metadata(hint: Any) -> tuple[Any, ...]:
    # ``type DB = Annotated[...]`` hides its metadata behind the alias, and
    # ``Annotated[DB, x]`` does not merge with it the way nested Annotated forms do.
    if isinstance(hint, TypeAliasType):
        return _metadata(hint.__value__)
    origin = get_origin(hint)
    if isinstance(origin, TypeAliasType):
        return _metadata(origin.__value__)
    if origin is Annotated:
        base, *metadata = get_args(hint)
        return (*_metadata(base), *metadata)
    return ()


def _annotation_hints(function: Callable[..., Any], signature: inspect.Signature) -> dict[str, Any]:
    try:
        return get_type_hints(function, include_extras=True)
    except Exception:
        pass
    # One unresolvable annotation (a name imported only for type checkers, say) must
    # not hide the dependencies declared in the others.
    namespace = getattr(inspect.unwrap(function), "__globals__", {})
    hints: dict[str, Any] = {}
    for name, parameter in signature.parameters.items():
        annotation = parameter.annotation
        if annotation is inspect.Parameter.empty:
            continue
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, dict(namespace))
            except Exception:
                continue
        hints[name] = annotation
    return hints


def _metadata_dependencies(hint: Any, where: str) -> list[Dependency[Any]]:
    found: list[Dependency[Any]] = []
    for item in _metadata(hint):
        if isinstance(item, Dependency):
            found.append(item)
        elif isinstance(item, type) and issubclass(item, Dependency):
            try:
                found.append(item())
            except TypeError as error:
                raise ValueError(
                    f"{where}: the dependency class {item.__name__} in its annotation "
                    f"cannot be made without arguments ({error}); annotate with an "
                    "instance instead"
                ) from error
    return found


def _build_plan(function: Callable[..., Any]) -> Plan:
    name = function_name(function)
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        # Builtins and some C callables have no signature; they declare nothing.
        signature = inspect.Signature()

    hints = _annotation_hints(function, signature)

    suppliers: list[Declared] = []
    guards: list[Declared] = []
    by_name: dict[str, Dependency[Any]] = {}
    declared: dict[str, Dependency[Any]] = {}
    guards_by_name: dict[str, list[Dependency[Any]]] = {}
    positions: dict[str, int] = {}
    defaults: dict[str, Any] = {}

    index = 0
    for parameter_name, parameter in signature.parameters.items():
        position: int | None = None
        if parameter.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            position = index
            positions[parameter_name] = index
            index += 1
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue

        where = f"Parameter {parameter_name!r} of task {name!r}"
        metadata = _metadata_dependencies(hints.get(parameter_name), where)
        value_sources: list[Dependency[Any]] = [d for d in metadata if not _is_guard(d)]
        if isinstance(parameter.default, Dependency):
            value_sources.append(parameter.default)
        elif parameter.default is not inspect.Parameter.empty:
            defaults[parameter_name] = parameter.default

        if len(value_sources) > 1:
            raise ValueError(f"{where} declares more than one dependency for its value")
        if value_sources:
            original = value_sources[0]
            bound = original.for_parameter(parameter_name)
            declared[parameter_name] = original
            by_name[parameter_name] = bound
            suppliers.append(
                Declared(parameter_name, bound, position, isinstance(bound, _HANDLER_KINDS))
            )

        parameter_guards = [d for d in metadata if _is_guard(d)]
        if parameter_guards:
            guards_by_name[parameter_name] = parameter_guards
            guards.extend(
                Declared(parameter_name, guard, position, isinstance(guard, _HANDLER_KINDS))
                for guard in parameter_guards
            )

    decorator: Declared | None = None
    marked = getattr(function, PERPETUAL_ATTRIBUTE, None)
    if isinstance(marked, Dependency):
        decorator = Declared(None, marked, None, isinstance(marked, _HANDLER_KINDS))

    return Plan(
        name=name,
        suppliers=tuple(suppliers),
        guards=tuple(guards),
        decorator=decorator,
        by_name=by_name,
        declared=declared,
        guards_by_name=guards_by_name,
        positions=positions,
        defaults=defaults,
        parameters=frozenset(signature.parameters),
    )

"""``@docket_starlette.task``: tasks that declare the app's own FastAPI dependencies.

The decorated function is what you register and enqueue. Its parameters are sorted
into three kinds:

- **request parameters**: a FastAPI ``Depends``/``Security`` (as a default or in
  ``Annotated``), a ``Query``/``Header``/``Cookie``, or a parameter annotated with
  ``Request``/``HTTPConnection``/``SecurityScopes``. They are resolved per run by
  FastAPI's own resolver against a synthetic request (the app, a copy of its lifespan
  state and the allowlisted snapshot of the enqueuing request), honouring
  ``app.dependency_overrides`` and ``use_cache``, with yield dependencies closed after
  the run. All of a run's request parameters are solved together, once.
- **impossible parameters**: a body (``Body``/``Form``/``File``/``UploadFile``), a
  ``WebSocket``, a ``Response`` or ``BackgroundTasks``, anywhere in the dependency tree:
  rejected here, at registration, with an error naming task and parameter.
- everything else: task arguments and docket's own dependencies, exactly as before.

Plain Starlette apps (no FastAPI installed) may still annotate a parameter ``Request``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Annotated, Any, cast, get_args, get_origin, get_type_hints, overload

from starlette.background import BackgroundTasks as StarletteBackgroundTasks
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.websockets import WebSocket

from docket.dependencies import Depends as DocketDepends
from docket.dependencies import current_docket

from ._context import BRIDGED_ATTRIBUTE, SNAPSHOT_KWARG, binding_for, build_scope
from ._run import TaskRequest, run_snapshot

try:
    from fastapi import params as _fastapi_params
    from fastapi.datastructures import UploadFile as _UploadFile
    from fastapi.security import SecurityScopes as _SecurityScopes

    HAS_FASTAPI = True
except ImportError:  # pragma: no cover - exercised only without the fastapi extra
    HAS_FASTAPI = False


class TaskRegistrationError(TypeError):
    """A task declares something that cannot exist outside a live request."""

    def __init__(self, task: str, parameter: str, reason: str) -> None:
        self.task = task
        self.parameter = parameter
        self.reason = reason
        super().__init__(f"Task {task!r}, parameter {parameter!r}: {reason}")


class RequestDependencyError(RuntimeError):
    """FastAPI could not resolve a task's request parameters (a missing query param...)."""


_IMPOSSIBLE_TYPES: tuple[tuple[type[Any], str], ...] = (
    (WebSocket, "a WebSocket"),
    (Response, "a Response"),
    (StarletteBackgroundTasks, "BackgroundTasks"),
)


def _split_annotated(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    if get_origin(hint) is Annotated:
        base, *metadata = get_args(hint)
        inner, more = _split_annotated(base)
        return inner, (*more, *metadata)
    return hint, ()


def _is_subclass(hint: Any, classes: type[Any] | tuple[type[Any], ...]) -> bool:
    return isinstance(hint, type) and issubclass(hint, classes)


def _impossible_reason(base: Any, markers: list[Any]) -> str | None:
    for cls, what in _IMPOSSIBLE_TYPES:
        if _is_subclass(base, cls):
            return f"{what} exists only inside a live request"
    if HAS_FASTAPI:
        if _is_subclass(base, _UploadFile):
            return "an uploaded file exists only inside a live request"
        for marker in markers:
            if isinstance(marker, _fastapi_params.Body):
                kind = type(marker).__name__
                return f"a request body ({kind}) exists only inside a live request"
    return None


def _is_request_parameter(base: Any, markers: list[Any]) -> bool:
    if _is_subclass(base, HTTPConnection):
        return True
    if HAS_FASTAPI:
        if _is_subclass(base, _SecurityScopes):
            return True
        return any(isinstance(m, (_fastapi_params.Depends, _fastapi_params.Param)) for m in markers)
    return False


def _walk_dependant(dependant: Any, chain: list[str], task: str, parameter: str) -> None:
    """Reject what FastAPI would need a live request for, anywhere in the tree."""
    where = " -> ".join(chain)
    problems: list[str] = []
    if dependant.body_params:
        names = ", ".join(repr(f.name) for f in dependant.body_params)
        problems.append(f"needs the request body ({names})")
    if dependant.websocket_param_name:
        problems.append(f"needs a WebSocket ({dependant.websocket_param_name!r})")
    if dependant.response_param_name:
        problems.append(f"needs the Response ({dependant.response_param_name!r})")
    if dependant.background_tasks_param_name:
        problems.append(f"needs BackgroundTasks ({dependant.background_tasks_param_name!r})")
    if problems:
        raise TaskRegistrationError(
            task,
            parameter,
            f"dependency {where} {' and '.join(problems)}, which exists only inside a live "
            "request; pass the value as a task argument instead",
        )
    for sub in dependant.dependencies:
        name = getattr(sub.call, "__qualname__", None) or repr(sub.call)
        _walk_dependant(sub, [*chain, name], task, parameter)


def _pick(values: dict[str, Any], name: str) -> Any:
    return values[name]


def _build_solver(
    task_name: str, function: Callable[..., Any], parameters: list[inspect.Parameter]
) -> Callable[[], AsyncIterator[dict[str, Any]]]:
    from fastapi.dependencies.utils import get_dependant, solve_dependencies

    def request_parameters(**kwargs: Any) -> None:  # pragma: no cover - never called
        return None

    request_parameters.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    request_parameters.__qualname__ = f"{task_name}.<request parameters>"
    request_parameters.__module__ = getattr(function, "__module__", __name__)
    try:
        dependant = get_dependant(path="", call=request_parameters)
    except Exception as error:
        raise TaskRegistrationError(
            task_name, ", ".join(p.name for p in parameters), f"FastAPI cannot read it: {error}"
        ) from error

    for sub in dependant.dependencies:
        name = getattr(sub.call, "__qualname__", None) or repr(sub.call)
        _walk_dependant(sub, [name], task_name, sub.name or "?")

    async def solve() -> AsyncIterator[dict[str, Any]]:
        binding = binding_for(current_docket.get(None))
        app = binding.app if binding is not None else None
        async with AsyncExitStack() as stack:
            from starlette.requests import Request

            request = Request(
                build_scope(
                    binding,
                    run_snapshot(),
                    fastapi_inner_astack=stack,
                    fastapi_function_astack=stack,
                    fastapi_astack=stack,
                )
            )
            solved = await solve_dependencies(
                request=request,
                dependant=dependant,
                body=None,
                dependency_overrides_provider=(
                    app if app is not None and hasattr(app, "dependency_overrides") else None
                ),
                async_exit_stack=stack,
                embed_body_fields=False,
            )
            if solved.errors:
                raise RequestDependencyError(
                    f"Task {task_name!r}: the request parameters did not resolve: {solved.errors}"
                )
            yield solved.values

    solve.__qualname__ = f"{task_name}.<fastapi dependencies>"
    return solve


@overload
def task[F: Callable[..., Any]](function: F, /) -> F: ...
@overload
def task[F: Callable[..., Any]](*, name: str | None = None) -> Callable[[F], F]: ...
def task[F: Callable[..., Any]](
    function: F | None = None, /, *, name: str | None = None
) -> F | Callable[[F], F]:
    """Make ``function`` a docket task that may declare the app's FastAPI dependencies
    and sees the request it was enqueued from. Register and enqueue the result.

    Raises ``TaskRegistrationError`` (a ``TypeError``) for parameters that cannot exist
    outside a live request, naming task and parameter.
    """

    def decorate(function: F) -> F:
        return cast(F, bridge(function, name=name))

    if function is not None:
        return decorate(function)
    return decorate


def needs_bridge(function: Any) -> bool:
    """Whether ``function`` declares what only the bridge resolves (a FastAPI dependency,
    a ``Request``) or refuses (a body, a ``WebSocket``...): a plain task registered on an
    app's docket is bridged as ``@task`` would bridge it."""
    if getattr(function, BRIDGED_ATTRIBUTE, False) or not callable(function):
        return False
    try:
        signature = inspect.signature(function)
        hints = get_type_hints(function, include_extras=True)
    except Exception:
        return False
    for parameter in signature.parameters.values():
        base, metadata = _split_annotated(hints.get(parameter.name, parameter.annotation))
        markers = list(metadata)
        if parameter.default is not inspect.Parameter.empty:
            markers.append(parameter.default)
        if _impossible_reason(base, markers) or _is_request_parameter(base, markers):
            return True
    return False


def bridge(function: Callable[..., Any], *, name: str | None = None) -> Callable[..., Any]:
    """The function behind ``@task``: returns the wrapper docket runs."""
    if getattr(function, BRIDGED_ATTRIBUTE, False):
        return function
    task_name: str = name or str(getattr(function, "__name__", repr(function)))
    signature = inspect.signature(function)
    try:
        hints = get_type_hints(function, include_extras=True)
    except Exception as error:
        raise TaskRegistrationError(
            task_name, "?", f"its annotations cannot be resolved: {error}"
        ) from error

    new_parameters: list[inspect.Parameter] = []
    annotations: dict[str, Any] = {}
    request_parameters: list[inspect.Parameter] = []
    starlette_requests: list[str] = []
    var_keyword: inspect.Parameter | None = None
    moved: set[str] = set()

    for parameter in signature.parameters.values():
        if parameter.name == SNAPSHOT_KWARG:
            raise TaskRegistrationError(task_name, parameter.name, "this name is reserved")
        hint = hints.get(parameter.name, parameter.annotation)
        base, metadata = _split_annotated(hint)
        markers = list(metadata)
        if parameter.default is not inspect.Parameter.empty:
            markers.append(parameter.default)
        reason = _impossible_reason(base, markers)
        if reason is not None:
            raise TaskRegistrationError(task_name, parameter.name, reason)
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            var_keyword = parameter
            continue
        if parameter.kind is not inspect.Parameter.VAR_POSITIONAL and _is_request_parameter(
            base, markers
        ):
            if HAS_FASTAPI:
                request_parameters.append(
                    parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hint)
                )
            elif _is_subclass(base, HTTPConnection):
                starlette_requests.append(parameter.name)
            # Keyword-only in the wrapper, so positional task arguments map to the
            # task's own parameters, whatever the request parameters' places.
            new_parameters.append(
                parameter.replace(annotation=base, kind=inspect.Parameter.KEYWORD_ONLY)
            )
            annotations[parameter.name] = base
            moved.add(parameter.name)
            continue
        new_parameters.append(parameter)
        if parameter.name in hints:
            annotations[parameter.name] = hints[parameter.name]

    if request_parameters:
        solver = _build_solver(task_name, function, request_parameters)
        values = DocketDepends(solver)
        replaced = {
            p.name: DocketDepends(_pick, values=values, name=p.name) for p in request_parameters
        }
    else:
        replaced = {n: TaskRequest() for n in starlette_requests}
    new_parameters = [
        p.replace(default=replaced[p.name]) if p.name in replaced else p for p in new_parameters
    ]
    new_parameters.append(
        inspect.Parameter(
            SNAPSHOT_KWARG, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Any
        )
    )
    if var_keyword is not None:
        new_parameters.append(var_keyword)
    if "return" in hints:
        annotations["return"] = hints["return"]

    is_async = inspect.iscoroutinefunction(function)
    wrapper_signature = inspect.Signature(
        _ordered(new_parameters),
        return_annotation=signature.return_annotation,
        __validate_parameters__=False,
    )

    def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        kwargs.pop(SNAPSHOT_KWARG, None)
        if not moved:
            return args
        # Positional arguments were given by the wrapper's positions: hand them to
        # the function by name.
        positional = [
            p
            for p in wrapper_signature.parameters.values()
            if p.kind
            in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        ]
        extra: tuple[Any, ...] = ()
        for index, value in enumerate(args):
            if index < len(positional):
                kwargs[positional[index].name] = value
            else:
                extra = args[index:]
                break
        return extra

    if is_async:

        @functools.wraps(function)
        async def run(*args: Any, **kwargs: Any) -> Any:
            rest = arguments(args, kwargs)
            return await function(*rest, **kwargs)

        wrapper: Callable[..., Any] = run
    else:

        @functools.wraps(function)
        def run_sync(*args: Any, **kwargs: Any) -> Any:
            rest = arguments(args, kwargs)
            return function(*rest, **kwargs)

        wrapper = run_sync

    # Not validated: ``def t(n: int, db=Depends(get_db), *, m: int)`` keeps its
    # shape, which Python's own rules may forbid but docket's positions do not mind.
    wrapper.__signature__ = wrapper_signature  # type: ignore[attr-defined]
    wrapper.__annotations__ = annotations
    if name is not None:
        wrapper.__name__ = name
    setattr(wrapper, BRIDGED_ATTRIBUTE, True)

    from docket.dependencies import validate_task

    validate_task(wrapper)
    return wrapper


def _ordered(parameters: list[inspect.Parameter]) -> list[inspect.Parameter]:
    """Positional parameters, ``*args``, keyword-only ones, ``**kwargs``: in that order."""
    order = {
        inspect.Parameter.POSITIONAL_ONLY: 0,
        inspect.Parameter.POSITIONAL_OR_KEYWORD: 0,
        inspect.Parameter.VAR_POSITIONAL: 1,
        inspect.Parameter.KEYWORD_ONLY: 2,
        inspect.Parameter.VAR_KEYWORD: 3,
    }
    return sorted(parameters, key=lambda p: order[p.kind])

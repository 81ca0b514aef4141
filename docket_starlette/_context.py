"""What travels from an enqueuing request to a task run, and where it lives in each.

On the web side, the current request (set by ``RequestContextMiddleware``, by
``get_docket(request)`` and by ``DocketDep``) is kept in a context variable; when a task
is added through the app's docket, an allowlisted *snapshot* of it is taken
(``RequestCapture`` says what) and travels with the task as execution metadata
(``Execution.metadata["docket_starlette.request"]``), never among its arguments.

On the worker side, the snapshot rebuilds a synthetic ``Request`` for the run, and the
request id is restored as a context variable and a log field.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from starlette.authentication import BaseUser
from starlette.requests import HTTPConnection

VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
"""What a request id taken from a header must look like (anything else is not one)."""

SNAPSHOT_METADATA = "docket_starlette.request"
"""The ``Execution.metadata`` key the request snapshot travels under."""

SNAPSHOT_KWARG = "_docket_request"
"""The keyword argument the snapshot travelled in before it was execution metadata: runs
queued by earlier releases still carry it, and bridged tasks still take it."""

BRIDGED_ATTRIBUTE = "__docket_starlette_task__"
"""Set on functions made by ``@docket_starlette.task``; they accept the snapshot."""

RequestSnapshot = dict[str, Any]
"""A captured request: plain JSON-compatible data, so any docket serializer carries it."""

current_request_id: ContextVar[str | None] = ContextVar("docket_request_id", default=None)
"""The request id of the request being served, or of the request a task run came from."""

current_snapshot: ContextVar[RequestSnapshot | None] = ContextVar(
    "docket_request_snapshot", default=None
)
"""In a worker: the snapshot of the request the running task was enqueued from."""

_current_connection: ContextVar[HTTPConnection | None] = ContextVar(
    "docket_current_connection", default=None
)


def set_current_connection(connection: HTTPConnection) -> None:
    """Remember ``connection`` as the request enqueues in this context come from."""
    if _current_connection.get() is not connection:
        _current_connection.set(connection)


def get_current_connection() -> HTTPConnection | None:
    return _current_connection.get()


class Principal(BaseUser):
    """The authenticated user of the enqueuing request, as a task run sees it."""

    def __init__(self, identity: str, display_name: str = "") -> None:
        self._identity = identity
        self._display_name = display_name or identity

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self._display_name

    @property
    def identity(self) -> str:
        return self._identity

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Principal) and other._identity == self._identity

    def __hash__(self) -> int:
        return hash(self._identity)

    def __repr__(self) -> str:
        return f"Principal({self._identity!r})"


def default_principal(connection: HTTPConnection) -> Any:
    """``{"identity", "display_name"}`` of an authenticated ``scope["user"]``, or None."""
    user = connection.scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    try:
        identity = str(user.identity)
    except NotImplementedError:
        identity = str(user.display_name)
    return {"identity": identity, "display_name": str(getattr(user, "display_name", identity))}


@dataclass(frozen=True)
class RequestCapture:
    """What of the enqueuing request a task may see (an allowlist).

    ``headers``: header names (case-insensitive) copied into the synthetic request.
    ``request_id_header``: the request id's header, copied too, and the run's request id
    when no ``RequestContextMiddleware`` set one (None: neither).
    ``path_params`` / ``query_params``: copied when True. ``client``: the client
    address. ``principal``: a function of the request returning something picklable
    (and JSON-compatible, for JSON dockets) that identifies the user; None captures
    nobody. The default takes an authenticated ``request.user``'s identity, which the
    run sees as ``request.user`` (a ``Principal``).
    """

    headers: Sequence[str] = ("accept-language",)
    request_id_header: str | None = "x-request-id"
    path_params: bool = True
    query_params: bool = True
    client: bool = True
    principal: Callable[[HTTPConnection], Any] | None = default_principal
    extra: Callable[[HTTPConnection], Mapping[str, Any]] | None = None
    """Anything else to carry, available as ``request.scope["docket.extra"]``."""

    def snapshot(self, connection: HTTPConnection) -> RequestSnapshot:
        wanted = {name.lower() for name in self.headers}
        request_id = current_request_id.get()
        if self.request_id_header:
            header = self.request_id_header.lower()
            wanted.add(header)
            incoming = connection.headers.get(header)
            if request_id is None and incoming and VALID_REQUEST_ID.match(incoming):
                request_id = incoming
        scope = connection.scope
        snapshot: RequestSnapshot = {
            "v": 1,
            "method": scope.get("method", "GET"),
            "scheme": scope.get("scheme", "http"),
            "path": scope.get("path", "/"),
            "root_path": scope.get("root_path", ""),
            "headers": [
                [name, value] for name, value in connection.headers.items() if name in wanted
            ],
            "request_id": request_id,
        }
        if self.path_params:
            snapshot["path_params"] = dict(scope.get("path_params") or {})
        if self.query_params:
            snapshot["query_params"] = list(connection.query_params.multi_items())
        if self.client and connection.client is not None:
            snapshot["client"] = [connection.client.host, connection.client.port]
        if self.principal is not None:
            snapshot["principal"] = self.principal(connection)
        if self.extra is not None:
            snapshot["extra"] = dict(self.extra(connection))
        return snapshot


@dataclass
class AppBinding:
    """An app, as a docket's workers see it: its lifespan state and capture rules."""

    app: Any
    state: dict[str, Any] = field(default_factory=dict)
    capture: RequestCapture = field(default_factory=RequestCapture)


_bindings: dict[int, tuple[Any, AppBinding]] = {}


def bind(docket: Any, binding: AppBinding) -> None:
    """Make ``binding`` the app of every run of ``docket``'s tasks in this process."""
    _bindings[id(docket)] = (docket, binding)


def unbind(docket: Any) -> None:
    entry = _bindings.get(id(docket))
    if entry is not None and entry[0] is docket:
        del _bindings[id(docket)]


def binding_for(docket: Any) -> AppBinding | None:
    entry = _bindings.get(id(docket))
    if entry is not None and entry[0] is docket:
        return entry[1]
    return None


def build_scope(
    binding: AppBinding | None, snapshot: RequestSnapshot | None, **extra: Any
) -> dict[str, Any]:
    """The ASGI scope of the synthetic request a task run sees.

    It always has ``headers`` (possibly empty), the app and a shallow copy of the
    lifespan state, like a request a server hands to the app.
    """
    snapshot = snapshot or {}
    app = binding.app if binding is not None else None
    headers = [
        (str(name).encode("latin-1"), str(value).encode("latin-1"))
        for name, value in snapshot.get("headers", [])
    ]
    query = urlencode([(str(k), str(v)) for k, v in snapshot.get("query_params", [])])
    path = str(snapshot.get("path", "/"))
    client = snapshot.get("client")
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": str(snapshot.get("method", "GET")),
        "scheme": str(snapshot.get("scheme", "http")),
        "server": None,
        "path": path,
        "raw_path": path.encode("utf-8"),
        "root_path": str(snapshot.get("root_path", "")),
        "query_string": query.encode("latin-1"),
        "headers": headers,
        "client": tuple(client) if client else None,
        "path_params": dict(snapshot.get("path_params", {})),
        "state": dict(binding.state) if binding is not None else {},
        "app": app,
        "docket.snapshot": snapshot,
        "docket.extra": dict(snapshot.get("extra", {})),
    }
    router = getattr(app, "router", None)
    if router is not None:
        scope["router"] = router
    principal = snapshot.get("principal")
    if isinstance(principal, dict) and "identity" in principal:
        scope["user"] = Principal(
            str(principal["identity"]), str(principal.get("display_name", ""))
        )
    elif principal is not None:
        scope["user"] = principal
    scope.update(extra)
    return scope


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestIdLogFilter(logging.Filter):
    """Adds ``request_id`` to log records made while a request (or a run) has one."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True


_LOG_FILTER = RequestIdLogFilter()


def install_log_filter(*names: str) -> None:
    """Put the request-id filter on the named loggers (idempotent)."""
    for name in names:
        logger = logging.getLogger(name)
        if _LOG_FILTER not in logger.filters:
            logger.addFilter(_LOG_FILTER)


embedded_worker_disabled: ContextVar[bool] = ContextVar(
    "docket_embedded_worker_disabled", default=False
)
"""True inside a separate worker process's lifespan: no embedded worker there."""

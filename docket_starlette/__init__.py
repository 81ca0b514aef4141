"""docket for Starlette and FastAPI: a task run is treated like a request.

- ``docket_lifespan(url=..., name=..., worker=WorkerOptions(...))`` opens the app's docket
  (``request.state.docket``, ``app.state.docket``) and optionally an embedded worker;
- ``get_docket(request)`` (Starlette) and ``DocketDep`` (FastAPI) in endpoints;
- ``@task``: tasks that declare the app's own FastAPI dependencies, resolved per run
  against a synthetic request carrying an allowlisted snapshot of the enqueuing one;
- ``RequestContextMiddleware``: request id and trace context carried into tasks;
- ``run_with_app`` for a separate worker process, ``testing.run_tasks`` for tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._context import (
    Principal,
    RequestCapture,
    RequestIdLogFilter,
    current_request_id,
    current_snapshot,
)
from ._run import RequestContext, TaskRequest, synthetic_request
from .bridge import RequestDependencyError, TaskRegistrationError, task
from .lifespan import (
    AppDocket,
    WorkerOptions,
    combine_lifespans,
    docket_lifespan,
    get_docket,
)
from .middleware import RequestContextMiddleware
from .worker import run_with_app

if TYPE_CHECKING:
    from .dashboard_mount import Access, DashboardAuthError, dashboard
    from .fastapi import DocketDep

_DASHBOARD = ("Access", "DashboardAuthError", "dashboard")

__all__ = [
    "Access",
    "AppDocket",
    "DashboardAuthError",
    "DocketDep",
    "Principal",
    "RequestCapture",
    "RequestContext",
    "RequestContextMiddleware",
    "RequestDependencyError",
    "RequestIdLogFilter",
    "TaskRegistrationError",
    "TaskRequest",
    "WorkerOptions",
    "combine_lifespans",
    "current_request_id",
    "current_snapshot",
    "dashboard",
    "docket_lifespan",
    "get_docket",
    "run_with_app",
    "synthetic_request",
    "task",
]


def __getattr__(name: str) -> Any:
    # ``DocketDep`` needs FastAPI; plain Starlette apps never import it.
    if name == "DocketDep":
        from .fastapi import DocketDep

        return DocketDep
    # The dashboard's templates load only in an app that mounts it.
    if name in _DASHBOARD:
        from . import dashboard_mount

        return getattr(dashboard_mount, name)
    raise AttributeError(f"module 'docket_starlette' has no attribute {name!r}")

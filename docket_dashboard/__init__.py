"""docket's dashboard, free of any web framework: what it reads from a docket
(``data``), the pages it renders, and the actions it takes. ``docket_django`` mounts it
as an admin page, ``docket_starlette.dashboard`` as an ASGI app; another framework's
mount turns its request into a ``DashboardRequest`` and sends back the
``DashboardResponse`` (see ``Dashboard.handle``)."""

from __future__ import annotations

from .core import (
    FRAGMENT_HEADER,
    Access,
    Dashboard,
    DashboardRequest,
    DashboardResponse,
    Links,
)

__all__ = [
    "FRAGMENT_HEADER",
    "Access",
    "Dashboard",
    "DashboardRequest",
    "DashboardResponse",
    "Links",
]

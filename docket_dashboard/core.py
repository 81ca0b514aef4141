"""The dashboard as a function from a request to a response, with no web framework in
it: the Django admin page and the ASGI app each turn their framework's request into a
``DashboardRequest``, say who may do what (``Access``), and send back the
``DashboardResponse``."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jinja2
import markupsafe

from docket import failures, inspection

from . import actions, chart, data, formatting

if TYPE_CHECKING:
    from docket import Docket

_HERE = Path(__file__).parent
STATIC = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}
PAGE_SIZES = (25, 50, 100, 200)
FRAGMENT_HEADER = "x-docket-fragment"
"""The header the page's live refresh sends: the answer is the page's content only."""


class Access(StrEnum):
    """What a user may do on the dashboard."""

    VIEW = "view"
    """See every page; no action."""
    MANAGE = "manage"
    """Also cancel, retry, requeue, purge and strike."""


@dataclass
class DashboardRequest:
    method: str
    path: str
    """The path below the mount, ``""`` or ``"/"`` for the overview."""
    query: Mapping[str, str]
    form: Mapping[str, str] = field(default_factory=dict)
    access: Access = Access.VIEW
    fragment: bool = False
    """The live refresh asking for the content only."""


@dataclass
class DashboardResponse:
    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Links:
    """How the pages link to each other under a mount: its base URL, and the query
    parameters every link keeps (the Django mount's ``docket`` alias)."""

    base: str
    keep: Mapping[str, str] = field(default_factory=dict)

    def __call__(self, page: str = "", **query: Any) -> str:
        params = {**self.keep, **{k: str(v) for k, v in query.items() if v not in (None, "")}}
        url = self.base.rstrip("/") + "/" + page.lstrip("/")
        return url + ("?" + urlencode(params) if params else "")


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["span"] = formatting.span
    environment.filters["short"] = formatting.short
    environment.filters["iso"] = formatting.iso
    environment.filters["call"] = formatting.call
    return environment


_ENVIRONMENT = _environment()


def static_file(name: str) -> DashboardResponse:
    if name not in STATIC:
        return DashboardResponse(404, b"Not found", "text/plain; charset=utf-8")
    return DashboardResponse(
        200, _static_bytes(name), STATIC[name], {"cache-control": "public, max-age=300"}
    )


@functools.cache
def _static_bytes(name: str) -> bytes:
    # Read once per process: every page load asks for both files.
    return (_HERE / "static" / name).read_bytes()


class Dashboard:
    """One docket's dashboard, its pages linked under ``links``. ``handle`` answers a
    request; with ``standalone=False`` a page is rendered without its own ``<html>``
    and header, for a host page to wrap (the Django admin wraps it in its layout)."""

    def __init__(self, docket: Docket, links: Links, *, title: str = "Docket") -> None:
        self.docket = docket
        self.links = links
        self.title = title

    async def handle(
        self, request: DashboardRequest, *, csrf_input: str = "", standalone: bool = True
    ) -> DashboardResponse:
        path = "/" + request.path.strip("/")
        if path.startswith("/static/"):
            return static_file(path.removeprefix("/static/"))
        if request.method == "POST":
            if path != "/action":
                return _text(405, "Only the action endpoint takes POST")
            if request.access is not Access.MANAGE:
                return _text(403, "You may look at this dashboard but not act on it")
            return await actions.perform(self.docket, self.links, request.form)
        if request.method not in ("GET", "HEAD"):
            return _text(405, f"{request.method} is not allowed here")
        try:
            page, context = await self._page(path, request)
        except LookupError as missing:
            page, context = "missing.html", {"what": str(missing)}
        except ValueError as bad:
            return _text(400, str(bad))
        html = self.render(
            page,
            context,
            request=request,
            csrf_input=csrf_input,
            standalone=standalone and not request.fragment,
            fragment=request.fragment,
        )
        status = 404 if page == "missing.html" else 200
        return DashboardResponse(status, html.encode())

    def render(
        self,
        page: str,
        context: dict[str, Any],
        *,
        request: DashboardRequest,
        csrf_input: str,
        standalone: bool,
        fragment: bool,
    ) -> str:
        now = datetime.now(UTC)
        template = _ENVIRONMENT.get_template(page)
        return template.render(
            **context,
            url=self.links,
            static=lambda name: self.links(f"static/{name}"),
            title=self.title,
            docket=self.docket,
            now=now,
            ago=lambda moment: formatting.relative(moment, now),
            path="/" + request.path.strip("/"),
            query=request.query,
            can_manage=request.access is Access.MANAGE,
            csrf_input=markupsafe.Markup(csrf_input),  # the mount's own markup
            standalone=standalone,
            fragment=fragment,
            flash=request.query.get("done", ""),
            flash_error=request.query.get("error", ""),
            here=self.links(request.path, **dict(request.query)),
        )

    async def _page(self, path: str, request: DashboardRequest) -> tuple[str, dict[str, Any]]:
        query = request.query
        if path == "/":
            found = await data.overview(self.docket)
            return "overview.html", {
                "overview": found,
                "chart": chart.chart(found.depth, found.taken),
                "chart_width": chart.WIDTH,
                "chart_height": chart.HEIGHT,
            }
        if path.lstrip("/") in data.LISTS:
            which = path.lstrip("/")
            size = _page_size(query)
            task = query.get("task") or None
            page = await data.task_list(
                self.docket, which, count=size, after=query.get("after") or None, task=task
            )
            known = sorted(set(self.docket.tasks) | page.tasks | ({task} if task else set()))
            return "list.html", {
                "which": which,
                "page": page,
                "size": size,
                "sizes": PAGE_SIZES,
                "task": task or "",
                "tasks": known,
                "counts": await inspection.count_states(self.docket),
            }
        if path == "/task":
            key = query.get("key", "").strip()
            if not key:
                raise ValueError("Give the task key to look up: /task?key=<key>")
            task_page = await data.task_page(self.docket, key)
            if task_page is None:
                raise LookupError(f"No task with key {key!r} (never added, or expired)")
            return "task.html", {"task": task_page}
        if path == "/failures":
            size = _page_size(query)
            task = query.get("task") or None
            listed = await data.failures(
                self.docket, count=size, before=query.get("before") or None, task=task
            )
            return "failures.html", {
                "failures": listed,
                "size": size,
                "task": task or "",
                "total": await failures.count_failures(self.docket),
            }
        if path == "/dead-letters":
            size = _page_size(query)
            letters, total = await data.dead_letter_page(
                self.docket, count=size, after=query.get("after") or None
            )
            return "dead_letters.html", {"letters": letters, "total": total, "size": size}
        if path == "/strikes":
            return "strikes.html", {
                "strikes": data.strikes(self.docket),
                "operators": actions.OPERATORS,
                "tasks": sorted(self.docket.tasks),
            }
        raise LookupError(f"No page {path!r} on this dashboard")


def _page_size(query: Mapping[str, str]) -> int:
    raw = query.get("size") or "50"
    try:
        size = int(raw)
    except ValueError:
        raise ValueError(f"size must be one of {PAGE_SIZES}, not {raw!r}") from None
    if size not in PAGE_SIZES:
        raise ValueError(f"size must be one of {PAGE_SIZES}, not {size}")
    return size


def _text(status: int, message: str) -> DashboardResponse:
    return DashboardResponse(status, message.encode(), "text/plain; charset=utf-8")

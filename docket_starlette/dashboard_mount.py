"""docket's dashboard as an ASGI app, to mount in a Starlette or FastAPI app::

    app.mount("/docket", dashboard(auth=staff_only))

``auth`` is called with each request (a Starlette ``Request``; sync or async) and gives
its verdict: ``Access.MANAGE`` (or ``True``) lets the user see every page and act
(cancel, retry, requeue, purge, strike); ``Access.VIEW`` lets them look only; ``False``
or ``None`` refuses with 403. An ``HTTPException`` it raises is answered as it says (a
401 with ``WWW-Authenticate``, a redirect to the login page). Without ``auth`` the app
refuses to be built, unless told ``insecure=True`` (a dashboard on a private port).

Actions are POSTed forms protected against cross-site requests: each carries a token
that must match the dashboard's own cookie, and a request whose ``Origin`` is another
site is refused.
"""

from __future__ import annotations

import hmac
import inspect
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from markupsafe import escape
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from docket_dashboard import (
    FRAGMENT_HEADER,
    Access,
    Dashboard,
    DashboardRequest,
    DashboardResponse,
    Links,
)

from .lifespan import get_docket

if TYPE_CHECKING:
    from docket import Docket

__all__ = ["Access", "DashboardAuthError", "dashboard"]

Verdict = Access | bool | str | None
Auth = Callable[[Request], Verdict | Awaitable[Verdict]]

CSRF_COOKIE = "docket_dashboard_csrf"
CSRF_FIELD = "csrf_token"
_LONGEST_FORM = 64 * 1024
_SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


class DashboardAuthError(ValueError):
    """The dashboard was asked for without a way to tell who may see it."""


def dashboard(
    docket: Docket | None = None,
    *,
    auth: Auth | None = None,
    insecure: bool = False,
    title: str = "Docket",
) -> DashboardApp:
    """The dashboard of ``docket`` (by default the app's own, which ``docket_lifespan``
    opened) as an ASGI app to mount. ``auth`` decides who may see and act (see the
    module's docs); leaving it out needs ``insecure=True``."""
    if auth is None and not insecure:
        raise DashboardAuthError(
            "dashboard() needs auth=: a callable that takes the request and returns "
            "Access.MANAGE, Access.VIEW or False (say who may see tasks' keys and "
            "errors and cancel them). To serve it to anyone who can reach it, on a "
            "private port say, pass insecure=True"
        )
    if auth is not None and not callable(auth):
        raise DashboardAuthError(
            f"auth must be a callable taking the request, not {type(auth).__name__}"
        )
    return DashboardApp(docket, auth, title)


class DashboardApp:
    """The mounted dashboard (made by ``dashboard()``)."""

    def __init__(self, docket: Docket | None, auth: Auth | None, title: str) -> None:
        self._docket = docket
        self._auth = auth
        self._title = title

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response = await self._respond(request)
        await response(scope, receive, send)

    async def _respond(self, request: Request) -> Response:
        try:
            access = await self._verdict(request)
        except HTTPException as refused:
            return Response(
                refused.detail, refused.status_code, headers=dict(refused.headers or {})
            )
        if access is None:
            return _plain(403, "You are not allowed to see this dashboard")
        base = request.scope.get("root_path", "")
        path = request.url.path
        below = path[len(base) :] if path.startswith(base) else path
        token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
        form: dict[str, str] = {}
        if request.method == "POST":
            refusal = _cross_site(request)
            if refusal is not None:
                return _plain(403, refusal)
            body = await request.body()
            if len(body) > _LONGEST_FORM:
                return _plain(413, "That form is too large for the dashboard")
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            sent = form.pop(CSRF_FIELD, "")
            cookie = request.cookies.get(CSRF_COOKIE, "")
            if not cookie or not hmac.compare_digest(sent.encode(), cookie.encode()):
                return _plain(
                    403,
                    "The form's security token did not match (an old page, or a request "
                    "from another site): reload the page and try again",
                )
        docket = self._docket if self._docket is not None else get_docket(request)
        board = Dashboard(docket, Links(base or "/"), title=self._title)
        answer = await board.handle(
            DashboardRequest(
                request.method,
                below,
                dict(request.query_params),
                form,
                access,
                fragment=request.headers.get(FRAGMENT_HEADER) == "1",
            ),
            csrf_input=f'<input type="hidden" name="{CSRF_FIELD}" value="{escape(token)}">',
        )
        response = _response(answer)
        if CSRF_COOKIE not in request.cookies:
            response.set_cookie(
                CSRF_COOKIE,
                token,
                path=base or "/",
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return response

    async def _verdict(self, request: Request) -> Access | None:
        if self._auth is None:
            return Access.MANAGE
        verdict = self._auth(request)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if verdict is True:
            return Access.MANAGE
        if verdict is False or verdict is None:
            return None
        try:
            return Access(verdict)
        except ValueError:
            raise TypeError(
                f"The dashboard's auth returned {verdict!r}; return Access.MANAGE, "
                "Access.VIEW, True or False"
            ) from None


def _cross_site(request: Request) -> str | None:
    """Why a POST is refused as coming from another site, or None. Browsers send
    ``Origin`` with every POST; a request without one is left to the token check."""
    origin = request.headers.get("origin")
    if origin is None:
        return None
    if origin == "null" or urlsplit(origin).netloc != request.headers.get("host", ""):
        return f"A form sent from {origin} is not accepted here"
    return None


def _response(answer: DashboardResponse) -> Response:
    headers = {**_SECURITY_HEADERS, **answer.headers}
    if answer.content_type.startswith("text/html"):
        headers.setdefault("cache-control", "no-store")
    return Response(answer.body, answer.status, headers=headers, media_type=answer.content_type)


def _plain(status: int, message: str) -> Response:
    return Response(message, status, headers=_SECURITY_HEADERS, media_type="text/plain")


async def _lifespan(receive: Any, send: Any) -> None:
    # Served on its own (not mounted), the app has nothing to start or stop.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return

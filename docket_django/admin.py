"""docket's dashboard as a page of the Django admin, for staff with the
``docket_django.view_dashboard`` permission: overview, queued, scheduled and running
lists, task pages, failures, dead letters and strikes for each docket alias. Acting
(cancel, retry, requeue, purge, strike) needs ``docket_django.manage_docket``; the
admin's own CSRF protection covers every action."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, cast

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from docket_dashboard import (
    FRAGMENT_HEADER,
    Access,
    Dashboard,
    DashboardRequest,
    DashboardResponse,
    Links,
)

from .conf import aliases
from .models import Dashboard as DashboardModel
from .portal import get_portal

MANAGE = "docket_django.manage_docket"
VIEW = "docket_django.view_dashboard"
# The page waits this long for Redis before it says Redis did not answer.
_TIMEOUT = 10

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[DashboardModel]
else:  # generic only in the stubs
    _ModelAdmin = admin.ModelAdmin


class _AdminUser(Protocol):
    is_active: bool
    is_staff: bool

    def has_perm(self, perm: str, obj: Any = None) -> bool: ...


def _user(request: HttpRequest) -> _AdminUser:
    # The admin needs these of every user model it serves (Django's docs for custom
    # user models; AnonymousUser has them too), but the stubs type request.user as
    # AbstractBaseUser, which has neither.
    return cast(_AdminUser, request.user)


@admin.register(DashboardModel)
class DashboardAdmin(_ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        user = _user(request)
        return bool(user.is_active and user.is_staff and user.has_perm(VIEW))

    def get_urls(self) -> list[Any]:
        wrap = self.admin_site.admin_view
        info = self.opts.app_label, self.opts.model_name
        return [
            path("", wrap(self.dashboard_view), name=f"{info[0]}_{info[1]}_changelist"),
            path("<path:subpath>", wrap(self.dashboard_view), name=f"{info[0]}_{info[1]}_page"),
        ]

    def _alias(self, request: HttpRequest) -> str:
        alias = request.GET.get("docket") or request.POST.get("docket") or "default"
        if alias not in aliases():
            raise PermissionDenied(f"Unknown docket {alias!r}")
        return alias

    def dashboard_view(self, request: HttpRequest, subpath: str = "") -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        alias = self._alias(request)
        access = Access.MANAGE if _user(request).has_perm(MANAGE) else Access.VIEW
        base = reverse("admin:docket_django_dashboard_changelist")
        keep = {"docket": alias} if alias != "default" else {}
        form = {k: str(v) for k, v in request.POST.items() if k != "csrfmiddlewaretoken"}
        dashboard_request = DashboardRequest(
            request.method or "GET",
            subpath,
            {k: str(v) for k, v in request.GET.items() if k != "docket"},
            form,
            access,
            fragment=request.headers.get(FRAGMENT_HEADER) == "1",
        )
        csrf_input = format_html(
            '<input type="hidden" name="csrfmiddlewaretoken" value="{}">', get_token(request)
        )

        async def go() -> DashboardResponse:
            docket = await get_portal().docket(alias)
            board = Dashboard(docket, Links(base, keep), title="Docket")
            return await board.handle(dashboard_request, csrf_input=csrf_input, standalone=False)

        try:
            answer = get_portal().run(go(), timeout=_TIMEOUT)
        except Exception as exc:  # Redis down: say so on the page, do not 500
            return self._page(request, alias, "", f"{type(exc).__name__}: {exc}", base)
        whole = answer.status != 200 or dashboard_request.fragment
        if whole or not answer.content_type.startswith("text/html"):
            response = HttpResponse(answer.body, status=answer.status)
            response["Content-Type"] = answer.content_type
            for name, value in answer.headers.items():
                response[name] = value
            return response
        return self._page(request, alias, answer.body.decode(), None, base)

    def _page(
        self, request: HttpRequest, alias: str, body: str, error: str | None, base: str
    ) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": "Task dashboard",
            "opts": self.opts,
            "aliases": aliases(),
            "alias": alias,
            "body": mark_safe(body),  # rendered by the dashboard's autoescaping templates
            "error": error,
            "static_base": base.rstrip("/") + "/static/",
        }
        return TemplateResponse(request, "docket_django/dashboard.html", context)

"""A staff-only dashboard under the admin: queued, scheduled and running tasks (with
progress), workers and strikes for each docket alias. Cancelling a task and striking
or restoring a task need the ``docket_django.manage_docket`` permission."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, cast

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from .conf import aliases
from .management.commands.docket import snapshot_dict
from .models import Dashboard
from .portal import get_portal

MANAGE = "docket_django.manage_docket"

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[Dashboard]
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


def _snapshot(alias: str) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        docket = await get_portal().docket(alias)
        snapshot = await docket.snapshot()
        return snapshot_dict(snapshot, list(docket.strike_list.conditions))

    return get_portal().run(go(), timeout=10)


@admin.register(Dashboard)
class DashboardAdmin(_ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        user = _user(request)
        return bool(
            user.is_active and user.is_staff and user.has_perm("docket_django.view_dashboard")
        )

    def get_urls(self) -> list[Any]:
        wrap = self.admin_site.admin_view
        info = self.opts.app_label, self.opts.model_name
        return [
            path("", wrap(self.dashboard_view), name=f"{info[0]}_{info[1]}_changelist"),
            path("action/", wrap(self.action_view), name=f"{info[0]}_{info[1]}_action"),
        ]

    def _alias(self, request: HttpRequest) -> str:
        alias = request.GET.get("docket") or request.POST.get("docket") or "default"
        if alias not in aliases():
            raise PermissionDenied(f"Unknown docket {alias!r}")
        return alias

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        alias = self._alias(request)
        error = None
        try:
            data = _snapshot(alias)
        except Exception as exc:  # Redis down: show it, do not 500
            data, error = None, f"{type(exc).__name__}: {exc}"
        context = {
            **self.admin_site.each_context(request),
            "title": "Docket",
            "opts": self.opts,
            "aliases": aliases(),
            "alias": alias,
            "data": data,
            "error": error,
            "can_manage": _user(request).has_perm(MANAGE),
        }
        return TemplateResponse(request, "docket_django/dashboard.html", context)

    def action_view(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            raise PermissionDenied
        if not (self.has_view_permission(request) and _user(request).has_perm(MANAGE)):
            raise PermissionDenied
        alias = self._alias(request)
        action = request.POST.get("action")
        key = request.POST.get("key", "")
        task = request.POST.get("task", "")

        async def go() -> None:
            docket = await get_portal().docket(alias)
            if action == "cancel" and key:
                await docket.cancel(key)
            elif action == "strike" and task:
                await docket.strike(task)
            elif action == "restore" and task:
                await docket.restore(task)
            else:
                raise ValueError(f"bad action {action!r}")

        try:
            get_portal().run(go(), timeout=10)
        except ValueError as error:
            messages.error(request, str(error))
        else:
            messages.success(request, f"{action}: {key or task}")
        url = reverse("admin:docket_django_dashboard_changelist") + f"?docket={alias}"
        return HttpResponseRedirect(url)

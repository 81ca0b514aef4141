"""``health``: a JSON view for probes (200 healthy, 503 not)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from .health import report


def health(request: HttpRequest) -> JsonResponse:
    """Redis reachable and at least one fresh worker heartbeat on every docket (or on
    ``?docket=alias``). ``?workers=0`` checks Redis only (a readiness probe for web pods)."""
    selected = request.GET.getlist("docket") or None
    require_workers = request.GET.get("workers", "1") not in ("0", "false", "no")
    body = report(selected, require_workers=require_workers)
    return JsonResponse(body, status=200 if body["healthy"] else 503)

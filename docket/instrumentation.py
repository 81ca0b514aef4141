"""OpenTelemetry hooks: spans that follow a task from its producer to its run.

Without an SDK configured these are OpenTelemetry's no-op objects, so they cost little.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context

tracer = trace.get_tracer("docket")


def capture_trace_context() -> str:
    """The caller's trace context, serialized to travel with the task."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return json.dumps(carrier, separators=(",", ":")) if carrier else ""


def parse_trace_context(raw: str | bytes | None) -> dict[str, str]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def links_for(carrier: Mapping[str, str]) -> list[trace.Link]:
    if not carrier:
        return []
    context: Context = propagate.extract(dict(carrier))
    span_context = trace.get_current_span(context).get_span_context()
    if not span_context.is_valid:
        return []
    return [trace.Link(span_context)]

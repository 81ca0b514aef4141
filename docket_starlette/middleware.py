"""``RequestContextMiddleware``: request id and W3C trace context, for tasks too."""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry import baggage, context, propagate, trace
from opentelemetry.trace import SpanKind
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._context import (
    VALID_REQUEST_ID,
    current_request_id,
    new_request_id,
    set_current_connection,
)
from ._run import BAGGAGE_KEY

_tracer = trace.get_tracer("docket_starlette")


class RequestContextMiddleware:
    """A pure-ASGI middleware (no ``BaseHTTPMiddleware``, so context variables it sets
    reach the endpoint and anything it starts).

    For each HTTP request it:

    - takes the request id from ``header`` (when it looks like an id) or makes one, puts
      it in ``current_request_id`` and echoes it on the response;
    - makes the request's W3C trace context (``traceparent``/``tracestate``) current,
      inside a server span when no other instrumentation already started one, and puts
      the request id in W3C baggage; docket stamps both on every task enqueued during
      the request, so the worker's span is linked to the request's and the request id
      reaches every task (and the snapshot of ``@docket_starlette.task`` tasks);
    - remembers the request as the one enqueued tasks are captured from.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        header: str = "x-request-id",
        generate: Callable[[], str] = new_request_id,
        echo: bool = True,
    ) -> None:
        self.app = app
        self.header = header.lower()
        self.header_bytes = self.header.encode("latin-1")
        self.generate = generate
        self.echo = echo

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        incoming = connection.headers.get(self.header)
        request_id = incoming if incoming and VALID_REQUEST_ID.match(incoming) else self.generate()

        carrier = {
            k: v for k, v in connection.headers.items() if k in ("traceparent", "tracestate")
        }
        active = trace.get_current_span().get_span_context().is_valid
        # Another instrumentation's server span wins over the raw headers.
        parent = propagate.extract(carrier) if carrier and not active else context.get_current()
        ctx = baggage.set_baggage(BAGGAGE_KEY, request_id, context=parent)
        token = context.attach(ctx)
        id_token = current_request_id.set(request_id)
        set_current_connection(connection)

        async def send_with_id(message: Message) -> None:
            if self.echo and message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == self.header_bytes for name, _ in headers):
                    headers.append((self.header_bytes, request_id.encode("latin-1")))
                    message = {**message, "headers": headers}
            await send(message)

        try:
            if active:
                await self.app(scope, receive, send_with_id)
            else:
                with _tracer.start_as_current_span(
                    f"{scope.get('method', 'HTTP')} {scope.get('path', '')}",
                    kind=SpanKind.SERVER,
                    attributes={"http.request_id": request_id},
                ):
                    await self.app(scope, receive, send_with_id)
        finally:
            current_request_id.reset(id_token)
            context.detach(token)

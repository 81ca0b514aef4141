"""Serving docket's OpenTelemetry metrics as Prometheus text (``--metrics-port``).

Needs the ``metrics`` extra (``pip install 'pydocket[metrics]'``: the OpenTelemetry SDK
and ``prometheus-client``). ``serve_metrics(port)`` reads the metrics through an
in-memory SDK reader on each scrape and renders them in the Prometheus text format:
counters as ``<name>_total``, histograms in seconds as ``<name>_seconds_bucket/_sum/
_count``, label names with dots turned to underscores (``docket_name``).

A process may have only one global MeterProvider. When none is set, ``serve_metrics``
installs one with its reader. An application that sets up its own provider adds
``metrics_reader()`` to it, and ``serve_metrics`` serves what that reader sees::

    provider = MeterProvider(metric_readers=[metrics_reader(), my_otlp_reader])
    metrics.set_meter_provider(provider)
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from opentelemetry import metrics

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData

logger = logging.getLogger("docket.metrics")

INSTALL_HINT = "pip install 'pydocket[metrics]'"


class MetricsUnavailable(ImportError, RuntimeError):
    """The metrics endpoint cannot be served (the extra is missing, or the process's
    MeterProvider was set up without docket's reader). An ImportError, as the released
    docket raised for the missing extra."""


def _require_extra() -> None:
    try:
        import opentelemetry.sdk.metrics  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as error:
        raise MetricsUnavailable(
            f"Serving metrics (--metrics-port) needs the 'metrics' extra, which is not "
            f"installed ({error}). Install with: pip install pydocket[metrics] "
            f"(in zsh: {INSTALL_HINT})"
        ) from error


_reader_lock = threading.Lock()
_reader: InMemoryMetricReader | None = None
_installed = False


def metrics_reader() -> InMemoryMetricReader:
    """The reader ``serve_metrics`` renders, to add to a MeterProvider of your own."""
    global _reader
    _require_extra()
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    with _reader_lock:
        if _reader is None:
            # Cumulative temporality for every instrument (the reader's default), which
            # is what Prometheus expects.
            _reader = InMemoryMetricReader()
        return _reader


def _collecting_reader() -> InMemoryMetricReader:
    """The reader to serve: the one an application registered, or one installed with a
    MeterProvider of docket's own when the process has none yet."""
    global _installed
    from opentelemetry.sdk.metrics import MeterProvider

    with _reader_lock:
        taken = _reader is not None
    reader = metrics_reader()
    if taken or _installed:
        return reader
    current = metrics.get_meter_provider()
    if isinstance(current, MeterProvider):
        raise MetricsUnavailable(
            "This process already has an OpenTelemetry MeterProvider, set up without "
            "docket's reader; to serve --metrics-port, create it with "
            "MeterProvider(metric_readers=[docket.metrics_server.metrics_reader(), ...])"
        )
    provider = MeterProvider(metric_readers=[reader])
    metrics.set_meter_provider(provider)
    if metrics.get_meter_provider() is not provider:
        raise MetricsUnavailable(
            "Could not install a MeterProvider for --metrics-port: this process already "
            "set another one"
        )
    _installed = True
    return reader


# -- rendering ---------------------------------------------------------------------------

_NAME_INVALID = re.compile(r"[^a-zA-Z0-9_:]")
_LABEL_INVALID = re.compile(r"[^a-zA-Z0-9_]")
_UNITS = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": ""}


def _metric_name(name: str, unit: str) -> str:
    name = _NAME_INVALID.sub("_", name)
    if name[:1].isdigit():
        name = "_" + name
    suffix = _UNITS.get(unit, _LABEL_INVALID.sub("_", unit).strip("_"))
    if suffix and not name.endswith("_" + suffix):
        name = f"{name}_{suffix}"
    return name


def _labels(attributes: Any) -> dict[str, str]:
    labels: dict[str, str] = {}
    for key, value in sorted((attributes or {}).items()):
        label = _LABEL_INVALID.sub("_", str(key))
        if label[:1].isdigit():
            label = "_" + label
        labels[label] = value if isinstance(value, str) else json.dumps(value, default=str)
    return labels


def _format_bound(bound: float) -> str:
    return repr(float(bound))


def prometheus_families(data: MetricsData | None) -> Iterator[Any]:
    """OpenTelemetry metrics data as prometheus-client metric families (cumulative data
    only: counters, up-down counters, gauges and explicit-bucket histograms)."""
    from opentelemetry.sdk.metrics.export import (
        Gauge,
        Histogram,
        HistogramDataPoint,
        NumberDataPoint,
        Sum,
    )
    from prometheus_client.metrics_core import Metric

    if data is None:
        return
    families: dict[str, Any] = {}
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                name = _metric_name(metric.name, metric.unit or "")
                points = metric.data
                if isinstance(points, Sum):
                    kind = "counter" if points.is_monotonic else "gauge"
                elif isinstance(points, Gauge):
                    kind = "gauge"
                elif isinstance(points, Histogram):
                    kind = "histogram"
                else:
                    logger.debug("Not rendering %s (%s)", metric.name, type(points).__name__)
                    continue
                family = families.get(name)
                if family is None:
                    family = families[name] = Metric(name, metric.description or "", kind)
                for point in points.data_points:
                    labels = _labels(point.attributes)
                    if isinstance(point, HistogramDataPoint):
                        cumulative = 0
                        bounds = [*map(_format_bound, point.explicit_bounds), "+Inf"]
                        for bound, count in zip(bounds, point.bucket_counts, strict=True):
                            cumulative += count
                            family.add_sample(f"{name}_bucket", {**labels, "le": bound}, cumulative)
                        family.add_sample(f"{name}_count", labels, point.count)
                        family.add_sample(f"{name}_sum", labels, point.sum)
                    elif isinstance(point, NumberDataPoint):
                        sample = f"{name}_total" if kind == "counter" else name
                        family.add_sample(sample, labels, point.value)
    yield from families.values()


class _Collector:
    """A prometheus-client collector that collects the OpenTelemetry reader on demand."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self.reader = reader

    def collect(self) -> Iterator[Any]:
        yield from prometheus_families(self.reader.get_metrics_data())


def render(reader: InMemoryMetricReader | None = None) -> bytes:
    """One scrape's worth of Prometheus text."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(reader or metrics_reader()))
    return generate_latest(registry)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class MetricsServer:
    """A running ``/metrics`` endpoint, served from threads of its own so a busy event
    loop does not stall scrapes; ``close()`` stops it."""

    def __init__(self, server: Any, thread: threading.Thread, port: int) -> None:
        self._server = server
        self._thread = thread
        self.port = port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(port: int, host: str = "0.0.0.0") -> MetricsServer:
    """Serve docket's metrics as Prometheus text on http://host:port/metrics.

    Raises ``MetricsUnavailable`` (with the install command) when the ``metrics`` extra
    is missing, and ``OSError`` when the port cannot be bound.
    """
    _require_extra()
    from prometheus_client import CollectorRegistry, make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer

    reader = _collecting_reader()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(reader))
    try:
        server = make_server(
            host, port, make_wsgi_app(registry), ThreadingWSGIServer, handler_class=_QuietHandler
        )
    except OSError as error:
        raise OSError(
            f"Cannot serve metrics on {host}:{port}: {error.strerror or error}"
        ) from error
    # A short poll so close() returns at once.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="metrics"
    )
    thread.start()
    bound = int(server.server_address[1])
    logger.info("Serving Prometheus metrics on http://%s:%d/metrics", host, bound)
    return MetricsServer(server, thread, bound)

"""The overview's queue-depth chart: the samples as SVG polylines, drawn by the server
(no chart library, and nothing inline for a strict Content-Security-Policy to refuse)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .data import CHART_WINDOW, DepthSample

WIDTH, HEIGHT = 600, 140
SERIES = ("queued", "scheduled", "running")


@dataclass(frozen=True)
class Chart:
    lines: dict[str, str]
    """Each series' polyline points."""
    peak: int
    """The value the chart's top stands for."""
    samples: int
    window: timedelta


SHORTEST_WINDOW = timedelta(minutes=1)


def chart(samples: list[DepthSample], now: datetime, longest: timedelta = CHART_WINDOW) -> Chart:
    """The samples over the time they cover: from the oldest (at most ``longest`` ago,
    at least a minute) to now, so a chart of a few minutes' samples fills its width."""
    oldest = min((sample.at for sample in samples), default=now)
    window = min(max(now - oldest, SHORTEST_WINDOW), longest)
    peak = max((max(s.queued, s.scheduled, s.running) for s in samples), default=0)
    top = max(peak, 1)
    start = now - window
    lines: dict[str, str] = {}
    for name in SERIES:
        points = []
        for sample in samples:
            x = (sample.at - start) / window * WIDTH
            y = HEIGHT - getattr(sample, name) / top * (HEIGHT - 4) - 2
            points.append(f"{max(0.0, min(float(WIDTH), x)):.1f},{y:.1f}")
        lines[name] = " ".join(points)
    return Chart(lines, peak, len(samples), window)

"""Fixtures for the chaos scenarios: worker clusters that never outlive their test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from chaos_harness import Cluster


@pytest.fixture
def make_cluster(tmp_path: Path, docket_name: str) -> Iterator[Callable[..., Cluster]]:
    """``make_cluster(url, concurrency=..., redelivery_timeout=...)``: a ``Cluster`` of
    docket worker processes on this test's docket; every process it started is killed
    after the test, passed or failed."""
    clusters: list[Cluster] = []

    def make(url: str, **options: Any) -> Cluster:
        cluster = Cluster(tmp_path, url, docket_name, **options)
        clusters.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.close()

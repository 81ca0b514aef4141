"""The topology workloads: ours (and the released pydocket, where it applies) on a Sentinel
set and on a 3-shard Redis Cluster, beside a plain single server, in the same run.

- ``sentinel_enqueue_drain`` / ``sentinel_bulk_drain``: the ``enqueue_drain`` and
  ``bulk_drain`` workloads through ``redis+sentinel://`` (a primary, a replica and three
  sentinels) and on the plain server.
- ``cluster_drain``: N no-ops enqueued with ``add_many``, drained by 3 worker processes,
  on a 3-primary Cluster with 1 and with 3 partitions, and on the plain server.

The servers are the test suite's own helpers (``tests/_redis_topologies.py``: private
``redis-server`` processes on free loopback ports, never a shared server). Each run also
reads every data node's main-thread CPU time and command statistics before and after, so
the table says what a task costs the busiest Redis core, and so how many tasks per second
one such core could carry at most (its ceiling).
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
OURS = "ours"
RELEASED = "pydocket"


@dataclass(frozen=True)
class Variant:
    """One row: where the workload runs (``plain``, ``sentinel`` or ``cluster``), with how
    many partitions, for which systems."""

    label: str
    topology: str
    partitions: int = 1
    systems: tuple[str, ...] = (OURS,)


@dataclass(frozen=True)
class TopologyWorkload:
    name: str
    base: str  # the adapter's workload: enqueue_drain or bulk_drain
    n: int
    concurrency: int
    workers: int
    variants: tuple[Variant, ...]
    capped_n: dict[str, int] = field(default_factory=dict)


PLAIN = Variant("one server", "plain")
SENTINEL = Variant("sentinel", "sentinel", systems=(OURS, RELEASED))
CLUSTER_1P = Variant("cluster, 1 partition", "cluster", 1, (OURS, RELEASED))
CLUSTER_3P = Variant("cluster, 3 partitions", "cluster", 3)


def set_partitions(partitions: int) -> None:
    """Run the cluster drain's partitioned row with ``partitions`` instead of 3 (bench.py
    --partitions: the cost of more partitions than primaries)."""
    global CLUSTER_3P
    CLUSTER_3P = Variant(f"cluster, {partitions} partitions", "cluster", partitions)


NAMES = ("sentinel_enqueue_drain", "sentinel_bulk_drain", "cluster_drain")
GROUP = "topologies"  # --workloads topologies: all three


def workloads(mode: str) -> list[TopologyWorkload]:
    # Quick: each workload (all its rows, the topology's start included) well under a
    # minute on 2 cores, at an N where the worker's start-up (about a second) no longer
    # dominates ours. The released pydocket is slower, so it gets a smaller N (its rate
    # is the same either way; at c10 it drains about 90/s, see bench.py).
    big = mode == "full"
    n = 40_000 if big else 20_000
    return [
        TopologyWorkload(
            "sentinel_enqueue_drain",
            "enqueue_drain",
            n,
            100,
            1,
            (PLAIN, SENTINEL),
            {RELEASED: 20_000 if big else 5_000},
        ),
        TopologyWorkload(
            "sentinel_bulk_drain",
            "bulk_drain",
            n,
            10,
            1,
            (PLAIN, SENTINEL),
            {RELEASED: 4_000 if big else 1_000},
        ),
        TopologyWorkload(
            "cluster_drain",
            "bulk_drain",
            n,
            100,
            3,
            (PLAIN, CLUSTER_1P, CLUSTER_3P),
            {RELEASED: 10_000 if big else 5_000},
        ),
    ]


# -- the servers ------------------------------------------------------------------------


def _topology_helpers() -> Any:
    """tests/_redis_topologies.py (standard library only), imported on first use."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import _redis_topologies

    return _redis_topologies


def _info(host: str, port: int, section: str) -> dict[str, Any]:
    import redis

    client = redis.Redis(host=host, port=port, socket_timeout=10)
    try:
        info: dict[str, Any] = client.info(section)
    finally:
        client.close()
    return info


def _command(host: str, port: int, *args: Any) -> Any:
    import redis

    client = redis.Redis(host=host, port=port, socket_timeout=30)
    try:
        return client.execute_command(*args)
    finally:
        client.close()


class Topology:
    """One running topology: the URL each system is given, and its data nodes."""

    def __init__(
        self,
        kind: str,
        urls: dict[str, str],
        nodes: Callable[[], list[tuple[str, int, str]]],
        close: Callable[[], None],
    ) -> None:
        self.kind = kind
        self.urls = urls
        self._nodes = nodes
        self._close = close

    def url_for(self, system: str) -> str:
        return self.urls.get(system, self.urls[OURS])

    def nodes(self) -> list[tuple[str, int, str]]:
        """``(host, port, role)`` of every data node (no sentinels)."""
        return self._nodes()

    def writable(self) -> list[tuple[str, int, str]]:
        return [node for node in self.nodes() if node[2] == "primary"]

    def flush(self) -> None:
        for host, port, _ in self.writable():
            _command(host, port, "FLUSHALL")
        for host, port, _ in self.nodes():
            _command(host, port, "CONFIG", "RESETSTAT")

    def cpu(self) -> dict[tuple[str, int], float]:
        """Each data node's main-thread CPU seconds so far (the thread that runs
        commands and scripts: what one Redis core can give)."""
        found = {}
        for host, port, _ in self.nodes():
            info = _info(host, port, "cpu")
            found[(host, port)] = float(info["used_cpu_user_main_thread"]) + float(
                info["used_cpu_sys_main_thread"]
            )
        return found

    def server_figures(self, before: dict[tuple[str, int], float], n: int) -> dict[str, Any]:
        """What the run cost each data node: CPU seconds and the commands that took it."""
        after = self.cpu()
        nodes = []
        for host, port, role in self.nodes():
            spent = after.get((host, port), 0.0) - before.get((host, port), 0.0)
            stats = _info(host, port, "commandstats")
            commands = []
            for name, value in stats.items():
                commands.append(
                    {
                        "command": name.removeprefix("cmdstat_"),
                        "calls": int(value["calls"]),
                        "usec": int(value["usec"]),
                    }
                )
            commands.sort(key=lambda c: -c["usec"])
            nodes.append(
                {
                    "node": f"{host}:{port}",
                    "role": role,
                    "cpu_s": round(spent, 4),
                    "us_per_task": round(spent / n * 1e6, 2) if n else None,
                    "top_commands": commands[:6],
                }
            )
        return {"nodes": nodes}

    def close(self) -> None:
        self._close()


def plain(url: str) -> Topology:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", int(parts.port or 6379)
    return Topology("plain", {OURS: url}, lambda: [(host, port, "primary")], lambda: None)


def sentinel() -> Topology:
    helpers = _topology_helpers()
    # Sentinels slow to call a busy primary down: a failover mid-run would measure it.
    topology = helpers.RedisSentinelSet(down_after_ms=5_000)

    def nodes() -> list[tuple[str, int, str]]:
        primary = topology.primary
        return [
            (n.host, n.port, "primary" if n is primary else "replica") for n in topology.data_nodes
        ]

    url = f"{topology.url}/0"
    return Topology("sentinel", {OURS: url, RELEASED: url}, nodes, topology.close)


def cluster() -> Topology:
    helpers = _topology_helpers()
    # Three shards, no replicas: the bench measures the shards, not a failover.
    topology = helpers.RedisClusterSet(3, 0, node_timeout_ms=5_000)

    def nodes() -> list[tuple[str, int, str]]:
        return [(n.host, n.port, "primary") for n in topology.primaries()]

    first = topology.primaries()[0]
    urls = {
        OURS: topology.url,
        # The released docket hands its URL to RedisCluster.from_url, which takes one
        # startup node (and finds the others itself).
        RELEASED: f"redis+cluster://{first.host}:{first.port}",
    }
    return Topology("cluster", urls, nodes, topology.close)


class Topologies:
    """The topologies a run needs, started on first use and closed together."""

    def __init__(self, plain_url: str) -> None:
        self._started: dict[str, Topology] = {"plain": plain(plain_url)}
        self._failed: dict[str, str] = {}

    def get(self, kind: str) -> Topology:
        if kind in self._failed:
            raise RuntimeError(self._failed[kind])
        if kind not in self._started:
            print(f"==> starting a private {kind} topology", flush=True)
            try:
                self._started[kind] = {"sentinel": sentinel, "cluster": cluster}[kind]()
            except Exception as error:
                self._failed[kind] = f"could not start the {kind} topology: {error}"
                raise RuntimeError(self._failed[kind]) from error
        return self._started[kind]

    def close(self) -> None:
        for topology in self._started.values():
            with suppress(Exception):
                topology.close()


# -- the table --------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    title: str
    workload: str
    metric: str
    unit: str


SENTINEL_COLUMNS = [
    Column("enqueue seq /s", "sentinel_enqueue_drain", "enqueue_per_s", "/s"),
    Column("drain c100 /s", "sentinel_enqueue_drain", "drain_per_s", "/s"),
    Column("c100 from 1st /s", "sentinel_enqueue_drain", "drain_from_first_per_s", "/s"),
    Column("enqueue bulk /s", "sentinel_bulk_drain", "enqueue_per_s", "/s"),
    Column("drain c10 /s", "sentinel_bulk_drain", "drain_per_s", "/s"),
    Column("primary µs/task (seq+c100)", "sentinel_enqueue_drain", "redis_us_per_task", "µs"),
    Column("primary µs/task (bulk+c10)", "sentinel_bulk_drain", "redis_us_per_task", "µs"),
    Column("producer µs/task (seq)", "sentinel_enqueue_drain", "enqueue_cpu_us_per_task", "µs"),
    Column("worker µs/task (c100)", "sentinel_enqueue_drain", "worker_cpu_us_per_task", "µs"),
]
CLUSTER_COLUMNS = [
    Column("enqueue bulk /s", "cluster_drain", "enqueue_per_s", "/s"),
    Column("drain 3 workers /s", "cluster_drain", "drain_per_s", "/s"),
    Column("from 1st /s", "cluster_drain", "drain_from_first_per_s", "/s"),
    Column("busiest primary µs/task", "cluster_drain", "redis_us_per_task", "µs"),
    Column("its ceiling /s", "cluster_drain", "redis_ceiling_per_s", "/s"),
    Column("workers µs/task", "cluster_drain", "worker_cpu_us_per_task", "µs"),
]

Key = tuple[str, str, str, str]  # (variant label, system, workload, metric)


def medians(results: list[dict[str, Any]]) -> dict[Key, float]:
    values: dict[Key, list[float]] = {}
    for result in results:
        if "variant" not in result:
            continue
        for metric, value in result.get("metrics", {}).items():
            if isinstance(value, (int, float)):
                key = (result["variant"], result["system"], result["workload"], metric)
                values.setdefault(key, []).append(float(value))
    return {key: statistics.median(vs) for key, vs in values.items()}


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "/s" or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def _table(
    title: str,
    note: str,
    columns: list[Column],
    rows: list[tuple[str, str]],
    ratios: list[tuple[str, tuple[str, str], tuple[str, str], bool]],
    table: dict[Key, float],
    skipped: dict[tuple[str, str, str], str],
) -> list[str]:
    """``rows``: (variant label, system). ``ratios``: (label, row, reference row,
    whether higher is better for rates) — the rate columns only."""
    lines = [f"### {title}", "", note, ""]
    lines.append("| docket | on | " + " | ".join(c.title for c in columns) + " |")
    lines.append("|---" * (len(columns) + 2) + "|")
    for variant, system in rows:
        cells = []
        for column in columns:
            value = table.get((variant, system, column.workload, column.metric))
            reason = skipped.get((variant, system, column.workload))
            cells.append("not available" if value is None and reason else _fmt(value, column.unit))
        lines.append(f"| {system} | {variant} | " + " | ".join(cells) + " |")
    for label, row, reference, _ in ratios:
        cells = []
        for column in columns:
            if column.unit != "/s" or column.metric == "redis_ceiling_per_s":
                cells.append("")
                continue
            mine = table.get((*row, column.workload, column.metric))
            theirs = table.get((*reference, column.workload, column.metric))
            cells.append(f"{mine / theirs:.2f}×" if mine and theirs else "–")
        lines.append(f"| *{label}* | | " + " | ".join(cells) + " |")
    return lines


def render(results: list[dict[str, Any]], systems: list[str]) -> str:
    """The topology tables (empty when no topology workload ran)."""
    if not any("variant" in r for r in results):
        return ""
    table = medians(results)
    skipped = {
        (r["variant"], r["system"], r["workload"]): r["skipped"]
        for r in results
        if "variant" in r and "skipped" in r
    }
    released = RELEASED in systems
    lines: list[str] = []
    if any(r.get("workload", "").startswith("sentinel_") for r in results if "variant" in r):
        rows = [(PLAIN.label, OURS), (SENTINEL.label, OURS)]
        ratios = [("ours: sentinel ÷ one server", rows[1], rows[0], True)]
        if released:
            rows.append((SENTINEL.label, RELEASED))
            ratios.append(("on sentinel: ours ÷ pydocket", rows[1], rows[2], True))
        lines += _table(
            "Sentinel vs one server",
            "A primary, one replica and three sentinels, through `redis+sentinel://`. Primary "
            "µs/task: its main-thread CPU over the whole run (enqueue and drain) per task; "
            "producer and worker µs/task: the client processes' CPU per task (the worker's "
            "from its first task to its last).",
            SENTINEL_COLUMNS,
            rows,
            ratios,
            table,
            skipped,
        )
        lines.append("")
    if any(r.get("workload") == "cluster_drain" for r in results):
        rows = [(PLAIN.label, OURS), (CLUSTER_1P.label, OURS), (CLUSTER_3P.label, OURS)]
        ratios = [
            ("ours: cluster 1 partition ÷ one server", rows[1], rows[0], True),
            (f"ours: {CLUSTER_3P.label} ÷ one server", rows[2], rows[0], True),
            (f"ours: {CLUSTER_3P.partitions} partitions ÷ 1 partition", rows[2], rows[1], True),
        ]
        if released:
            rows.append((CLUSTER_1P.label, RELEASED))
            ratios.append(("cluster 1 partition: ours ÷ pydocket", rows[1], rows[3], True))
        lines += _table(
            "Cluster drain, 3 worker processes",
            "3 primaries (no replicas); N no-ops enqueued with `add_many`, then drained by 3 "
            "`docket worker` processes at concurrency 100 each (timed from the first spawn, "
            "and from the first task). "
            "µs/task is the busiest primary's main-thread CPU per task over the run; its "
            "ceiling is 1 s over that: what that one core could carry at most. Workers "
            "µs/task: the 3 worker processes' CPU per task, together.",
            CLUSTER_COLUMNS,
            rows,
            ratios,
            table,
            skipped,
        )
        lines.append("")
    for (variant, system, workload), reason in sorted(skipped.items()):
        lines.append(f"- {system} {workload} on {variant}: {reason}")
    return "\n".join(lines).rstrip() + "\n"

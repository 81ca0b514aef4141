"""Side-by-side benchmark: ours, the released pydocket and the Redis task-queue peers.

Each system runs in its own virtualenv (``benchmarks/.venvs/<system>``, built from
``systems/requirements/<system>.txt``; ours runs in the project's ``.venv``) against one
private ``redis-server`` on a free port, flushed before every workload. Rounds are
interleaved: every round runs every workload for every system, the system order rotated
per round; the table shows medians. See ``docs/performance.md``.

    python benchmarks/bench.py --mode quick      # about 8 minutes, one round
    python benchmarks/bench.py --mode full       # the published table: 3 rounds, full N
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import topologies

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SYSTEMS_DIR = HERE / "systems"
VENVS = HERE / ".venvs"

OURS = "ours"
RELEASED = "pydocket"
# Ours at another commit (``--baseline REV``): the A/B a hot-path change is judged by,
# measured in the same run, against the same redis-server, as the working tree.
BASELINE = "baseline"
PEERS = ("taskiq", "saq", "arq", "dramatiq", "huey", "celery")
ALL_SYSTEMS = (OURS, RELEASED, *PEERS)


@dataclass(frozen=True)
class Workload:
    name: str
    n: int
    concurrency: int
    # Systems whose drain is capped by a fixed poll or sleep, not by N, get a smaller N so
    # a round stays minutes long; their rate is the same either way.
    capped_n: dict[str, int] | None = None


def workloads(mode: str) -> list[Workload]:
    if mode == "full":
        return [
            Workload("enqueue_drain", 20_000, 100),
            Workload("bulk_drain", 20_000, 10, {RELEASED: 4_000, "arq": 10_000}),
            Workload("latency", 1_000, 10),
            Workload("scheduled", 1_000, 100),
            Workload("sleep", 1_000, 100),
        ]
    # Quick mode keeps the drains and the sleep workload at the full run's size, so the
    # target checklist it prints means what the full run's does (at a small N start-up
    # would dominate the drain rates); the latency samples are fewer, and one round.
    return [
        Workload("enqueue_drain", 20_000, 100),
        Workload("bulk_drain", 20_000, 10, {RELEASED: 1_000, "arq": 2_000}),
        Workload("latency", 200, 10),
        Workload("scheduled", 300, 100),
        Workload("sleep", 1_000, 100),
    ]


def scaled[W: (Workload, topologies.TopologyWorkload)](workload: W, factor: float) -> W:
    """``workload`` with every N multiplied by ``factor`` (at least 10)."""

    def size(n: int) -> int:
        return max(10, round(n * factor))

    capped = {system: size(n) for system, n in (workload.capped_n or {}).items()}
    return dataclasses.replace(workload, n=size(workload.n), capped_n=capped)


# -- environments -----------------------------------------------------------------------


def base_python() -> str:
    """The interpreter the project's venv was made from, so every system runs on it."""
    return getattr(sys, "_base_executable", sys.executable)


# With --baseline, ours runs from a plain install of HEAD too (``ours-installed``): an
# editable install measured a few percent slower than a plain one of the same commit
# (an A/A run), which would otherwise read as a regression.
INSTALLED_OURS = "ours-installed"
_installed_ours = False


def python_for(system: str) -> Path:
    if system == OURS and _installed_ours:
        system = INSTALLED_OURS
    return VENVS / system / "bin" / "python"


def ensure_baseline(revision: str, system: str = BASELINE) -> str:
    """Build ``benchmarks/.venvs/<system>`` from the project at ``revision`` (a plain
    install of ``git archive``'s tree, so it never follows the working tree); returns the
    commit it resolved to."""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{revision}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if commit.returncode != 0:
        raise SystemExit(f"error: --baseline {revision!r} is not a commit of this repository")
    sha = commit.stdout.strip()
    venv = VENVS / system
    stamp = venv / ".installed"
    if stamp.exists() and stamp.read_text() == sha:
        return sha
    print(f"==> building {venv.relative_to(ROOT)} from commit {sha[:12]}", flush=True)
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([base_python(), "-m", "venv", str(venv)], check=True)
    source = venv / "src"
    source.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", sha], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(source)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"error: installing commit {sha[:12]} failed:\n{done.stderr[-3000:]}")
    stamp.write_text(sha)
    return sha


def ensure_venv(system: str) -> None:
    """Ours is installed the way a user installs it, with no extras (editable, so the
    venv follows the working tree); the others from their pinned requirements."""
    if system == BASELINE:
        return  # built by ensure_baseline
    if system == OURS:
        source = ROOT / "pyproject.toml"
        install = ["-e", str(ROOT)]
    else:
        source = SYSTEMS_DIR / "requirements" / f"{system}.txt"
        install = ["-r", str(source)]
    venv = VENVS / system
    stamp = venv / ".installed"
    if stamp.exists() and stamp.read_text() == source.read_text():
        return
    print(f"==> building {venv.relative_to(ROOT)} from {source.name}", flush=True)
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([base_python(), "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    done = subprocess.run([*pip, *install], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: installing {system} from {source} failed:\n{done.stderr[-3000:]}")
    stamp.write_text(source.read_text())


def adapter_for(system: str) -> Path:
    if system in (OURS, RELEASED, BASELINE):
        return SYSTEMS_DIR / "docket_bench.py"
    return SYSTEMS_DIR / f"{system}_bench.py"


def versions(system: str) -> str:
    packages = {
        OURS: ["pydocket", "redis", "hiredis"],
        RELEASED: ["pydocket", "redis", "hiredis"],
        BASELINE: ["pydocket", "redis", "hiredis"],
        "taskiq": ["taskiq", "taskiq-redis", "redis"],
        "saq": ["saq", "redis"],
        "arq": ["arq", "redis", "hiredis"],
        "dramatiq": ["dramatiq", "redis"],
        "huey": ["huey", "redis"],
        "celery": ["celery", "kombu", "redis"],
    }[system]
    code = (
        "import importlib.metadata as m\n"
        f"for p in {packages!r}:\n"
        "    try: print(p, m.version(p))\n"
        "    except m.PackageNotFoundError: pass\n"
    )
    done = subprocess.run([python_for(system), "-c", code], capture_output=True, text=True)
    return ", ".join(done.stdout.splitlines())


# -- redis ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def private_redis() -> Iterator[str]:
    if shutil.which("redis-server") is None:
        raise SystemExit("error: redis-server is not on PATH; the benchmark starts its own.")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="docket-bench-redis-")
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("error: the private redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def flush(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushall()
    client.close()


# -- running ----------------------------------------------------------------------------


def run_one(system: str, workload: Workload, url: str, workdir: Path) -> dict[str, Any]:
    n = (workload.capped_n or {}).get(system, workload.n)
    command = [
        str(python_for(system)),
        str(adapter_for(system)),
        workload.name,
        "--url",
        url,
        "--n",
        str(n),
        "--concurrency",
        str(workload.concurrency),
        "--workdir",
        str(workdir),
    ]
    env = dict(os.environ, BENCH_SYSTEM=system, BENCH_URL=url)
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    flush(url)
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=SYSTEMS_DIR)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {
            "system": system,
            "workload": workload.name,
            "n": n,
            "error": f"exit {done.returncode}: {done.stderr.strip()[-1500:]}",
        }
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_topology(
    system: str,
    workload: topologies.TopologyWorkload,
    variant: topologies.Variant,
    started: topologies.Topologies,
    workdir: Path,
) -> dict[str, Any]:
    """One row of a topology workload: the adapter's drain on that topology, with the
    data nodes' CPU read before and after."""
    n = workload.capped_n.get(system, workload.n)
    base = {
        "system": system,
        "workload": workload.name,
        "variant": variant.label,
        "topology": variant.topology,
        "partitions": variant.partitions,
        "n": n,
    }
    try:
        topology = started.get(variant.topology)
        url = topology.url_for(system)
        topology.flush()
        before = topology.cpu()
    except Exception as error:
        return {**base, "error": f"{type(error).__name__}: {error}"}
    command = [
        str(python_for(system)),
        str(adapter_for(system)),
        workload.base,
        "--url",
        url,
        "--n",
        str(n),
        "--concurrency",
        str(workload.concurrency),
        "--workers",
        str(workload.workers),
        "--workdir",
        str(workdir / f"{workload.name}-{variant.topology}-{variant.partitions}p"),
    ]
    env = dict(os.environ, BENCH_SYSTEM=system, BENCH_URL=url)
    env["BENCH_PARTITIONS"] = str(variant.partitions)
    for name in ("PYTHONPATH", "VIRTUAL_ENV", "DOCKET_PARTITIONS"):
        env.pop(name, None)
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=SYSTEMS_DIR)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {**base, "error": f"exit {done.returncode}: {done.stderr.strip()[-1500:]}"}
    result: dict[str, Any] = {**json.loads(lines[-1]), **base}
    if "metrics" in result:
        try:
            server = topology.server_figures(before, n)
        except Exception as error:  # the figures are extra; the run itself counted
            server = {"error": f"{type(error).__name__}: {error}"}
        result["server"] = server
        busiest = max((node["us_per_task"] or 0.0 for node in server.get("nodes", [])), default=0.0)
        if busiest > 0:
            result["metrics"]["redis_us_per_task"] = busiest
            result["metrics"]["redis_ceiling_per_s"] = 1e6 / busiest
    return result


def measure_ceiling(url: str) -> dict[str, float]:
    """Bare redis-py loops on this machine, so absolute numbers can be read against it."""
    flush(url)
    done = subprocess.run(
        [str(python_for(OURS)), str(SYSTEMS_DIR / "ceiling.py"), "--url", url],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return {}
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def describe(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"ERROR {result['error'].splitlines()[-1][:120]}"
    if "skipped" in result:
        return f"skipped: {result['skipped']}"
    metrics = result.get("metrics", {})
    shown = ", ".join(
        f"{k}={v:,.1f}" if isinstance(v, float) else f"{k}={v}"
        for k, v in metrics.items()
        if k
        in (
            "enqueue_per_s",
            "drain_per_s",
            "p50_ms",
            "p99_ms",
            "wall_s",
            "peak_rss_mb",
            "redis_us_per_task",
        )
    )
    check = result.get("check", {})
    verdict = "exactly once" if check.get("ok") else f"CHECK FAILED {check}"
    return f"{shown}  [{verdict}]"


# -- the table --------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    title: str
    workload: str
    metric: str
    higher_is_better: bool
    unit: str


COLUMNS = [
    Column("enqueue seq /s", "enqueue_drain", "enqueue_per_s", True, "/s"),
    Column("enqueue bulk /s", "bulk_drain", "enqueue_per_s", True, "/s"),
    Column("drain c10 /s", "bulk_drain", "drain_per_s", True, "/s"),
    Column("drain c100 /s", "enqueue_drain", "drain_per_s", True, "/s"),
    Column("RSS c10 MB", "bulk_drain", "peak_rss_mb", False, "MB"),
    Column("RSS c100 MB", "enqueue_drain", "peak_rss_mb", False, "MB"),
    Column("latency p50 ms", "latency", "p50_ms", False, "ms"),
    Column("latency p99 ms", "latency", "p99_ms", False, "ms"),
    Column("late p50 ms", "scheduled", "p50_ms", False, "ms"),
    Column("late p99 ms", "scheduled", "p99_ms", False, "ms"),
    Column("late max ms", "scheduled", "max_ms", False, "ms"),
    Column("sleep wall s", "sleep", "wall_s", False, "s"),
    Column("sleep from 1st s", "sleep", "wall_from_first_s", False, "s"),
]


def medians(results: list[dict[str, Any]]) -> dict[tuple[str, str, str], float]:
    values: dict[tuple[str, str, str], list[float]] = {}
    for result in results:
        if "variant" in result:
            continue  # a topology row: topologies.medians
        for metric, value in result.get("metrics", {}).items():
            if isinstance(value, (int, float)):
                key = (result["system"], result["workload"], metric)
                values.setdefault(key, []).append(float(value))
    return {key: statistics.median(vs) for key, vs in values.items()}


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "/s":
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def advantage(ours: float | None, other: float | None, column: Column) -> float | None:
    """How many times better ours is (>1 means ours is better, whatever the unit)."""
    if ours is None or other is None or ours <= 0 or other <= 0:
        return None
    return ours / other if column.higher_is_better else other / ours


def best_peer(
    table: dict[tuple[str, str, str], float], column: Column, systems: list[str]
) -> tuple[str, float] | None:
    candidates = [
        (s, table[(s, column.workload, column.metric)])
        for s in systems
        if s in PEERS
        and (s, column.workload, column.metric) in table
        and table[(s, column.workload, column.metric)] > 0
    ]
    if not candidates:
        return None
    pick = max if column.higher_is_better else min
    return pick(candidates, key=lambda item: item[1])


def render_table(
    table: dict[tuple[str, str, str], float],
    systems: list[str],
    skipped: dict[tuple[str, str], str],
) -> str:
    lines = ["| system | " + " | ".join(c.title for c in COLUMNS) + " |"]
    lines.append("|---" * (len(COLUMNS) + 1) + "|")
    for system in systems:
        cells = []
        for column in COLUMNS:
            value = table.get((system, column.workload, column.metric))
            skipped_here = (system, column.workload) in skipped
            no_bulk = column.metric == "enqueue_per_s" and column.workload == "bulk_drain"
            if value is None and (skipped_here or no_bulk):
                cells.append("n/a")
            else:
                cells.append(fmt(value, column.unit))
        name = f"**{system}**" if system == OURS else system
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if OURS in systems:
        references = [("× vs pydocket", RELEASED), ("× vs best peer", None)]
        if BASELINE in systems:
            references.insert(0, ("× vs baseline", BASELINE))
        for label, reference in references:
            cells = []
            for column in COLUMNS:
                ours = table.get((OURS, column.workload, column.metric))
                if reference is None:
                    best = best_peer(table, column, systems)
                    ratio = advantage(ours, best[1], column) if best else None
                    cells.append(f"{ratio:.1f}× ({best[0]})" if ratio and best else "–")
                else:
                    ratio = advantage(
                        ours, table.get((reference, column.workload, column.metric)), column
                    )
                    cells.append(f"{ratio:.1f}×" if ratio else "–")
            lines.append(f"| *{label}* | " + " | ".join(cells) + " |")
    return "\n".join(lines)


TARGETS = [
    ("enqueue_drain", "enqueue_per_s", ">=", 8_000, "sequential enqueue >= 8,000/s"),
    ("bulk_drain", "enqueue_per_s", ">=", 40_000, "add_many >= 40,000/s"),
    ("bulk_drain", "drain_per_s", ">=", 10_000, "drain c10 >= 10,000/s"),
    ("enqueue_drain", "drain_per_s", ">=", 10_000, "drain c100 >= 10,000/s"),
    ("latency", "p50_ms", "<=", 1.0, "latency p50 <= 1 ms"),
    ("latency", "p99_ms", "<=", 3.0, "latency p99 <= 3 ms"),
    ("scheduled", "p50_ms", "<=", 5.0, "scheduled lateness p50 <= 5 ms"),
    ("scheduled", "p99_ms", "<=", 20.0, "scheduled lateness p99 <= 20 ms"),
    ("scheduled", "early", "<=", 0, "never early"),
    (
        "sleep",
        "wall_from_first_s",
        "<=",
        1.1,
        "1,000 x sleep(0.1) at c100 <= 1.1 s (from 1st task)",
    ),
    ("enqueue_drain", "peak_rss_mb", "<=", 45.0, "peak RSS at c100 <= 45 MB"),
]


def render_targets(table: dict[tuple[str, str, str], float], systems: list[str]) -> str:
    lines = []
    for workload, metric, op, bound, text in TARGETS:
        value = table.get((OURS, workload, metric))
        if value is None:
            lines.append(f"- [ ] {text}: not measured")
            continue
        met = value >= bound if op == ">=" else value <= bound
        lines.append(f"- [{'x' if met else ' '}] {text}: {value:,.2f}")
    for column in COLUMNS[:4]:
        best = best_peer(table, column, systems)
        ours = table.get((OURS, column.workload, column.metric))
        if column.title.startswith("drain") and best and ours:
            ratio = ours / best[1]
            met = ratio >= 2.5
            lines.append(
                f"- [{'x' if met else ' '}] {column.title} >= 2.5x best peer: "
                f"{ratio:.1f}x ({best[0]} {best[1]:,.0f})"
            )
    return "\n".join(lines)


def chart(
    table: dict[tuple[str, str, str], float], systems: list[str], path: Path, title: str
) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("(matplotlib is not installed: no chart; `make bench` installs it)")
        return False
    shown = [c for c in COLUMNS if c.title not in ("RSS c10 MB", "late max ms", "sleep wall s")]
    cols = 4
    rows = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows))
    for ax, column in zip(axes.flat, shown, strict=False):
        names, values, colors = [], [], []
        for system in systems:
            value = table.get((system, column.workload, column.metric))
            if value is None or value <= 0:
                continue
            names.append(system)
            values.append(value)
            colors.append(
                "#d62728" if system == OURS else "#1f77b4" if system == RELEASED else "#9e9e9e"
            )
        ax.barh(names, values, color=colors)
        ax.invert_yaxis()
        if values and max(values) / min(values) > 30:
            ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        better = "higher is better" if column.higher_is_better else "lower is better"
        ax.set_title(f"{column.title} ({better})", fontsize=9)
        ax.tick_params(labelsize=8)
        for y, value in enumerate(values):
            ax.text(value, y, f" {fmt(value, column.unit)}", va="center", fontsize=7)
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def machine() -> dict[str, Any]:
    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True
    ).stdout.strip()
    cpu = ""
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as handle:
        mem_kb = int(handle.readline().split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis": redis_version,
    }


def report(
    out: Path,
    info: dict[str, Any],
    ceilings: list[dict[str, float]],
    results: list[dict[str, Any]],
    systems: list[str],
) -> list[dict[str, Any]]:
    """Write results.json, table.md and chart.png; print the table; return the failures."""
    mode, rounds = info["mode"], info["rounds"]
    table = medians(results)
    skipped = {
        (r["system"], r["workload"]): r["skipped"]
        for r in results
        if "skipped" in r and "variant" not in r
    }
    failures = [r for r in results if "error" in r or ("check" in r and not r["check"].get("ok"))]
    rendered = render_table(table, systems, skipped)
    ran_main = any("variant" not in r for r in results)
    targets = render_targets(table, systems) if OURS in systems and ran_main else ""
    ceiling = {
        key: statistics.median(c[key] for c in ceilings if key in c)
        for key in (ceilings[0] if ceilings else {})
    }
    (out / "results.json").write_text(
        json.dumps(
            {
                "info": info,
                "ceiling": ceiling,
                "results": results,
                "medians": [
                    {"system": s, "workload": w, "metric": m, "median": v}
                    for (s, w, m), v in sorted(table.items())
                ],
                "topology_medians": [
                    {"variant": t, "system": s, "workload": w, "metric": m, "median": v}
                    for (t, s, w, m), v in sorted(topologies.medians(results).items())
                ],
            },
            indent=1,
        )
    )
    report = [
        f"# docket benchmark ({mode}, {rounds} round(s), medians)",
        "",
        f"Machine: {info['machine']['cpu']}, {info['machine']['cores']} cores, "
        f"{info['machine']['memory_gib']} GiB, Python {info['machine']['python']}, "
        f"{info['machine']['redis'].split(' sha')[0]}. Started {info['started']}.",
        "",
    ]
    if ran_main:
        report += [
            rendered,
            "",
            "× = how many times better ours is (higher rate, or lower time/memory).",
            "",
        ]
    report += [
        "Machine ceiling (bare redis-py asyncio, no task system; medians): "
        + ", ".join(
            f"{k.removesuffix('_per_s').replace('_', ' ')} {v:,.0f}/s" for k, v in ceiling.items()
        )
        + ". The absolute targets were set where the awaited PING loop did ~12,400/s.",
        "",
        "Versions: " + "; ".join(f"{s}: {v}" for s, v in info["versions"].items()),
    ]
    if info.get("baseline"):
        report.append(f"Baseline: ours at commit {info['baseline'][:12]}.")
    for (system, workload), reason in sorted(skipped.items()):
        report.append(f"- {system} {workload}: {reason}")
    topology_tables = topologies.render(results, systems)
    if topology_tables:
        report += ["", "## Topologies", "", topology_tables.rstrip()]
    if targets:
        report += ["", "## Our targets (docs/performance.md)", "", targets]
    report += ["", "## Correctness", ""]
    if failures:
        report += [
            f"- FAILED: {r['system']} {r['workload']} round {r.get('round')}: {describe(r)}"
            for r in failures
        ]
    else:
        report.append(
            f"Every run of every system ran each task exactly once ({len(results)} runs)."
        )
    text = "\n".join(report) + "\n"
    (out / "table.md").write_text(text)
    drew = chart(
        table,
        systems,
        out / "chart.png",
        f"docket benchmark, {mode} mode, medians of {rounds}",
    )
    print()
    print(text)
    print(
        f"Wrote {out / 'results.json'}, {out / 'table.md'}"
        + (f" and {out / 'chart.png'}" if drew else "")
    )
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("quick", "full"), default="quick")
    parser.add_argument("--rounds", type=int, default=None, help="default: 1 quick, 3 full")
    parser.add_argument("--systems", default=",".join(ALL_SYSTEMS), help="comma-separated")
    parser.add_argument("--workloads", default="", help="comma-separated subset (default all)")
    parser.add_argument("--out", default="", help="default: benchmarks/results/<mode>")
    parser.add_argument(
        "--rerender", action="store_true", help="redraw the table and chart from results.json"
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every workload's N (a smoke run: --scale 0.05); rates at a small N "
        "are dominated by start-up",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=3,
        help="partitions of cluster_drain's partitioned row (default 3, one per primary)",
    )
    parser.add_argument(
        "--baseline",
        default="",
        metavar="REV",
        help="also run ours at commit REV (its own venv), for an A/B in the same run",
    )
    args = parser.parse_args()
    if args.partitions < 1:
        raise SystemExit("--partitions must be at least 1")
    topologies.set_partitions(args.partitions)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    baseline = ""
    if args.baseline:
        if not args.rerender:
            baseline = ensure_baseline(args.baseline)
            dirty = subprocess.run(
                ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
            ).stdout.strip()
            if dirty:
                raise SystemExit(
                    "error: --baseline compares commits: commit the working tree first"
                )
            global _installed_ours
            ensure_baseline("HEAD", INSTALLED_OURS)
            _installed_ours = True
        systems.insert(systems.index(OURS) + 1 if OURS in systems else 0, BASELINE)
    unknown = [s for s in systems if s not in (*ALL_SYSTEMS, BASELINE)]
    if unknown:
        raise SystemExit(
            f"error: unknown system(s) {unknown}; choose from {', '.join(ALL_SYSTEMS)}"
        )
    rounds = args.rounds or (3 if args.mode == "full" else 1)
    plan = workloads(args.mode)
    topology_plan = topologies.workloads(args.mode)
    if args.workloads:
        wanted = {w.strip() for w in args.workloads.split(",") if w.strip()}
        if topologies.GROUP in wanted:
            wanted |= set(topologies.NAMES)
        known = {w.name for w in plan} | set(topologies.NAMES) | {topologies.GROUP}
        if wanted - known:
            raise SystemExit(
                f"error: unknown workload(s) {sorted(wanted - known)}; choose from "
                f"{', '.join(sorted(known))}"
            )
        plan = [w for w in plan if w.name in wanted]
        topology_plan = [w for w in topology_plan if w.name in wanted]
    if args.scale != 1.0:
        plan = [scaled(w, args.scale) for w in plan]
        topology_plan = [scaled(w, args.scale) for w in topology_plan]
    out = Path(args.out) if args.out else HERE / "results" / args.mode
    if args.rerender:
        saved = json.loads((out / "results.json").read_text())
        report(out, saved["info"], [saved["ceiling"]], saved["results"], systems)
        return
    out.mkdir(parents=True, exist_ok=True)
    workdir = out / "work"
    workdir.mkdir(exist_ok=True)

    for system in systems:
        ensure_venv(system)
    info = {
        "mode": args.mode,
        "rounds": rounds,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "versions": {s: versions(s) for s in systems},
        "baseline": baseline,
        "scale": args.scale,
        "workloads": [w.__dict__ for w in plan],
        "topology_workloads": [
            {**w.__dict__, "variants": [v.__dict__ for v in w.variants]} for w in topology_plan
        ],
    }
    names = ", ".join(systems)
    rows = [
        (workload, variant, system)
        for workload in topology_plan
        for variant in workload.variants
        for system in variant.systems
        if system in systems
    ]
    print(
        f"==> {args.mode} run: {rounds} round(s), {len(plan)} workloads, systems {names}"
        + (f"; {len(topology_plan)} topology workloads ({len(rows)} rows)" if rows else "")
    )
    ceilings: list[dict[str, float]] = []
    results: list[dict[str, Any]] = []
    total = rounds * (len(plan) * len(systems) + len(rows))
    step = 0
    began = time.monotonic()
    with private_redis() as url:
        started = topologies.Topologies(url)
        try:
            for round_no in range(rounds):
                step = run_round(
                    round_no, url, plan, systems, rows, started, workdir,
                    ceilings, results, step, total, began,
                )  # fmt: skip
        finally:
            started.close()

    failures = report(out, info, ceilings, results, systems)
    # Another system's failed check is a finding to report; ours failing fails the run.
    if any(r["system"] == OURS for r in failures):
        raise SystemExit(1)


def run_round(
    round_no: int,
    url: str,
    plan: list[Workload],
    systems: list[str],
    rows: list[tuple[topologies.TopologyWorkload, topologies.Variant, str]],
    started: topologies.Topologies,
    workdir: Path,
    ceilings: list[dict[str, float]],
    results: list[dict[str, Any]],
    step: int,
    total: int,
    began: float,
) -> int:
    """One round: the machine's ceiling, every workload for every system (the order
    rotated per round), then the topology rows; returns the step count so far."""
    ceiling = measure_ceiling(url)
    ceilings.append(ceiling)
    print(
        f"[round {round_no + 1}] machine ceiling: "
        + ", ".join(f"{k}={v:,.0f}" for k, v in ceiling.items()),
        flush=True,
    )
    order = systems[round_no % len(systems) :] + systems[: round_no % len(systems)]
    for workload in plan:
        for system in order:
            step += 1
            elapsed = time.monotonic() - began
            print(
                f"[{step}/{total} {elapsed:5.0f}s] round {round_no + 1} "
                f"{workload.name:<13} {system:<9} ",
                end="",
                flush=True,
            )
            result = run_one(system, workload, url, workdir)
            result["round"] = round_no + 1
            results.append(result)
            print(describe(result), flush=True)
    shift = round_no % len(rows) if rows else 0
    for topology_workload, variant, system in rows[shift:] + rows[:shift]:
        step += 1
        elapsed = time.monotonic() - began
        label = f"{variant.label} {system}"
        with contextlib.suppress(RuntimeError):  # reported by run_topology
            started.get(variant.topology)  # its "starting" line before the row's
        print(
            f"[{step}/{total} {elapsed:5.0f}s] round {round_no + 1} "
            f"{topology_workload.name:<22} {label:<30} ",
            end="",
            flush=True,
        )
        result = run_topology(system, topology_workload, variant, started, workdir)
        result["round"] = round_no + 1
        results.append(result)
        print(describe(result), flush=True)
    return step


if __name__ == "__main__":
    main()

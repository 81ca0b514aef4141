"""Where a draining worker's time goes: py-spy samples of ``docket worker`` draining
pre-queued no-op tasks, summed by the part of docket each sample was in.

    python benchmarks/profile_drain.py [--n 20000] [--concurrency 100] [--out DIR]

Uses the ``ours`` benchmark venv (built by bench.py) and a private redis-server; writes
the raw py-spy samples and a speedscope file next to a Markdown summary.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench import OURS, SYSTEMS_DIR, ensure_venv, flush, private_redis, python_for

HERE = Path(__file__).resolve().parent

# First match wins, checked against each frame from the innermost out, so a sample is
# charged to the most specific part it was in.
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("the task itself (benchmark body)", ("bench_common.py",)),
    ("logging (two lines per task)", ("logging/__init__.py", "docket/logging.py", "_log_info")),
    ("Redis I/O: packing, parsing, socket", ("wire.py", "selector_events.py", "selectors.py")),
    ("decoding messages", ("messages.py", "serialization.py", "_decode", "pickle")),
    (
        "running a task: dependencies, metrics, outcome",
        ("_resolution.py", "frames.py", "_run_started", "_run_task", "_execute"),
    ),
    (
        "claiming, starting and settling",
        ("_read_and_claim", "_dispatch", "_start", "_settle", "_settler"),
    ),
    ("asyncio scheduling", ("asyncio/",)),
]


def categorize(stack: list[str]) -> str:
    for frame in reversed(stack):
        for part, needles in PARTS:
            if any(needle in frame for needle in needles):
                return part
    if any("importlib" in frame or "<module>" in frame for frame in stack):
        return "start-up (imports)"
    return "other"


async def fill(url: str, n: int) -> None:
    sys.path.insert(0, str(SYSTEMS_DIR))
    os.environ["BENCH_URL"] = url
    import docket_bench

    await docket_bench.setup()
    try:
        await docket_bench.send_many("noop", list(range(n)))
    finally:
        await docket_bench.teardown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--out", default=str(HERE / "results" / "profile"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ensure_venv(OURS)
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.exists():
        raise SystemExit("error: py-spy is not installed; `make bench` installs the bench extra")
    venv_bin = python_for(OURS).parent
    raw = out / f"drain-c{args.concurrency}.txt"
    with private_redis() as url:
        flush(url)
        asyncio.run(fill(url, args.n))
        env = dict(os.environ, BENCH_RECORD=str(out / "records.txt"), BENCH_URL=url)
        started = time.monotonic()
        subprocess.run(
            [str(py_spy), "record", "--rate", str(args.rate), "--format", "raw",
             "--output", str(raw), "--", str(venv_bin / "python"), str(venv_bin / "docket"),
             "worker", "--docket", "bench", "--url", url, "--tasks", "docket_bench:tasks",
             "--concurrency", str(args.concurrency), "--until-finished"],
            cwd=SYSTEMS_DIR, env=env, check=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        elapsed = time.monotonic() - started
    parts: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        count = int(count_text)
        total += count
        parts[categorize(stack_text.split(";"))] += count
    lines = [
        f"Drain of {args.n:,} no-op tasks at concurrency {args.concurrency}, "
        f"`docket worker` with default settings, {elapsed:.1f} s under py-spy "
        f"({total:,} samples at {args.rate}/s).",
        "",
        "| where | share of samples |",
        "|---|---|",
    ]
    lines += [f"| {part} | {100 * count / total:.0f}% |" for part, count in parts.most_common()]
    summary = "\n".join(lines) + "\n"
    (out / f"drain-c{args.concurrency}.md").write_text(summary)
    print(summary)
    print(f"Raw samples: {raw}")


if __name__ == "__main__":
    main()

"""What a command costs one Redis core, on a plain server and on a 3-primary Cluster: the
server side of docs/scaling.md, with no task system on top.

Each measurement sends a batch of commands (pipelined, so the client is not what limits
it) and reads the main-thread CPU time (``INFO cpu``) of every node before and after,
minus what the node spends idle over the same wall time. On the Cluster it shows what a
plain ``PUBLISH`` costs the nodes that do not own the channel's slot (Redis Cluster
broadcasts it to every node over the cluster bus) and what a sharded ``SPUBLISH`` costs
them (nothing: it stays on the slot's shard).

    .venv/bin/python benchmarks/shard_ceiling.py            # about 20 s
    .venv/bin/python benchmarks/shard_ceiling.py --n 20000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from _redis_server import RedisServer  # noqa: E402
from _redis_topologies import RedisClusterSet  # noqa: E402

BATCH = 100
# A script of the shape docket's hot path uses (a few calls on the task's keys).
SCRIPT = """
redis.call('HSET', KEYS[1], 'state', 'queued', 'when', ARGV[1], 'fn', 'noop')
redis.call('XADD', KEYS[2], '*', 'key', ARGV[1])
redis.call('PUBLISH', KEYS[3], ARGV[1])
return 1
"""


def main_thread_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])


def measure(
    clients: dict[str, redis.Redis],
    sender: redis.Redis,
    command: Callable[[Any, int], None],
    n: int,
) -> dict[str, float]:
    """µs of main-thread CPU per command on each node: ``command(pipe, i)`` queues the
    i-th command on ``sender``'s pipeline, BATCH at a time."""
    before = {name: main_thread_cpu(c) for name, c in clients.items()}
    started = time.perf_counter()
    for chunk in range(0, n, BATCH):
        pipe = sender.pipeline(transaction=False)
        for i in range(chunk, min(n, chunk + BATCH)):
            command(pipe, i)
        pipe.execute()
    wall = time.perf_counter() - started
    after = {name: main_thread_cpu(c) for name, c in clients.items()}
    # What each node spends over the same wall time doing nothing (cron, cluster bus).
    idle_before = {name: main_thread_cpu(c) for name, c in clients.items()}
    time.sleep(wall)
    idle_after = {name: main_thread_cpu(c) for name, c in clients.items()}
    return {
        name: max(
            0.0,
            (after[name] - before[name]) - (idle_after[name] - idle_before[name]),
        )
        / n
        * 1e6
        for name in clients
    }


def plain_figures(n: int) -> dict[str, float]:
    with RedisServer.start_new() as server:
        client = redis.Redis(host=server.host, port=server.port)
        sha = client.script_load(SCRIPT)
        nodes = {"server": client}
        figures = {
            "ping": measure(nodes, client, lambda p, i: p.ping(), n)["server"],
            "publish": measure(nodes, client, lambda p, i: p.publish("{d}:events", i), n)["server"],
            "evalsha_3_calls": measure(
                nodes,
                client,
                lambda p, i: p.evalsha(sha, 3, f"{{d}}:task:{i}", "{d}:stream", "{d}:ev", i),
                n,
            )["server"],
        }
        client.close()
        return figures


def cluster_figures(n: int) -> dict[str, Any]:
    with RedisClusterSet(3, 0, node_timeout_ms=5_000) as cluster:
        owner = cluster.primary_for_key("{d}")
        others = [node for node in cluster.primaries() if node is not owner]
        clients = {"owner": redis.Redis(host=owner.host, port=owner.port)}
        for k, node in enumerate(others):
            clients[f"other{k + 1}"] = redis.Redis(host=node.host, port=node.port)
        sender = clients["owner"]
        sha = sender.script_load(SCRIPT)
        figures = {
            "ping": measure(clients, sender, lambda p, i: p.ping(), n),
            "publish": measure(clients, sender, lambda p, i: p.publish("{d}:events", i), n),
            "spublish": measure(
                clients,
                sender,
                lambda p, i: p.execute_command("SPUBLISH", "{d}:events", i),
                n,
            ),
            "evalsha_3_calls": measure(
                clients,
                sender,
                lambda p, i: p.evalsha(sha, 3, f"{{d}}:task:{i}", "{d}:stream", "{d}:ev", i),
                n,
            ),
        }
        for client in clients.values():
            client.close()
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20_000, help="commands per measurement")
    parser.add_argument("--json", default="", help="also write the figures here")
    args = parser.parse_args()
    figures = {"n": args.n, "plain": plain_figures(args.n), "cluster": cluster_figures(args.n)}
    print("Main-thread CPU µs per command (pipelined by 100, idle subtracted):")
    print(f"{'command':<18} {'one server':>11} {'cluster: owner':>15} {'each other node':>16}")
    for command in ("ping", "publish", "spublish", "evalsha_3_calls"):
        plain = figures["plain"].get(command)
        nodes = figures["cluster"][command]
        rest = [v for k, v in nodes.items() if k != "owner"]
        print(
            f"{command:<18} {'' if plain is None else f'{plain:.2f}':>11} "
            f"{nodes['owner']:>15.2f} {sum(rest) / len(rest):>16.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()

"""How fast this machine is, measured in the same run: bare redis-py asyncio loops with
no task system on top (the shapes of docs/performance.md's "physical limits"). Absolute
targets were set on a machine where the awaited PING loop did about 12,400/s."""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import redis.asyncio as aioredis

N = 10_000


async def measure(url: str) -> dict[str, float]:
    client = aioredis.Redis.from_url(url)
    try:
        await client.ping()
        sha = await client.script_load("redis.call('XADD', KEYS[1], '*', 'a', ARGV[1]) return 1")
        results: dict[str, float] = {}

        started = time.perf_counter()
        for _ in range(N):
            await client.ping()
        results["awaited_ping_per_s"] = N / (time.perf_counter() - started)

        started = time.perf_counter()
        for i in range(N):
            await client.evalsha(sha, 1, "ceiling:s1", i)
        results["awaited_evalsha_per_s"] = N / (time.perf_counter() - started)

        started = time.perf_counter()
        for chunk in range(0, N, 100):
            async with client.pipeline(transaction=False) as pipe:
                for i in range(chunk, chunk + 100):
                    pipe.xadd("ceiling:s2", {"a": i})
                await pipe.execute()
        results["pipelined_xadd_per_s"] = N / (time.perf_counter() - started)
        await client.delete("ceiling:s1", "ceiling:s2")
        return results
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.url))))


if __name__ == "__main__":
    main()

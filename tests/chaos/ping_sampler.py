"""``python -m ping_sampler HOST PORT INTERVAL``: PING a Redis every INTERVAL seconds
and time each reply, until stdin closes; then print the samples as JSON lines
(``[time.monotonic() when sent, seconds until the reply]``), and a last line
``{"error": ...}`` if the connection failed.

A process of its own, on a plain socket: in the test process a PING would wait behind
the event loop and for the GIL whenever the test itself is busy (adding 100,000 tasks
is), and the figures would be the test's stalls, not Redis's.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import time


def sample(host: str, port: int, interval: float) -> tuple[list[tuple[float, float]], str]:
    samples: list[tuple[float, float]] = []
    try:
        with socket.create_connection((host, port), timeout=10) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            next_at = time.monotonic()
            while True:
                sent_at = time.monotonic()
                began = time.perf_counter()
                conn.sendall(b"PING\r\n")
                reply = b""
                while not reply.endswith(b"\r\n"):
                    chunk = conn.recv(64)
                    if not chunk:
                        return samples, "Redis closed the connection"
                    reply += chunk
                samples.append((sent_at, time.perf_counter() - began))
                if reply != b"+PONG\r\n":
                    return samples, f"PING answered {reply!r}"
                next_at += interval
                delay = max(0.0, next_at - time.monotonic())
                if delay == 0.0:
                    next_at = time.monotonic()
                # Wait for the next PING, or for stdin to close (the test is done).
                if select.select([sys.stdin], [], [], delay)[0] and not sys.stdin.read(1):
                    return samples, ""
    except OSError as error:
        return samples, f"{type(error).__name__}: {error}"


def main() -> None:
    host, port, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    # Ready: the test waits for this line before it counts on the samples.
    print("ready", flush=True)
    samples, error = sample(host, port, interval)
    out = sys.stdout
    for sent_at, latency in samples:
        out.write(f"[{sent_at!r}, {latency!r}]\n")
    if error:
        out.write(json.dumps({"error": error}) + "\n")
    out.flush()


if __name__ == "__main__":
    main()

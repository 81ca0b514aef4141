"""The recent failures: runs that ended failed, kept with their tracebacks and messages."""

from __future__ import annotations

__all__ = ["FAILURES_KEPT"]

FAILURES_KEPT = 1000
"""About how many failures each partition's failures stream keeps (Redis trims it
approximately, in whole stream nodes, so some more may be there)."""

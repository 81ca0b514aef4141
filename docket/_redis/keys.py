"""Where a docket keeps things in Redis.

Every key and channel of a docket starts with ``{name}``: the braces make it a hash tag,
so on Redis Cluster all of a docket lives in one slot and every script stays legal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GROUP = "docket-workers"

# Names end up in key patterns, ACL globs and hash tags, so characters that mean
# something to any of those are refused rather than escaped.
_VALID_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


def validate_name(name: str, what: str = "docket name") -> str:
    return checked_name(
        _VALID_NAME,
        name,
        what,
        "use 1-128 letters, digits, '_', '-' or '.' (no spaces, ':', glob characters or "
        "braces, which would reach other dockets' keys)",
    )


def checked_name(pattern: re.Pattern[str], name: str, what: str, rule: str) -> str:
    """``name`` if ``pattern`` matches all of it; otherwise a ValueError naming ``what``
    and the ``rule`` it breaks."""
    if not isinstance(name, str) or not pattern.fullmatch(name):
        raise ValueError(f"Invalid {what} {name!r}: {rule}")
    return name


@dataclass(frozen=True)
class Keys:
    name: str

    @property
    def prefix(self) -> str:
        return "{" + self.name + "}"

    @property
    def stream(self) -> str:
        return f"{self.prefix}:stream"

    @property
    def queue(self) -> str:
        return f"{self.prefix}:queue"

    @property
    def generation(self) -> str:
        return f"{self.prefix}:generation"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}:dead-letters"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    @property
    def strikes(self) -> str:
        return f"{self.prefix}:strikes"

    @property
    def record_prefix(self) -> str:
        return f"{self.prefix}:task:"

    def record(self, key: str) -> str:
        return self.record_prefix + key

    @property
    def results(self) -> str:
        """The collection results live in: one key per run, ``<collection>:<result key>``."""
        return f"{self.prefix}:result"

    def result(self, key: str, generation: int | str) -> str:
        """Where the default store keeps one run's result (its generation in the name, so
        a superseded run's result is never the one read)."""
        return f"{self.results}:{key}:{generation}"

    @property
    def concurrency_registry(self) -> str:
        """Every concurrency limit that has holders or waiters right now."""
        return f"{self.prefix}:concurrency-keys"

    @property
    def concurrency_limits(self) -> str:
        """Each such limit's max_concurrent, for the sweeps that wake its waiters."""
        return f"{self.prefix}:concurrency-limits"

    def worker_tasks(self, worker: str) -> str:
        return f"{self.prefix}:worker-tasks:{worker}"

    # Pub/sub channels
    @property
    def events_prefix(self) -> str:
        return f"{self.prefix}:events:"

    def events(self, key: str) -> str:
        return self.events_prefix + key

    @property
    def wake_channel(self) -> str:
        return f"{self.prefix}:wake"

    @property
    def cancel_channel(self) -> str:
        return f"{self.prefix}:cancel"

    @property
    def strikes_channel(self) -> str:
        return f"{self.prefix}:strikes-changed"

    # For others' data: a docket's own keys never start with this, so nothing it does
    # (clear(), expiry, the test suite's leak checks) touches what lives under it.
    @property
    def external_prefix(self) -> str:
        return f"{self.prefix}:ext:"

    def external(self, suffix: str) -> str:
        return self.external_prefix + suffix

    # The released layout's names for things this layout keeps elsewhere (in the task's
    # record, or on one channel for the whole docket): keys under the prefix that
    # nothing reads or writes, so code that touches them disturbs nothing.
    def unused(self, name: str) -> str:
        return f"{self.prefix}:unused:{name}"

    def permanent(self) -> set[str]:
        """Keys that legitimately outlive every task (what a leak check may ignore)."""
        return {self.stream, self.generation, self.dead_letters, self.workers, self.strikes}

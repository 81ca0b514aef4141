"""What a framework adapter builds on: ``docket_django`` and ``docket_starlette`` use
these, and so can an adapter of your own (Litestar, Flask, a custom runner).

Each is the piece docket's own entry points use, so an adapter behaves as
``docket worker`` does: the same shutdown-signal policy, the same health endpoint, the
same option metadata and ``module:name`` imports, and task keys of the same form.
"""

from __future__ import annotations

from ._imports import ImportPathError, import_object
from ._redis.client import SUPPORTED_SCHEMES
from ._redis.keys import validate_name, validate_partitions
from ._signals import SignalsSeen, shutdown_signals
from ._typed_values import parse_typed_value
from ._uuid7 import uuid7_str
from ._worker_options import OPTION_NAMES, OptionSpec, option_specs
from ._worker_run import run_with_healthcheck

__all__ = [
    "OPTION_NAMES",
    "SUPPORTED_SCHEMES",
    "ImportPathError",
    "OptionSpec",
    "SignalsSeen",
    "import_object",
    "option_specs",
    "parse_typed_value",
    "run_with_healthcheck",
    "shutdown_signals",
    "uuid7_str",
    "validate_name",
    "validate_partitions",
]

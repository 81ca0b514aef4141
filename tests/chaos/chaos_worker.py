"""``python -m chaos_worker worker ...``: the ``docket worker`` command, with the docket's
``execution_ttl`` taken from ``$DOCKET_CHAOS_EXECUTION_TTL`` (seconds).

A command-line worker keeps every record and result for its own docket's
``execution_ttl`` (the worker's docket sets the TTL when it settles a run), 15 minutes
unless ``docket worker --execution-ttl`` says otherwise; this module predates that
option and sets the same default through the environment instead. The soak and
out-of-memory scenarios need finished records to go within seconds, so the harness
starts its workers through this module: the very same command line and worker, run by
``docket.cli.main``, whose one difference is the ``Docket`` that ``docket._worker_run``
opens, a subclass with that default.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from typing import Any

from docket import Docket

EXECUTION_TTL_ENV = "DOCKET_CHAOS_EXECUTION_TTL"


def _docket_class(ttl: timedelta) -> type[Docket]:
    class ChaosDocket(Docket):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("execution_ttl", ttl)
            super().__init__(*args, **kwargs)

    return ChaosDocket


if __name__ == "__main__":
    # Here, not at the top: the harness imports this module for EXECUTION_TTL_ENV alone,
    # also when it runs the released docket, which has neither of these.
    import docket._worker_run as worker_run
    from docket.cli import main

    raw = os.environ.get(EXECUTION_TTL_ENV)
    if raw:
        worker_run.Docket = _docket_class(timedelta(seconds=float(raw)))  # type: ignore[attr-defined]
    sys.argv[0] = "docket"
    main()

"""``manage.py docket_worker``: run a docket worker with the project's settings."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import autoreload

from docket.dependencies import validate_worker_dependencies
from docket.integration import OptionSpec, option_specs
from docket_django.conf import DEFAULT_ALIAS, docket_settings
from docket_django.worker import WorkerRun, run_worker, worker_settings

# What this command says about an option beyond what the option is.
_NOTES = {
    "schedule_automatic_tasks": (
        "default on, off with --until-finished: they would always be scheduled"
    ),
    "max_tasks": "the command then exits 0",
}


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _duration(text: str) -> timedelta:
    # Only when a duration is given: docket.cli brings the whole command line with it.
    from docket.cli.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_option(parser: CommandParser, spec: OptionSpec) -> None:
    """The flag of one ``WorkerOptions`` field; unset, it leaves ``DOCKET["WORKER"]``'s
    value in place."""
    note = _NOTES.get(spec.name)
    text = f"{spec.help} ({note})" if note else spec.help
    if spec.kind == "flag":
        parser.add_argument(spec.flag, action=argparse.BooleanOptionalAction, help=text)
    elif spec.kind == "count":
        parser.add_argument(spec.flag, type=_count, metavar="N", help=text)
    elif spec.kind == "duration":
        parser.add_argument(
            spec.flag,
            type=_duration,
            metavar="DURATION",
            help=f"{text}; seconds, or 250ms, 5m, 1h, mm:ss...",
        )
    elif spec.kind == "import":
        parser.add_argument(spec.flag, metavar="module:name", help=text)
    else:
        parser.add_argument(spec.flag, help=text)


class Command(BaseCommand):
    help = (
        "Run a docket worker for a DOCKET alias. The first SIGTERM/SIGINT stops claiming "
        "and lets in-flight tasks finish (exit 0); a second one aborts. A worker option "
        "not given keeps its DOCKET['WORKER'] value."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--docket", default=DEFAULT_ALIAS, help="DOCKET alias (default)")
        for spec in option_specs():
            _add_option(parser, spec)
        parser.add_argument(
            "--sync-threads", type=_count, metavar="N", help="threads for sync (def) tasks"
        )
        parser.add_argument(
            "--tasks", action="append", default=[], help="extra module:collection to register"
        )
        parser.add_argument(
            "--until-finished", action="store_true", help="exit once nothing is left to run"
        )
        parser.add_argument("--healthcheck-port", type=int)
        parser.add_argument("--metrics-port", type=int)
        parser.add_argument(
            "--reload",
            action=argparse.BooleanOptionalAction,
            default=None,
            help=(
                "restart on code changes (default: on when DEBUG, off with "
                "--until-finished or --max-tasks, which must exit)"
            ),
        )
        parser.add_argument("--log-level", default="INFO")

    def handle(self, *args: Any, **options: Any) -> None:
        self._configure_logging(options["log_level"])
        reload = options["reload"]
        max_tasks = options["max_tasks"] or docket_settings(options["docket"]).worker.max_tasks
        if options["until_finished"] or max_tasks is not None:
            # The autoreloader never returns: a worker that must exit cannot run under it.
            if reload:
                logging.getLogger("docket_django").warning(
                    "--reload is ignored with --until-finished/--max-tasks"
                )
            reload = False
        elif reload is None:
            reload = bool(settings.DEBUG)
        if reload:
            autoreload.run_with_reloader(self.inner_run, **options)
        else:
            self.inner_run(**options)

    def _configure_logging(self, level: str) -> None:
        docket_logger = logging.getLogger("docket")
        ours = logging.getLogger("docket_django")
        if not docket_logger.handlers and not logging.getLogger().handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
            )
            for target in (docket_logger, ours):
                target.addHandler(handler)
                target.setLevel(level.upper())
                target.propagate = False

    def inner_run(self, **options: Any) -> None:
        run = self.worker_run(**options)
        if settings.DEBUG:
            logging.getLogger("docket_django").warning(
                "DEBUG is on: fine for development, not for production workers"
            )
        run_worker(run)

    def worker_run(self, **options: Any) -> WorkerRun:
        """The run these options (the parsed command line) ask for, over the
        ``DOCKET`` alias's own settings."""
        alias = options["docket"]
        overrides = {spec.name: options[spec.name] for spec in option_specs()}
        if options["until_finished"] and overrides["schedule_automatic_tasks"] is None:
            # A perpetual task is always scheduled: --until-finished would never finish.
            overrides["schedule_automatic_tasks"] = False
        try:
            worker = worker_settings(alias, sync_threads=options["sync_threads"], **overrides)
            # Imported and checked now, so that a bad one fails before anything connects.
            validate_worker_dependencies(worker.worker_options().dependencies)
        except (TypeError, ValueError) as error:
            raise CommandError(str(error)) from None
        return WorkerRun(
            alias=alias,
            options=worker,
            until_finished=options["until_finished"],
            healthcheck_port=options["healthcheck_port"],
            metrics_port=options["metrics_port"],
            extra_tasks=options["tasks"],
        )

"""``manage.py docket_worker``: run a docket worker with the project's settings."""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.utils import autoreload

from docket_django.conf import DEFAULT_ALIAS
from docket_django.worker import WorkerRun, run_worker, seconds, worker_settings


class Command(BaseCommand):
    help = (
        "Run a docket worker for a DOCKET alias. The first SIGTERM/SIGINT stops claiming "
        "and lets in-flight tasks finish (exit 0); a second one aborts."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--docket", default=DEFAULT_ALIAS, help="DOCKET alias (default)")
        parser.add_argument("--name", help="worker name (default host#pid)")
        parser.add_argument("--concurrency", type=int, help="tasks run at once")
        parser.add_argument("--sync-threads", type=int, help="threads for sync (def) tasks")
        parser.add_argument("--redelivery-timeout", type=float, help="seconds")
        parser.add_argument("--reconnection-delay", type=float, help="seconds")
        parser.add_argument("--minimum-check-interval", type=float, help="seconds")
        parser.add_argument("--scheduling-resolution", type=float, help="seconds")
        parser.add_argument(
            "--schedule-automatic-tasks",
            action=__import__("argparse").BooleanOptionalAction,
            default=None,
            help=(
                "keep automatic perpetual/cron tasks scheduled (default on, off with "
                "--until-finished: they would always be scheduled)"
            ),
        )
        parser.add_argument("--message-batch", type=int)
        parser.add_argument("--max-deliveries", type=int)
        parser.add_argument("--fallback-task", help="module:function for unknown tasks")
        parser.add_argument("--dependencies", help="module:name of worker dependencies")
        parser.add_argument(
            "--tasks", action="append", default=[], help="extra module:collection to register"
        )
        parser.add_argument(
            "--until-finished", action="store_true", help="exit once nothing is left to run"
        )
        parser.add_argument(
            "--max-tasks", type=int, help="exit (0) after this many runs, to be restarted"
        )
        parser.add_argument("--healthcheck-port", type=int)
        parser.add_argument("--metrics-port", type=int)
        parser.add_argument(
            "--reload",
            action=__import__("argparse").BooleanOptionalAction,
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
        exits = options["until_finished"] or options["max_tasks"] is not None
        if exits:
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
        alias = options["docket"]
        schedule_automatic_tasks = options["schedule_automatic_tasks"]
        if options["until_finished"] and schedule_automatic_tasks is None:
            # A perpetual task is always scheduled: --until-finished would never finish.
            schedule_automatic_tasks = False
        worker = worker_settings(
            alias,
            name=options["name"],
            concurrency=options["concurrency"],
            sync_threads=options["sync_threads"],
            redelivery_timeout=seconds(options["redelivery_timeout"]),
            reconnection_delay=seconds(options["reconnection_delay"]),
            minimum_check_interval=seconds(options["minimum_check_interval"]),
            scheduling_resolution=seconds(options["scheduling_resolution"]),
            schedule_automatic_tasks=schedule_automatic_tasks,
            message_batch=options["message_batch"],
            max_deliveries=options["max_deliveries"],
            fallback_task=options["fallback_task"],
            dependencies=options["dependencies"],
        )
        if settings.DEBUG:
            logging.getLogger("docket_django").warning(
                "DEBUG is on: fine for development, not for production workers"
            )
        run_worker(
            WorkerRun(
                alias=alias,
                options=worker,
                until_finished=options["until_finished"],
                max_tasks=options["max_tasks"],
                healthcheck_port=options["healthcheck_port"],
                metrics_port=options["metrics_port"],
                extra_tasks=options["tasks"],
            )
        )

"""``manage.py docket <strike|restore|snapshot|clear|cancel|health>``."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from docket_django.conf import DEFAULT_ALIAS
from docket_django.health import status
from docket_django.portal import get_portal


def _value(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


class Command(BaseCommand):
    help = "Operate a docket: strike/restore tasks, snapshot, clear, cancel, health."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--docket", default=DEFAULT_ALIAS, help="DOCKET alias")
        sub = parser.add_subparsers(dest="action", required=True)
        for action in ("strike", "restore"):
            p = sub.add_parser(action, help=f"{action} a task and/or an argument condition")
            p.add_argument("task", nargs="?", help="task name ('' or omit for any task)")
            p.add_argument("parameter", nargs="?")
            p.add_argument("operator", nargs="?", default="==")
            p.add_argument("value", nargs="?", help="JSON literal, else a string")
        p = sub.add_parser("snapshot", help="what is scheduled, queued, running; workers")
        p.add_argument("--json", action="store_true")
        sub.add_parser("clear", help="cancel everything that has not started")
        p = sub.add_parser("cancel", help="cancel one task by key")
        p.add_argument("key")
        p = sub.add_parser("health", help="exit 0 if Redis answers and a worker heartbeats")
        p.add_argument("--no-workers", action="store_true", help="check Redis only")

    def handle(self, *args: Any, **options: Any) -> None:
        alias = options["docket"]
        action = options["action"]
        if action == "health":
            return self._health(alias, not options["no_workers"])
        portal = get_portal()

        async def run() -> Any:
            docket = await portal.docket(alias)
            if action in ("strike", "restore"):
                task = options["task"] or None
                parameter = options["parameter"]
                if task is None and parameter is None:
                    raise CommandError("Give a task name, a parameter, or both")
                method = docket.strike if action == "strike" else docket.restore
                await method(task, parameter, options["operator"], _value(options["value"]))
                return f"{action}: task={task} {parameter or ''} {options['operator']} " + (
                    f"{options['value']}" if parameter else ""
                )
            if action == "clear":
                return f"cleared {await docket.clear()} tasks"
            if action == "cancel":
                await docket.cancel(options["key"])
                return f"cancelled {options['key']}"
            snapshot = await docket.snapshot()
            return snapshot_dict(snapshot, list(docket.strike_list.conditions))

        result = portal.run(run())
        if action == "snapshot":
            if options["json"]:
                self.stdout.write(json.dumps(result, indent=2, default=str))
            else:
                self._print_snapshot(result)
        else:
            self.stdout.write(str(result).strip())

    def _print_snapshot(self, data: dict[str, Any]) -> None:
        self.stdout.write(f"{data['total_tasks']} tasks at {data['taken']}")
        for section in ("running", "future"):
            for item in data[section]:
                self.stdout.write(
                    f"  {section:8} {item['function']} key={item['key']} state={item['state']} "
                    f"when={item['when']} worker={item['worker'] or '-'}"
                )
        for worker in data["workers"]:
            self.stdout.write(f"  worker   {worker['name']} last seen {worker['last_seen']}")
        for strike in data["strikes"]:
            self.stdout.write(f"  strike   {strike}")

    def _health(self, alias: str, require_workers: bool) -> None:
        health = status(alias)
        self.stdout.write(
            json.dumps(
                {
                    "alias": alias,
                    "redis": health.redis,
                    "workers": len(health.workers),
                    "error": health.error,
                }
            )
        )
        if not health.healthy(require_workers):
            raise SystemExit(1)


def snapshot_dict(snapshot: Any, strikes: list[Any]) -> dict[str, Any]:
    def execution(e: Any) -> dict[str, Any]:
        progress = e.progress
        return {
            "function": e.function_name,
            "key": e.key,
            "state": e.state.value,
            "when": e.when.isoformat(),
            "worker": e.worker,
            "started_at": e.started_at.isoformat() if e.started_at else None,
            "attempt": e.attempt,
            "progress": (
                {"current": progress.current, "total": progress.total, "message": progress.message}
                if progress.current is not None
                else None
            ),
        }

    return {
        "taken": snapshot.taken.isoformat(),
        "total_tasks": snapshot.total_tasks,
        "running": [execution(e) for e in snapshot.running],
        "future": [execution(e) for e in snapshot.future],
        "workers": [
            {"name": w.name, "last_seen": w.last_seen.isoformat(), "tasks": sorted(w.tasks)}
            for w in snapshot.workers
        ],
        "strikes": [str(s) for s in strikes],
    }

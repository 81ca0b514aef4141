"""examples/django_project, run the way its README says: migrate, place an order through
the view (the enqueues wait for the transaction), run a worker until finished."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parent.parent.parent
EXAMPLE = REPO / "examples" / "django_project"

ROLLED_BACK = """
from django.db import transaction
from shop.models import Order
from shop.tasks import confirm_order


class Rollback(Exception):
    pass


try:
    with transaction.atomic():
        order = Order.objects.create(item="never")
        confirm_order.enqueue(order_id=order.pk)
        raise Rollback
except Rollback:
    pass
"""


PLACE_ORDER = (
    ROLLED_BACK
    + """
import json
from django.test import Client
from docket_django import get_docket
from docket_django.portal import get_portal

response = Client().post("/orders/", {"item": "kettle"})
assert response.status_code == 200, response.content
body = response.json()


async def queued():
    async with get_docket() as docket:
        snapshot = await docket.snapshot()
        return len(snapshot.future) + len(snapshot.running)


body["queued"] = get_portal().run(queued())
print("RESULT" + json.dumps(body))
"""
)

ORDER_STATUS = """
import json
from django.test import Client
from shop.jobs import write_receipt

response = Client().get("/orders/{order}/", {{"receipt_result": "{result}"}})
assert response.status_code == 200, response.content
body = response.json()
result = write_receipt.get_result("{result}")
body["return_value"] = result.return_value
body["attempts"] = result.attempts
print("RESULT" + json.dumps(body))
"""

ADMIN_STATIC = """
import json
from django.contrib.staticfiles import finders
from django.test import Client

client = Client()
login = client.get("/admin/login/")
assert login.status_code == 200, login.status_code
css = client.get("/static/admin/css/base.css")
body = {
    "links_css": 'href="/static/admin/css/base.css"' in login.content.decode(),
    "found": bool(finders.find("admin/css/base.css")),
    "served": css.status_code,
    "css": "body" in b"".join(css.streaming_content).decode(),
}
print("RESULT" + json.dumps(body))
"""


def _run(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done


def _shell(project: Path, env: dict[str, str], code: str) -> dict[str, object]:
    done = _run(project, env, "shell", "--no-imports", "-c", code)
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT"))
    result: dict[str, object] = json.loads(line.removeprefix("RESULT"))
    return result


def test_example_project(tmp_path: Path, redis_url: str) -> None:
    project = tmp_path / "django_project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", "db.sqlite3"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DOCKET_"))}
    env.update(
        DOCKET_URL=redis_url,  # the example's docket ("shop") on this process's Redis
        PYTHONPATH=str(REPO),
        PYTHONDONTWRITEBYTECODE="1",
    )

    # 1. python manage.py migrate (SQLite, in the copy)
    _run(project, env, "migrate", "--verbosity", "0")
    database = project / "db.sqlite3"
    assert database.exists()

    # 2. the view: both enqueues wait for the commit (after a rolled-back enqueue,
    # which adds nothing)
    placed = _shell(project, env, PLACE_ORDER)
    assert placed["task_key"] == f"confirm-{placed['order']}"
    assert placed["queued"] == 2

    # 3. python manage.py docket_worker, until finished (DEBUG is on in the example: the
    # autoreloader and the perpetual cleanup task must not keep it from exiting)
    worker = _run(project, env, "docket_worker", "--until-finished")
    assert "started on docket 'shop'" in worker.stderr, worker.stderr
    assert "confirm_order" in worker.stderr and "cleanup_abandoned_orders" not in worker.stderr
    # the django.tasks task runs (and logs) under its own name, not a generic one
    assert "shop.jobs.write_receipt" in worker.stderr, worker.stderr
    assert "django_task" not in worker.stderr, worker.stderr

    # 4. the effect in the database, and the django.tasks result
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT id, item, status, receipt FROM shop_order ORDER BY id").fetchall()
    order = placed["order"]
    assert rows == [(order, "kettle", "confirmed", f"Receipt for order {order}: one kettle")]
    status = _shell(project, env, ORDER_STATUS.format(order=order, result=placed["receipt_result"]))
    assert status == {
        "order": order,
        "status": "confirmed",
        "receipt": f"Receipt for order {order}: one kettle",
        "receipt_task": "SUCCESSFUL",
        "return_value": f"Receipt for order {order}: one kettle",
        "attempts": 1,
    }

    # 5. the admin has its CSS: staticfiles finds and (DEBUG) serves what it links to
    assert _shell(project, env, ADMIN_STATIC) == {
        "links_css": True,
        "found": True,
        "served": 200,
        "css": True,
    }

"""The admin dashboard through Django's test client, and the testing kit."""

from __future__ import annotations

import socket
import time
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import transaction
from django.test import TestCase

from docket_django.portal import get_portal
from docket_django.testing import DocketTestMixin

pytest_plugins = ["docket_django.pytest_plugin"]

URL = "/admin/docket_django/dashboard/"


def _user(username: str, *, staff: bool, perms: list[str] = (), superuser: bool = False) -> User:  # type: ignore[assignment]
    user = User.objects.create_user(username, password="pw", is_staff=staff, is_superuser=superuser)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


@pytest.mark.django_db
def test_dashboard_requires_staff(client: Any, docket_setting: dict[str, Any]) -> None:
    assert client.get(URL).status_code == 302  # to the login page
    client.force_login(_user("plain", staff=False))
    assert client.get(URL).status_code == 302
    client.force_login(_user("staff", staff=True))  # staff without the view permission
    assert client.get(URL).status_code == 403


@pytest.mark.django_db
def test_dashboard_lists_tasks_and_is_linked(client: Any, docket_setting: dict[str, Any]) -> None:
    from djtestapp.tasks import mark_done, slow

    mark_done.schedule(1, delay=timedelta(hours=1), key="later-one", on_commit=False)
    key = slow.schedule(5.0, on_commit=False)
    client.force_login(_user("viewer", staff=True, perms=["view_dashboard"]))
    index = client.get("/admin/")
    assert URL in index.content.decode()
    overview = client.get(URL)
    assert overview.status_code == 200
    html = overview.content.decode()
    assert 'data-count="queued">1<' in html and 'data-count="scheduled">1<' in html
    assert "No worker has sent a heartbeat lately" in html
    assert "admin/css/base.css" in html  # inside the admin's own page
    scheduled = client.get(URL + "scheduled").content.decode()
    assert "later-one" in scheduled and "mark_done" in scheduled and "in 59 min" in scheduled
    queued = client.get(URL + "queued").content.decode()
    assert key in queued and "slow" in queued
    for page in ("", "queued", "scheduled", "running", "failures", "dead-letters", "strikes"):
        assert 'name="action"' not in client.get(URL + page).content.decode(), page
    task = client.get(URL + "task", {"key": "later-one"}).content.decode()
    assert "later-one" in task and "scheduled" in task


@pytest.mark.django_db
def test_dashboard_live_refresh_and_its_files(client: Any, docket_setting: dict[str, Any]) -> None:
    from djtestapp.tasks import mark_done

    mark_done.schedule(1, delay=timedelta(hours=1), key="in-a-fragment", on_commit=False)
    client.force_login(_user("viewer", staff=True, perms=["view_dashboard"]))
    part = client.get(URL + "scheduled", headers={"X-Docket-Fragment": "1"}).content.decode()
    assert "in-a-fragment" in part and "admin/css/base.css" not in part
    script = client.get(URL + "static/dashboard.js")
    assert script.status_code == 200 and script["Content-Type"].startswith("text/javascript")
    assert client.get(URL + "no-such-page").status_code == 404


@pytest.mark.django_db
def test_dashboard_running_with_progress_and_workers(
    client: Any, docket_setting: dict[str, Any]
) -> None:
    from _portal_worker import portal_worker
    from djtestapp.tasks import slow

    client.force_login(_user("admin", staff=True, superuser=True))
    key = slow.schedule(1.0, on_commit=False)

    async def progress_shown() -> bool:
        snapshot = await (await get_portal().docket("default")).snapshot()
        return any(e.progress.current for e in snapshot.running)

    with portal_worker() as worker:
        deadline = time.monotonic() + 10
        while not get_portal().run(progress_shown()):
            assert time.monotonic() < deadline, "the task never reported progress"
            time.sleep(0.02)
        html = client.get(URL).content.decode()
        assert key in html and "/10" in html  # progress current/total
        assert worker.name in html
        assert "<progress" in client.get(URL + "running").content.decode()


@pytest.mark.django_db
def test_dashboard_actions_need_permission(client: Any, docket_setting: dict[str, Any]) -> None:
    from djtestapp.tasks import mark_done

    key = mark_done.schedule(1, delay=timedelta(hours=1), on_commit=False)
    action = URL + "action"
    client.force_login(_user("viewer", staff=True, perms=["view_dashboard"]))
    assert client.post(action, {"action": "cancel", "key": key}).status_code == 403
    client.force_login(_user("manager", staff=True, perms=["view_dashboard", "manage_docket"]))
    assert 'name="action"' in client.get(URL + "scheduled").content.decode()
    struck = client.post(action, {"action": "strike", "function": "mark_done", "next": URL})
    assert struck.status_code == 303 and "done=Struck" in struck["Location"]
    assert 'data-strike="mark_done"' in client.get(URL + "strikes").content.decode()
    lifted = client.post(action, {"action": "lift", "strike": "mark_done"})
    assert "done=Lifted" in lifted["Location"]
    assert 'data-strike="mark_done"' not in client.get(URL + "strikes").content.decode()
    cancelled = client.post(action, {"action": "cancel", "key": key, "next": URL + "scheduled"})
    assert cancelled["Location"].startswith(URL + "scheduled?done=Cancelled")
    assert key not in client.get(URL + "scheduled").content.decode()


@pytest.mark.django_db
def test_dashboard_says_when_redis_does_not_answer(client: Any, settings: Any) -> None:
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    settings.DOCKET = {"URL": f"redis://127.0.0.1:{port}/0", "NAME": "unreachable"}
    client.force_login(_user("viewer", staff=True, perms=["view_dashboard"]))
    page = client.get(URL + "queued")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Redis did not answer" in html and "errornote" in html


@pytest.mark.django_db
def test_dashboard_actions_are_csrf_protected(docket_setting: dict[str, Any]) -> None:
    from django.test import Client
    from djtestapp.tasks import mark_done

    key = mark_done.schedule(1, delay=timedelta(hours=1), on_commit=False)
    client = Client(enforce_csrf_checks=True)
    client.force_login(_user("manager", staff=True, perms=["view_dashboard", "manage_docket"]))
    form = {"action": "cancel", "key": key}
    assert client.post(URL + "action", form).status_code == 403
    page = client.get(URL + "scheduled").content.decode()
    token = page.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
    done = client.post(URL + "action", {**form, "csrfmiddlewaretoken": token})
    assert done.status_code == 303


# -- testing kit -------------------------------------------------------------------


class KitTests(DocketTestMixin, TestCase):
    def test_on_commit_enqueue_and_run_in_test_transaction(self) -> None:
        from djtestapp.models import Order
        from djtestapp.tasks import mark_done

        with self.captureOnCommitCallbacks(execute=True), transaction.atomic():
            order = Order.objects.create(item="kit")
            mark_done.enqueue(order.pk)
        self.assertTaskScheduled(mark_done, args=(order.pk,))
        ran = self.run_docket_tasks()
        self.assertEqual([e.state.value for e in ran], ["completed"])
        # The task ran in this thread, inside the test's transaction.
        self.assertEqual(Order.objects.get(pk=order.pk).status, "done")
        self.assertNoTasks()

    def test_without_capture_nothing_is_enqueued(self) -> None:
        from djtestapp.tasks import mark_done

        mark_done.enqueue(1)  # TestCase is one big transaction: waits for a commit
        self.assertNoTasks()

    def test_django_tasks_backend_in_kit(self) -> None:
        from djtestapp import jobs
        from djtestapp.models import Order

        order = Order.objects.create(item="chair")
        with self.captureOnCommitCallbacks(execute=True):
            result = jobs.touch_order.enqueue(order.pk)
        self.run_docket_tasks()
        self.assertEqual(jobs.touch_order.get_result(result.id).return_value, "chair")
        self.assertEqual(Order.objects.get(pk=order.pk).note, "touched")


@pytest.mark.django_db
def test_pytest_fixture(docket_memory: Any, django_capture_on_commit_callbacks: Any) -> None:
    from djtestapp.models import Order
    from djtestapp.tasks import confirm

    order = Order.objects.create(item="pen")
    with django_capture_on_commit_callbacks(execute=True):
        confirm.enqueue(order_id=order.pk)
    docket_memory.assert_task_scheduled(confirm, key=f"confirm-{order.pk}")
    docket_memory.run_pending()
    assert Order.objects.get(pk=order.pk).status == "confirmed"


def test_kit_is_not_tied_to_debug(settings: Any) -> None:
    from docket_django.testing import memory_dockets

    settings.DEBUG = True
    from docket_django.conf import docket_settings

    assert not docket_settings().url.startswith("memory://")
    with memory_dockets():
        assert docket_settings().url.startswith("memory://")

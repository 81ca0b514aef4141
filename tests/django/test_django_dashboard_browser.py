"""The Django admin's dashboard in a real Chromium against a real Redis: log in through
the admin's login form, cancel a scheduled task, watch a running task's progress move
without a reload, requeue a dead letter, and screenshot the pages (kept in docs/images
by ``make screenshots``)."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from _browser import Screenshots, browser, click_and_see, page_of, watch_progress
from _portal_worker import portal_worker
from django.contrib.auth.models import User

from docket import Docket, Worker

URL = "/admin/docket_django/dashboard/"


async def phantom(note: str) -> None: ...


@pytest.mark.django_db(transaction=True)
def test_the_admin_dashboard_in_chromium(
    live_server: Any, docket_setting: dict[str, Any], tmp_path: Path
) -> None:
    from djtestapp.tasks import mark_done, slow

    async def dead_letter() -> None:
        # A message for a task no worker of this project knows: dead-lettered.
        async with Docket(docket_setting["NAME"], docket_setting["URL"]) as docket:
            await docket.add(phantom, key="phantom-1")("from an old deploy")
            del docket.tasks["phantom"]
            async with Worker(docket, minimum_check_interval=timedelta(milliseconds=5)) as w:
                await w.run_until_finished()

    asyncio.run(dead_letter())
    User.objects.create_user("admin", password="pw", is_staff=True, is_superuser=True)
    later = mark_done.schedule(7, delay=timedelta(hours=1), key="later-one", on_commit=False)
    shots = Screenshots(tmp_path / "screenshots")
    base = live_server.url
    with browser() as chromium, page_of(chromium) as page:
        page.goto(base + URL)
        assert "/admin/login/" in page.url
        page.fill("#id_username", "admin")
        page.fill("#id_password", "pw")
        page.click("input[type=submit]")
        page.wait_for_url(re.compile(".*" + re.escape(URL) + "$"))
        assert page.locator("#docket-dashboard").count() == 1

        page.goto(base + URL + "scheduled")
        row = page.locator(f"tr[data-key='{later}']")
        assert "in 59 min" in row.inner_text()
        shots.take(page, "django-scheduled")
        click_and_see(page, row, "Cancel", "Cancelled mark_done")
        assert page.locator(f"tr[data-key='{later}']").count() == 0

        key = slow.schedule(6.0, on_commit=False)

        with portal_worker():
            page.goto(base + URL + "running")
            watch_progress(page, key)
            shots.take(page, "django-running")

        page.goto(base + URL + "dead-letters")
        letter = page.locator("tr[data-letter]").first
        assert "unknown task 'phantom'" in letter.inner_text()
        shots.take(page, "django-dead-letters")
        click_and_see(page, letter, "Requeue", "Requeued 1 of 1")
        page.goto(base + URL + "task?key=phantom-1")
        assert page.locator("h1 .dd-state").inner_text() == "queued"

        page.goto(base + URL)
        shots.take(page, "django-overview")
    assert all(path.stat().st_size > 10_000 for path in shots.taken)

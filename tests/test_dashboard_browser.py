"""The ASGI dashboard in a real Chromium, against a real Redis: a Starlette app with its
own login page mounts ``dashboard(auth=...)`` and runs an embedded worker. The test logs
in, watches a running task's progress move without a reload, cancels a task, requeues
a dead letter, retries a failure, adds and lifts a strike, and screenshots each page
(kept in docs/images by ``make screenshots``)."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl

import pytest
from _browser import (
    Screenshots,
    browser,
    click_and_see,
    page_of,
    run_aside,
    served,
    wait_until,
    watch_progress,
)
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

import docket_starlette as ds
from docket import Docket, Logged, Progress, Worker

pytestmark = pytest.mark.timeout(120)

USER, PASSWORD = "ops", "correct horse"


async def crunch(steps: Annotated[int, Logged], progress: Progress = Progress()) -> None:
    await progress.set_total(steps)
    for _ in range(steps):
        await asyncio.sleep(0.2)
        await progress.increment()
        await progress.set_message("crunching numbers")


async def send_invoice(customer: Annotated[str, Logged], amount: int) -> None: ...


async def explode(reason: Annotated[str, Logged]) -> None:
    raise ConnectionError(f"payment gateway said: {reason}")


TASKS = [crunch, send_invoice, explode]


class Shop:
    """The app under test: /login sets a session cookie; the dashboard at /ops lets
    only a logged-in user in, and sends anyone else to /login."""

    def __init__(self, url: str, name: str) -> None:
        self.url, self.name = url, name
        self.sessions: set[str] = set()

    async def login(self, request: Request) -> Response:
        if request.method == "POST":
            form = dict(parse_qsl((await request.body()).decode()))
            if form.get("username") == USER and form.get("password") == PASSWORD:
                token = secrets.token_urlsafe(16)
                self.sessions.add(token)
                response = RedirectResponse("/ops/", status_code=303)
                response.set_cookie("session", token, httponly=True, samesite="lax")
                return response
            return HTMLResponse("<p id='wrong'>Wrong username or password</p>", 401)
        return HTMLResponse(
            "<form method='post'><input name='username'><input name='password' "
            "type='password'><button type='submit'>Log in</button></form>"
        )

    def auth(self, request: Request) -> ds.Access:
        if request.cookies.get("session") in self.sessions:
            return ds.Access.MANAGE
        raise HTTPException(303, "Log in first", headers={"Location": "/login"})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/login", self.login, methods=["GET", "POST"]),
                Mount("/ops", ds.dashboard(auth=self.auth, title="Shop tasks")),
            ],
            lifespan=ds.docket_lifespan(
                url=self.url,
                name=self.name,
                tasks=TASKS,
                worker=ds.WorkerOptions(
                    concurrency=2,
                    minimum_check_interval=timedelta(milliseconds=20),
                    scheduling_resolution=timedelta(milliseconds=20),
                    grace_period=timedelta(seconds=1),
                ),
            ),
        )

    def docket(self) -> Docket:
        docket = Docket(self.name, self.url)
        for task in TASKS:
            docket.register(task)
        return docket

    def using(self, action: Callable[[Docket], Awaitable[Any]]) -> Any:
        async def go() -> Any:
            async with self.docket() as docket:
                return await action(docket)

        return run_aside(go)


@pytest.fixture
def shop(redis_url: str) -> Iterator[Shop]:
    shop = Shop(redis_url, f"shop-{uuid.uuid4().hex[:10]}")
    yield shop
    shop.using(lambda docket: docket.clear())


def test_the_asgi_dashboard_in_chromium(shop: Shop, tmp_path: Path) -> None:
    async def dead_letter(docket: Docket) -> str:
        # A worker deployed without send_invoice dead-letters its message.
        await docket.add(send_invoice, key="invoice-42")("ACME Corp", 1200)
        del docket.tasks["send_invoice"]
        async with Worker(docket, minimum_check_interval=timedelta(milliseconds=5)) as w:
            await w.run_until_finished()
        return "invoice-42"

    shop.using(dead_letter)
    shots = Screenshots(tmp_path / "screenshots")
    with served(shop.app()) as base, browser() as chromium, page_of(chromium) as page:
        # Not logged in: sent to the app's own login page, then back.
        page.goto(f"{base}/ops/")
        assert page.url == f"{base}/login"
        page.fill("input[name=username]", USER)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/ops/")
        assert page.locator(".dd-brand").inner_text() == "Shop tasks"

        async def work(docket: Docket) -> None:
            await docket.add(crunch, key="crunch-report")(40)
            await docket.add(crunch, key="crunch-backfill")(30)
            for number in range(8):
                await docket.add(crunch, key=f"crunch-queued-{number}")(10)
            later = datetime.now(UTC) + timedelta(minutes=30)
            await docket.add(send_invoice, when=later, key="invoice-later")("Globex", 99)
            await docket.add(explode, key="charge-card-7")("card declined")

        shop.using(work)

        # The running list: progress moves on the page, without a reload.
        page.goto(f"{base}/ops/running")
        watch_progress(page, "crunch-report")
        shots.take(page, "dashboard-running")

        page.goto(f"{base}/ops/queued")
        page.locator("tr[data-key^='crunch-queued']").first.wait_for()
        shots.take(page, "dashboard-queued")

        # Cancel the scheduled invoice.
        page.goto(f"{base}/ops/scheduled")
        row = page.locator("tr[data-key='invoice-later']")
        assert "in 29 min" in row.inner_text()
        shots.take(page, "dashboard-scheduled")
        click_and_see(page, row, "Cancel", "Cancelled send_invoice 'invoice-later'")
        assert "/ops/scheduled?" in page.url
        assert page.locator("tr[data-key='invoice-later']").count() == 0

        # Requeue the dead letter: this app's worker knows send_invoice, so it runs.
        page.goto(f"{base}/ops/dead-letters")
        letter = page.locator("tr[data-letter]").first
        assert "unknown task 'send_invoice'" in letter.inner_text()
        shots.take(page, "dashboard-dead-letters")
        click_and_see(page, letter, "Requeue", "Requeued 1 of 1")
        assert page.locator("tr[data-letter]").count() == 0
        page.goto(f"{base}/ops/task?key=invoice-42")
        wait_until(
            lambda: (
                page.reload() is not None
                and "completed" in page.locator("h1 .dd-state").inner_text()
            ),
            "the requeued invoice ran",
        )

        # The failure, its traceback, and Retry.
        page.goto(f"{base}/ops/failures")
        failure = page.locator("tr[data-failure]").first
        failure.wait_for()
        assert "ConnectionError: payment gateway said: card declined" in failure.inner_text()
        failure.locator("summary").click()
        assert "in explode" in failure.locator("pre").inner_text()
        shots.take(page, "dashboard-failures")
        page.goto(f"{base}/ops/task?key=charge-card-7")
        assert "Traceback (most recent call last)" in page.locator(".dd-traceback").inner_text()
        assert "'card declined'" in page.locator(".dd-args").inner_text()
        shots.take(page, "dashboard-task")
        click_and_see(page, page.locator(".dd-failure"), "Retry", "Retried 1 of 1")

        # A strike added from the form, then lifted.
        page.goto(f"{base}/ops/strikes")
        page.fill(".dd-strike-form input[name=function]", "send_invoice")
        page.fill(".dd-strike-form input[name=parameter]", "customer")
        page.fill(".dd-strike-form input[name=value]", "str:Initech")
        click_and_see(page, page.locator(".dd-strike-form"), "Strike", "Struck send_invoice")
        strike = page.locator("tr[data-strike]")
        assert "'Initech'" in strike.inner_text()
        shots.take(page, "dashboard-strikes")
        click_and_see(page, strike, "Lift", "Lifted")
        assert page.locator("tr[data-strike]").count() == 0

        # The overview last, when its chart has a few samples.
        page.goto(f"{base}/ops/")
        page.locator("tr[data-worker]").first.wait_for()
        wait_until(lambda: page.locator("polyline").count() == 3, "the depth chart has samples", 30)
        shots.take(page, "dashboard-overview")
    assert all(path.stat().st_size > 10_000 for path in shots.taken)

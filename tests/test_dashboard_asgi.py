"""The dashboard mounted in a Starlette app (``docket_starlette.dashboard``), through
Starlette's test client against a real Redis: it refuses to be built without auth,
follows the auth's verdict page by page and action by action, checks CSRF on every
action, and its pages show what the docket holds."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Mount
from starlette.testclient import TestClient

import docket_starlette as ds
from docket import Docket, ExecutionState, Logged, Worker
from docket.dead_letters import count_dead_letters, list_dead_letters
from docket.failures import count_failures, list_failures

pytestmark = pytest.mark.timeout(60)


async def email(address: Annotated[str, Logged], password: str) -> None: ...


async def explode(reason: Annotated[str, Logged]) -> None:
    raise RuntimeError(f"boom: {reason}")


def run[T](coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


class Site:
    """An app with the dashboard at /ops, and a second Docket on the same Redis for the
    test to add tasks and run workers with (the app's runs in the client's thread)."""

    def __init__(self, url: str, name: str, access: list[Any]) -> None:
        self.url, self.name, self.access = url, name, access

    def docket(self) -> Docket:
        docket = Docket(self.name, self.url)
        docket.register(email)
        docket.register(explode)
        return docket

    def add(self, *calls: tuple[Callable[..., Any], str, tuple[Any, ...], datetime | None]) -> None:
        async def go() -> None:
            async with self.docket() as docket:
                for function, key, args, when in calls:
                    await docket.add(function, key=key, when=when)(*args)

        run(go())

    def work(self) -> None:
        async def go() -> None:
            async with (
                self.docket() as docket,
                Worker(docket, minimum_check_interval=timedelta(milliseconds=5)) as worker,
            ):
                await worker.run_until_finished()

        run(go())

    def read[T](self, reader: Callable[[Docket], Coroutine[Any, Any, T]]) -> T:
        async def go() -> T:
            async with self.docket() as docket:
                return await reader(docket)

        return run(go())


@pytest.fixture
def site(redis_url: str) -> Site:
    return Site(redis_url, f"dash-{uuid.uuid4().hex[:10]}", [ds.Access.MANAGE])


@pytest.fixture
def client(site: Site) -> Iterator[TestClient]:
    def auth(request: Request) -> Any:
        verdict = site.access[0]
        if isinstance(verdict, Exception):
            raise verdict
        return verdict

    app = Starlette(
        routes=[Mount("/ops", ds.dashboard(auth=auth))],
        lifespan=ds.docket_lifespan(url=site.url, name=site.name, tasks=[email, explode]),
    )
    with TestClient(app, base_url="http://testserver") as test_client:
        yield test_client


def _token(client: TestClient) -> str:
    html = client.get("/ops/").text
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    if found is None:  # a page without forms: the cookie alone holds it
        return client.cookies["docket_dashboard_csrf"]
    return found.group(1)


def test_it_will_not_be_built_without_auth() -> None:
    with pytest.raises(ds.DashboardAuthError, match="insecure=True"):
        ds.dashboard()
    with pytest.raises(ds.DashboardAuthError, match="callable"):
        ds.dashboard(auth="admin")  # type: ignore[arg-type]
    assert ds.dashboard(insecure=True) is not None


def test_the_auth_verdict_decides_who_sees_it(site: Site, client: TestClient) -> None:
    site.access[0] = False
    response = client.get("/ops/")
    assert response.status_code == 403
    assert "not allowed" in response.text
    site.access[0] = HTTPException(401, "Log in first", headers={"WWW-Authenticate": "Basic"})
    response = client.get("/ops/queued")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Basic"
    site.access[0] = ds.Access.VIEW
    assert client.get("/ops/").status_code == 200


def test_pages_show_the_docket(site: Site, client: TestClient) -> None:
    later = datetime.now(UTC) + timedelta(minutes=5)
    site.add(
        (email, "welcome-ada", ("ada@example.com", "hunter2"), None),
        (email, "remind-bob", ("bob@example.com", "s3cret"), later),
    )
    overview = client.get("/ops/")
    assert overview.status_code == 200
    assert re.search(r'data-count="queued">1<', overview.text)
    assert re.search(r'data-count="scheduled">1<', overview.text)
    for header, value in {
        "x-frame-options": "DENY",
        "x-content-type-options": "nosniff",
    }.items():
        assert overview.headers[header] == value
    assert "script-src 'self'" in overview.headers["content-security-policy"]

    queued = client.get("/ops/queued").text
    assert "welcome-ada" in queued and "remind-bob" not in queued
    scheduled = client.get("/ops/scheduled").text
    assert "remind-bob" in scheduled and "in 4 min" in scheduled

    task = client.get("/ops/task", params={"key": "welcome-ada"})
    assert task.status_code == 200
    assert "&#39;ada@example.com&#39;" in task.text  # Logged: shown
    assert "hunter2" not in task.text  # not Logged: hidden
    assert "hidden (not Logged)" in task.text

    missing = client.get("/ops/task", params={"key": "nope"})
    assert missing.status_code == 404 and "No task with key" in missing.text
    assert client.get("/ops/queued", params={"size": "7"}).status_code == 400
    assert client.get("/ops/no-such-page").status_code == 404
    assert (
        client.get("/ops/static/dashboard.js").headers["content-type"].startswith("text/javascript")
    )


def test_live_refresh_gets_the_content_only(site: Site, client: TestClient) -> None:
    site.add((email, "fragment", ("a@example.com", "x"), None))
    whole = client.get("/ops/queued").text
    part = client.get("/ops/queued", headers={"X-Docket-Fragment": "1"}).text
    assert "<html" in whole and "<html" not in part
    assert "fragment" in part and 'id="docket-main"' not in part


def test_pages_of_many_tasks(site: Site, client: TestClient) -> None:
    site.add(*[(email, f"bulk-{n:03}", (f"{n}@example.com", "x"), None) for n in range(60)])
    first = client.get("/ops/queued", params={"size": "25"}).text
    assert first.count('class="dd-key" href') == 25
    next_url = re.search(r'href="([^"]+)" rel="next"', first)
    assert next_url is not None
    second = client.get(next_url.group(1).replace("&amp;", "&")).text
    assert "bulk-025" in second and "bulk-024" not in second
    filtered = client.get("/ops/queued", params={"task": "explode"}).text
    assert "No queued explode tasks" in filtered


def test_viewers_cannot_act(site: Site, client: TestClient) -> None:
    site.add((email, "keep-me", ("a@example.com", "x"), None))
    site.access[0] = ds.Access.VIEW
    page = client.get("/ops/queued").text
    assert 'name="action"' not in page
    token = client.cookies["docket_dashboard_csrf"]
    response = client.post(
        "/ops/action", data={"action": "cancel", "key": "keep-me", "csrf_token": token}
    )
    assert response.status_code == 403
    execution = site.read(lambda docket: docket.get_execution("keep-me"))
    assert execution is not None and execution.state == ExecutionState.QUEUED


def test_actions_need_the_csrf_token_and_this_origin(site: Site, client: TestClient) -> None:
    site.add((email, "guarded", ("a@example.com", "x"), None))
    token = _token(client)
    form = {"action": "cancel", "key": "guarded", "next": "/ops/queued"}
    assert client.post("/ops/action", data=form).status_code == 403
    assert client.post("/ops/action", data={**form, "csrf_token": "forged"}).status_code == 403
    foreign = client.post(
        "/ops/action",
        data={**form, "csrf_token": token},
        headers={"Origin": "https://evil.example"},
    )
    assert foreign.status_code == 403 and "evil.example" in foreign.text
    execution = site.read(lambda docket: docket.get_execution("guarded"))
    assert execution is not None and execution.state == ExecutionState.QUEUED

    done = client.post(
        "/ops/action",
        data={**form, "csrf_token": token},
        headers={"Origin": "http://testserver"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert done.headers["location"].startswith("/ops/queued?done=Cancelled")
    execution = site.read(lambda docket: docket.get_execution("guarded"))
    assert execution is not None and execution.state == ExecutionState.CANCELLED


def test_a_redirect_never_leaves_the_dashboard(site: Site, client: TestClient) -> None:
    site.add((email, "x1", ("a@example.com", "x"), None))
    token = _token(client)
    response = client.post(
        "/ops/action",
        data={
            "action": "cancel",
            "key": "x1",
            "next": "https://evil.example/",
            "csrf_token": token,
        },
        follow_redirects=False,
    )
    assert response.headers["location"].startswith("/ops/?done=")


def test_failures_show_the_traceback_and_retry(site: Site, client: TestClient) -> None:
    site.add((explode, "kaboom", ("disk full",), None))
    site.work()
    page = client.get("/ops/failures").text
    assert "kaboom" in page and "RuntimeError: boom: disk full" in page
    assert "in explode" in page  # the traceback names the raising function
    task = client.get("/ops/task", params={"key": "kaboom"}).text
    assert "Traceback (most recent call last)" in task and 'value="retry"' in task
    [failure] = site.read(lambda docket: list_failures(docket))
    token = _token(client)
    retried = client.post(
        "/ops/action",
        data={"action": "retry", "ids": failure.id, "csrf_token": token, "next": "/ops/failures"},
        follow_redirects=False,
    )
    assert retried.status_code == 303 and "Retried+1+of+1" in retried.headers["location"]
    assert site.read(count_failures) == 0
    execution = site.read(lambda docket: docket.get_execution("kaboom"))
    assert execution is not None and execution.state == ExecutionState.QUEUED


def test_dead_letters_requeue_and_purge(site: Site, client: TestClient) -> None:
    async def unknown_task(docket: Docket) -> None:
        # A worker that does not know the task dead-letters its message.
        await docket.add(email, key="lost-1")("a@example.com", "x")
        await docket.add(email, key="lost-2")("b@example.com", "x")
        del docket.tasks["email"]
        async with Worker(docket, minimum_check_interval=timedelta(milliseconds=5)) as worker:
            await worker.run_until_finished()

    site.read(unknown_task)
    page = client.get("/ops/dead-letters").text
    assert "unknown task &#39;email&#39;" in page and "lost-1" in page
    first, second = site.read(lambda docket: list_dead_letters(docket))
    token = _token(client)
    requeued = client.post(
        "/ops/action",
        data={"action": "requeue", "ids": first.id, "csrf_token": token},
        follow_redirects=False,
    )
    assert "Requeued+1+of+1" in requeued.headers["location"]
    purged = client.post(
        "/ops/action",
        data={"action": "purge", "ids": second.id, "csrf_token": token},
        follow_redirects=False,
    )
    assert "Purged+1+of+1" in purged.headers["location"]
    assert site.read(count_dead_letters) == 0
    execution = site.read(lambda docket: docket.get_execution(first.key or ""))
    assert execution is not None and execution.state == ExecutionState.QUEUED


def test_strikes_are_added_and_lifted(site: Site, client: TestClient) -> None:
    token = _token(client)
    struck = client.post(
        "/ops/action",
        data={
            "action": "strike",
            "function": "email",
            "parameter": "address",
            "operator": "==",
            "value": "str:spam@example.com",
            "csrf_token": token,
            "next": "/ops/strikes",
        },
        follow_redirects=False,
    )
    assert "Struck" in struck.headers["location"]

    async def strikes(docket: Docket) -> list[str]:
        await docket.wait_for_strikes_loaded()
        return [str(condition) for condition in docket.strike_list.conditions]

    assert site.read(strikes) == ["email(address == 'spam@example.com')"]
    bad = client.post(
        "/ops/action",
        data={"action": "strike", "csrf_token": token, "next": "/ops/strikes"},
        follow_redirects=False,
    )
    assert "error=A+strike+needs" in bad.headers["location"]
    lifted = client.post(
        "/ops/action",
        data={
            "action": "lift",
            "strike": "email(address == 'spam@example.com')",
            "csrf_token": token,
        },
        follow_redirects=False,
    )
    assert "Lifted" in lifted.headers["location"]
    assert site.read(strikes) == []

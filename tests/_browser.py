"""A real browser for the dashboard's tests: Debian's Chromium (``/usr/bin/chromium``,
which ``.ci/run`` installs when it is missing), driven by Playwright pointed at it (no
browser download at run time).

Screenshots go to the test's temporary directory, or, with
``DOCKET_SCREENSHOTS=docs/images`` (``make screenshots``), to the docs' images."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

CHROMIUM = os.environ.get("DOCKET_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
WINDOW = {"width": 1280, "height": 860}


def chromium_or_skip() -> str:
    if not Path(CHROMIUM).exists():
        pytest.skip(
            "Chromium is not installed: `apt-get install chromium chromium-driver` "
            "(.ci/run does it), or point DOCKET_CHROMIUM at a Chromium binary"
        )
    return CHROMIUM


@contextmanager
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    executable = chromium_or_skip()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            yield launched
        finally:
            launched.close()


@contextmanager
def page_of(launched: Browser) -> Iterator[Page]:
    context = launched.new_context(viewport=WINDOW)  # type: ignore[arg-type]
    page = context.new_page()
    # The dashboard asks before it cancels or purges; the test says yes.
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        yield page
    finally:
        context.close()


class Screenshots:
    def __init__(self, fallback: Path) -> None:
        chosen = os.environ.get("DOCKET_SCREENSHOTS")
        self.folder = Path(chosen) if chosen else fallback
        self.folder.mkdir(parents=True, exist_ok=True)
        self.taken: list[Path] = []

    def take(self, page: Page, name: str) -> Path:
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=False)
        self.taken.append(path)
        return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def served(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port, in a thread; its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="dashboard-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("the test's app server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


def run_aside[T](make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to its end on a thread of its own: Playwright's sync API keeps an
    event loop running on the test's thread, where ``asyncio.run`` is refused."""
    results: list[T] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            results.append(asyncio.run(make()))
        except BaseException as error:  # handed to the test's thread
            errors.append(error)

    thread = threading.Thread(target=go, name="test-docket")
    thread.start()
    thread.join(60)
    if errors:
        raise errors[0]
    if not results:
        raise AssertionError("the test's docket call did not finish in 60 s")
    return results[0]


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.1)


def click_and_see(page: Page, within: Locator, button: str, flash: str) -> None:
    """Press ``button`` inside ``within`` (a row, a form) and wait for the page it leads
    back to to say ``flash`` (what was done)."""
    with page.expect_navigation():
        within.locator("button", has_text=button).first.click()
    said = page.locator(".dd-flash").inner_text()
    assert flash in said, f"pressed {button!r}; the page said {said!r}"


def watch_progress(page: Page, key: str) -> None:
    """Wait until the progress bar of running task ``key`` moves on the open page,
    and check the page did it without a reload (its live refresh)."""
    page.evaluate("window.__not_reloaded = true")
    bar = page.locator(f"tr[data-key='{key}'] progress")
    bar.wait_for(timeout=15_000)
    first = int(bar.get_attribute("value") or 0)
    wait_until(lambda: int(bar.get_attribute("value") or 0) > first, "the progress bar moved")
    assert page.evaluate("window.__not_reloaded") is True

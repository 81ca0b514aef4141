"""The examples, as the docs use them: TestClient, memory://, run_tasks."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from docket_starlette.testing import run_tasks

EXAMPLES = str(Path(__file__).resolve().parent.parent / "examples")


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    monkeypatch.syspath_prepend(EXAMPLES)
    monkeypatch.setenv("DOCKET_EMBEDDED", "0")
    monkeypatch.setenv("NOTES_DB", str(tmp_path / "notes.db"))
    monkeypatch.delenv("DOCKET_URL", raising=False)

    def load(name: str) -> Any:
        for module in [m for m in sys.modules if m.split(".")[0] == name.split(".")[0]]:
            del sys.modules[module]
        return importlib.import_module(name).app

    yield load


def test_starlette_example(example: Any) -> None:
    app = example("starlette_app.main")
    with TestClient(app) as client:
        client.post("/hello/ann", headers={"accept-language": "fr"})
        run_tasks(client)
        assert client.get("/sent").json() == ["Bonjour, ann!"]


def test_fastapi_example_with_an_override(example: Any) -> None:
    app = example("fastapi_app.main")
    db_module = sys.modules["fastapi_app.db"]
    closed: list[bool] = []

    def tracking_db() -> Iterator[Any]:
        yield from db_module.get_db()
        closed.append(True)

    app.dependency_overrides[db_module.get_db] = tracking_db
    with TestClient(app) as client:
        note = client.post(
            "/notes", json={"text": "a b c d e f"}, headers={"accept-language": "it"}
        ).json()
        closed.clear()
        run_tasks(client)
        assert closed == [True]  # the task's (overridden) yield dependency closed
        stored = client.get(f"/notes/{note['id']}").json()
    assert stored["summary"] == "A B C D E"
    assert stored["language"] == "it"
    assert stored["request_id"]

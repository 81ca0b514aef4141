"""Django tests: settings are configured here, programmatically, so the rest of the
suite never sees DJANGO_SETTINGS_MODULE. Each xdist worker gets its own test database
(pytest-django suffixes the name with the worker id)."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

if not settings.configured:
    import djtest_settings

    settings.configure(
        **{name: getattr(djtest_settings, name) for name in dir(djtest_settings) if name.isupper()}
    )
    django.setup()


class _NestedPytestGuard:
    """In-process ``pytester`` sessions elsewhere in the suite load pytest-django too; as
    Django is configured in this process, their session would call
    ``setup_test_environment()`` a second time. Hand it over for the nested session."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Any:
        from django.test.utils import setup_test_environment, teardown_test_environment

        nested = "pytester" in getattr(item, "fixturenames", ())
        if nested:
            teardown_test_environment()
        try:
            return (yield)
        finally:
            if nested:
                setup_test_environment()


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("docket-django-nested-guard"):
        config.pluginmanager.register(_NestedPytestGuard(), "docket-django-nested-guard")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.timeout(120))


@pytest.fixture
def docket_setting(redis_url: str, settings: Any) -> dict[str, Any]:
    """DOCKET on this process's private Redis, with a docket name of this test's own."""
    name = f"dj-{uuid.uuid4().hex[:12]}"
    settings.DOCKET = {
        "URL": redis_url,
        "NAME": name,
        "WORKER": {"MINIMUM_CHECK_INTERVAL": 0.01, "SCHEDULING_RESOLUTION": 0.01},
    }
    return dict(settings.DOCKET)


@pytest.fixture
def subprocess_env(docket_setting: dict[str, Any]) -> Iterator[dict[str, str]]:
    """Environment for a manage.py-like subprocess on this test's docket and database."""
    from django.db import connection

    env = dict(os.environ)
    env.pop("DOCKET_URL", None)
    env.update(
        DJANGO_SETTINGS_MODULE="djtest_settings",
        PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent.parent)]),
        DOCKET_URL=docket_setting["URL"],
        DJTEST_DOCKET_NAME=docket_setting["NAME"],
        DJTEST_DB_NAME=connection.settings_dict["NAME"],
    )
    yield env

"""Settings, get_docket, autodiscovery, checks, the task decorator, signing, transactions."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from _helpers import portal_execution
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

import docket_django
from docket import Docket
from docket_django import conf
from docket_django.portal import get_portal


def test_single_docket_setting(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKET_URL", raising=False)
    settings.DOCKET = {"URL": "redis://example:6379/3", "NAME": "shop", "EXECUTION_TTL": 60}
    config = conf.docket_settings()
    assert (config.url, config.name, config.execution_ttl.total_seconds()) == (
        "redis://example:6379/3",
        "shop",
        60,
    )
    assert conf.aliases() == ["default"]


def test_aliases_and_env_override(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.DOCKET = {
        "default": {"URL": "redis://a/0"},
        "reports": {"URL": "redis://b/0", "WORKER": {"CONCURRENCY": 3}},
    }
    monkeypatch.setenv("DOCKET_URL", "redis://from-env/1")
    monkeypatch.setenv("DOCKET_URL_REPORTS", "redis://reports-env/2")
    conf.reset()
    assert conf.docket_settings("default").url == "redis://from-env/1"
    assert conf.docket_settings("default").name == "docket"
    reports = conf.docket_settings("reports")
    assert (reports.url, reports.name, reports.worker.concurrency) == (
        "redis://reports-env/2",
        "reports",
        3,
    )
    with pytest.raises(ImproperlyConfigured):
        conf.docket_settings("nope")


def test_the_partitions_setting_reaches_the_docket(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOCKET_PARTITIONS", raising=False)
    settings.DOCKET = {"URL": "redis://example:6379/3", "PARTITIONS": 4}
    conf.reset()
    assert docket_django.get_docket().partitions == 4
    settings.DOCKET = {"URL": "redis://example:6379/3"}
    conf.reset()
    assert docket_django.get_docket().partitions == 1
    monkeypatch.setenv("DOCKET_PARTITIONS", "2")
    assert docket_django.get_docket().partitions == 2
    settings.DOCKET = {"URL": "redis://example:6379/3", "PARTITIONS": 0}
    conf.reset()
    with pytest.raises(ImproperlyConfigured, match=r"\['PARTITIONS'\]: partitions must be"):
        conf.docket_settings()


def test_get_docket_is_lazy_and_configured(docket_setting: dict[str, Any]) -> None:
    docket = docket_django.get_docket()
    assert isinstance(docket, Docket)
    assert docket.name == docket_setting["NAME"]
    assert docket.url == docket_setting["URL"]
    assert "mark_done" in docket.tasks and "django_task" in docket.tasks
    assert docket.signing_key  # derived from SECRET_KEY


def test_signing_key_from_secret_key(settings: Any, docket_setting: dict[str, Any]) -> None:
    first = docket_django.get_docket().signing_key
    settings.SECRET_KEY = "another"
    assert docket_django.get_docket().signing_key != first
    settings.DOCKET = {**docket_setting, "SIGNING_KEY": "explicit"}
    assert docket_django.get_docket().signing_key == b"explicit"
    settings.DOCKET = {**docket_setting, "SIGNING_KEY": False}
    assert docket_django.get_docket().signing_key is None


def test_import_and_setup_touch_nothing() -> None:
    # A fresh interpreter: django.setup() (ready(), autodiscovery) with a DOCKET URL
    # and database that do not exist must succeed, and start no portal thread.
    code = (
        "import os, sys, threading, django;"
        "os.environ['DJANGO_SETTINGS_MODULE']='djtest_settings';"
        "os.environ['DJTEST_DB_NAME']='does_not_exist';"
        "django.setup();"
        "import docket_django.portal as p;"
        "from docket_django.registry import registrations;"
        "assert p._portal is None;"
        "assert {r.name for r in registrations()} >= {'mark_done', 'cleanup', 'listed_task'};"
        "assert not any(t.name == 'docket-django-portal' for t in threading.enumerate());"
        "print('ok')"
    )
    from pathlib import Path

    here = Path(__file__).parent
    env = {"PYTHONPATH": f"{here}:{here.parent.parent}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "ok", out.stderr


def test_autodiscovery_registered_tasks() -> None:
    from docket_django.discovery import discovered
    from docket_django.registry import tasks_for

    assert "djtestapp.tasks" in discovered
    assert {"mark_done", "confirm", "slow", "cleanup", "listed_task"} <= set(tasks_for("default"))


def test_configurable_task_module_names(settings: Any) -> None:
    from docket_django.discovery import autodiscover

    settings.DOCKET = {"TASK_MODULES": ["jobs"]}
    assert autodiscover() == ["djtestapp.jobs"]
    settings.DOCKET = {}
    assert "djtestapp.tasks" in autodiscover()


def test_checks_bad_settings(settings: Any) -> None:
    from docket_django.checks import check_settings

    settings.DOCKET = {"URL": "http://nope", "NAME": "bad name!", "TYPO": 1}
    errors = check_settings()
    assert [e.id for e in errors] == ["docket_django.E001"]
    settings.DOCKET = {"URL": "http://nope", "NAME": "bad name!"}
    ids = {e.id for e in check_settings()}
    assert {"docket_django.E002", "docket_django.E003"} <= ids


@contextmanager
def _registrations_restored() -> Iterator[None]:
    """Tasks registered inside are forgotten on the way out."""
    from docket_django import registry

    saved = (list(registry._registrations), {k: dict(v) for k, v in registry._by_alias.items()})
    try:
        yield
    finally:
        registry._registrations[:] = saved[0]
        registry._by_alias.clear()
        registry._by_alias.update(saved[1])


def test_checks_duplicate_task_names() -> None:
    from docket_django import registry
    from docket_django.checks import check_tasks

    with _registrations_restored():

        def mark_done(x: int) -> None: ...

        registry.register(mark_done)
        errors = check_tasks()
        ids = [e.id for e in errors]
        assert "docket_django.E010" in ids  # duplicate name
        assert "docket_django.E011" in ids  # not module level
    assert check_tasks() == []


def test_redis_checked_only_under_deploy(settings: Any) -> None:
    settings.DOCKET = {"URL": "redis://127.0.0.1:1/0"}
    normal = checks.run_checks(tags=["docket"])
    assert not [m for m in normal if m.id == "docket_django.E020"]
    deploy = checks.run_checks(tags=["docket"], include_deployment_checks=True)
    assert [m for m in deploy if m.id == "docket_django.E020"]


def test_decorator_options() -> None:
    from djtestapp import tasks

    from docket import Perpetual, Retry, Timeout
    from docket.dependencies import get_single_dependency_parameter_of_type

    retry = get_single_dependency_parameter_of_type(tasks.confirm.runnable, Retry)
    assert retry is not None and retry.attempts == 2
    timeout = get_single_dependency_parameter_of_type(tasks.slow.runnable, Timeout)
    assert timeout is not None
    assert isinstance(
        getattr(tasks.cleanup.runnable, "__docket_perpetual__", None)
        or _perpetual_of(tasks.cleanup.runnable),
        Perpetual,
    )
    assert tasks.confirm._key_for(None, (), {"order_id": 5}) == "confirm-5"


def test_decorator_cron_option() -> None:
    import docket_django
    from docket import Cron
    from docket.dependencies import get_perpetual
    from docket_django import registry

    @docket_django.task(name="every_five_minutes", cron="*/5 * * * *")
    async def every_five_minutes() -> None: ...

    try:
        schedule = get_perpetual(every_five_minutes.runnable)
        assert isinstance(schedule, Cron)
        assert schedule.expression == "*/5 * * * *"
        assert schedule.automatic
    finally:
        # An automatic task left registered would keep other tests' workers busy forever.
        registry._by_alias["default"].pop("every_five_minutes", None)


def test_decorator_queue_option(settings: Any, redis_url: str) -> None:
    import docket_django
    from docket_django import registry
    from docket_django.checks import check_tasks

    settings.DOCKET = {
        "default": {"URL": redis_url, "NAME": f"d-{uuid.uuid4().hex[:8]}"},
        "reports": {"URL": redis_url, "NAME": f"r-{uuid.uuid4().hex[:8]}"},
    }
    with _registrations_restored():

        @docket_django.task(name="report_on_reports_queue", queue="reports")
        def report_on_reports_queue() -> str:
            return "r"

        @docket_django.task(name="task_on_unknown_queue", queue="nowhere")
        def task_on_unknown_queue() -> str:
            return "n"

        assert report_on_reports_queue.alias == "reports"
        assert "report_on_reports_queue" in registry.tasks_for("reports")
        assert "report_on_reports_queue" not in registry.tasks_for("default")

        key = report_on_reports_queue.schedule(delay=timedelta(hours=1), on_commit=False)
        assert portal_execution("reports", key) is not None
        assert portal_execution("default", key) is None

        # An unknown alias: flagged by the system checks, refused at enqueue time.
        errors = [e for e in check_tasks() if e.id == "docket_django.E012"]
        assert any("task_on_unknown_queue" in e.msg and "nowhere" in e.msg for e in errors)
        assert not any("report_on_reports_queue" in e.msg for e in errors)
        with pytest.raises(ImproperlyConfigured, match="nowhere"):
            task_on_unknown_queue.enqueue()


def _perpetual_of(function: Any) -> Any:
    from docket.dependencies._declarations import PERPETUAL_ATTRIBUTE

    return getattr(function, PERPETUAL_ATTRIBUTE, None)


# -- transactions ------------------------------------------------------------------


async def _waiting(alias: str = "default") -> list[str]:
    docket = await get_portal().docket(alias)
    snapshot = await docket.snapshot()
    return [e.key for e in snapshot.future]


def waiting() -> list[str]:
    return get_portal().run(_waiting())


@pytest.mark.django_db(transaction=True)
def test_enqueue_in_atomic_waits_for_commit(docket_setting: dict[str, Any]) -> None:
    from djtestapp.models import Order
    from djtestapp.tasks import mark_done

    with transaction.atomic():
        order = Order.objects.create(item="book")
        key = mark_done.enqueue(order.pk)
        assert isinstance(key, str) and key
        assert key not in waiting()
    assert key in waiting()


@pytest.mark.django_db(transaction=True)
def test_enqueue_rolled_back_never_lands(docket_setting: dict[str, Any]) -> None:
    from djtestapp.tasks import mark_done

    class Boom(Exception):
        pass

    with pytest.raises(Boom), transaction.atomic():
        key = mark_done.enqueue(1)
        raise Boom
    assert key not in waiting()


@pytest.mark.django_db(transaction=True)
def test_immediate_mode(docket_setting: dict[str, Any]) -> None:
    from djtestapp.tasks import mark_done

    with transaction.atomic():
        first = mark_done.schedule(1, on_commit=False)
        with docket_django.immediate():
            second = mark_done.enqueue(2)
        assert {first, second} <= set(waiting())


@pytest.mark.django_db(transaction=True)
def test_backend_enqueue_waits_for_commit(docket_setting: dict[str, Any]) -> None:
    from django.tasks.exceptions import TaskResultDoesNotExist
    from djtestapp.jobs import add

    with transaction.atomic():
        result = add.enqueue(1, 2)
        with pytest.raises(TaskResultDoesNotExist):
            add.get_result(result.id)
    assert add.get_result(result.id).status == "READY"
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        rolled = add.enqueue(3, 4)
        1 / 0  # noqa: B018
    with pytest.raises(TaskResultDoesNotExist):
        add.get_result(rolled.id)


async def test_aenqueue_docket_api(docket_setting: dict[str, Any]) -> None:
    from djtestapp.tasks import confirm

    execution = await confirm.aenqueue(order_id=9)
    assert execution.key == "confirm-9"
    assert "confirm-9" in await get_portal().arun(_waiting())
    await asyncio.sleep(0)

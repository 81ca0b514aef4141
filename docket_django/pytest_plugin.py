"""pytest fixtures for projects using pytest-django::

# conftest.py
pytest_plugins = ["docket_django.pytest_plugin"]

def test_receipt(docket_memory, django_capture_on_commit_callbacks, db):
    with django_capture_on_commit_callbacks(execute=True):
        place_order(...)
    docket_memory.assert_task_scheduled(send_receipt)
    docket_memory.run_pending()
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import DocketTestRunner, memory_dockets


@pytest.fixture
def docket_memory(settings: object) -> Iterator[DocketTestRunner]:
    """Every ``DOCKET`` alias on its own ``memory://`` engine for this test; the value
    runs and inspects tasks (``run_pending``, ``assert_task_scheduled``...)."""
    with memory_dockets() as runner:
        yield runner

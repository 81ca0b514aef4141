"""The click exceptions that typer raises, from wherever this typer keeps click.

typer re-exports ``BadParameter`` but not its relatives. Since 0.26 typer carries its
own copy of click (``typer._click``), whose classes are not the ``click`` package's;
older typers raise click's own.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import typer

__all__ = ["ClickException", "MissingParameter", "NoArgsIsHelpError"]


def _exceptions_module() -> ModuleType:
    try:
        return importlib.import_module("typer._click.exceptions")
    except ImportError:  # pragma: no cover - typer < 0.26
        return importlib.import_module("click.exceptions")


_module = _exceptions_module()
ClickException: type[Exception] = _module.ClickException
MissingParameter: type[typer.BadParameter] = _module.MissingParameter
# click < 8.2 shows the help of a bare command and exits without raising anything.
NoArgsIsHelpError: type[Exception] | None = getattr(_module, "NoArgsIsHelpError", None)

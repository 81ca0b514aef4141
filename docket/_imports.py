"""The one reader of ``package.module:name`` paths (task collections, fallback tasks,
worker dependencies, apps), so every entry point accepts the same forms and fails with
the same words."""

from __future__ import annotations

import importlib
from typing import Any


class ImportPathError(ValueError):
    """A ``module:name`` path that is malformed or does not lead to an object."""

    def __init__(self, message: str, missing_module: str | None = None) -> None:
        super().__init__(message)
        self.missing_module = missing_module
        """The module that does not exist, when that is what went wrong."""


def import_object(path: str, what: str) -> Any:
    """The object at ``package.module:name``; ``name`` may be dotted
    (``module:Class.attribute``) and may end in ``()`` to call what it names with no
    arguments (an app factory). ``what`` says what the path is for, in the errors."""
    module_name, colon, member = path.partition(":")
    if not colon or not module_name or not member:
        raise ImportPathError(f"{what} {path!r} must look like 'package.module:name'")
    call = member.endswith("()")
    attributes = member.removesuffix("()")
    try:
        found: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or module_name
        if module_name != missing and not module_name.startswith(missing + "."):
            raise  # the module exists; something it imports does not
        raise ImportPathError(
            f"cannot import {what} {path!r}: there is no module named {missing!r}", missing
        ) from None
    for part in attributes.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ImportPathError(
                f"cannot import {what} {path!r}: module {module_name!r} has no {attributes!r}"
            ) from None
    return found() if call else found

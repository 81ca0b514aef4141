"""Strikes, under the module name the released docket gave them.

``StrikeList`` is the set of strikes a Docket keeps in sync with Redis (its
``strike_list``); ``Strike`` and ``Restore`` are changes to apply to one with
``update()``. See ``docket.strikes`` for the conditions themselves.
"""

from .strikes import (
    LiteralOperator,
    Operator,
    Restore,
    Strike,
    StrikeCondition,
    StrikeInstruction,
    StrikeList,
)

__all__ = [
    "LiteralOperator",
    "Operator",
    "Restore",
    "Strike",
    "StrikeCondition",
    "StrikeInstruction",
    "StrikeList",
]

"""Redis hands back bytes, or str when a script or the memory backend built the reply."""

from __future__ import annotations

__all__ = ["as_text"]


def as_text(value: bytes | str | None) -> str | None:
    """``value`` as text (UTF-8), ``None`` staying ``None``."""
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value

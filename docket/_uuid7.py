"""Time-ordered UUIDs (RFC 9562 version 7) for default task keys."""

from __future__ import annotations

import os
import time


def uuid7_str() -> str:
    milliseconds = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (milliseconds & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    # Formatted by hand: building a uuid.UUID to print it costs twice the rest.
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"

"""Turning a stream entry back into a call, refusing anything that is not safe to run.

Every check that can fail raises ``PoisonMessage`` with a reason written for the person
reading the dead-letter stream; nothing else escapes, so one bad entry can never take a
worker (or a snapshot) down.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, NamedTuple

from . import serialization

if TYPE_CHECKING:
    from .docket import Docket

REQUIRED_FIELDS = (b"key", b"gen", b"function", b"when", b"attempt", b"payload")
_REQUIRED = frozenset(REQUIRED_FIELDS)
# datetime cannot represent anything from year 10000 on.
_LATEST_TIMESTAMP = 253402300800.0


class PoisonMessage(Exception):
    """A stream entry that can never run; the reason goes to the dead-letter stream."""


class MessageFields(NamedTuple):
    # A named tuple: built for every message a worker reads, and cheaper to make than
    # a frozen dataclass.
    key: str
    function_name: str
    generation: int
    when: float
    attempt: int
    serializer: str
    payload: bytes
    signature: str
    trace: bytes | None
    meta: bytes = b""
    """The run's integration metadata as sent (JSON text; empty for none)."""


def _text_field(fields: dict[bytes, bytes], name: bytes) -> str:
    try:
        value = fields[name].decode()
    except UnicodeDecodeError:
        raise PoisonMessage(f"field {name.decode()!r} is not valid UTF-8") from None
    if not value:
        raise PoisonMessage(f"field {name.decode()!r} is empty")
    return value


def _int_field(fields: dict[bytes, bytes], name: bytes) -> int:
    raw = fields[name]
    try:
        return int(raw)
    except ValueError:
        raise PoisonMessage(f"field {name.decode()!r} is not an integer: {raw[:40]!r}") from None


def parse_fields(fields: dict[bytes, bytes]) -> MessageFields:
    if not _REQUIRED.issubset(fields):
        missing = [f.decode() for f in REQUIRED_FIELDS if f not in fields]
        raise PoisonMessage(f"missing field(s): {', '.join(missing)}")
    key = _text_field(fields, b"key")
    function_name = _text_field(fields, b"function")
    generation = _int_field(fields, b"gen")
    attempt = _int_field(fields, b"attempt")
    if attempt < 1:
        raise PoisonMessage(f"field 'attempt' must be at least 1, got {attempt}")
    raw_when = fields[b"when"]
    try:
        when = float(raw_when)
    except ValueError:
        raise PoisonMessage(f"field 'when' is not a timestamp: {raw_when[:40]!r}") from None
    if not math.isfinite(when) or not 0 <= when < _LATEST_TIMESTAMP:
        raise PoisonMessage(f"field 'when' is not a usable time: {raw_when[:40]!r}")
    serializer = (fields.get(b"ser") or b"pickle").decode(errors="replace")
    signature = (fields.get(b"sig") or b"").decode(errors="replace")
    return MessageFields(
        key,
        function_name,
        generation,
        when,
        attempt,
        serializer,
        fields[b"payload"],
        signature,
        fields.get(b"trace"),
        fields.get(b"meta") or b"",
    )


def open_payload(
    docket: Docket,
    function_name: str,
    key: str,
    serializer_name: str,
    payload: bytes,
    signature: str,
    meta: bytes = b"",
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Verify, then deserialize. The order matters: nothing is unpickled before the
    serializer is one this docket accepts and the signature (if required) matches."""
    # JSON cannot run code, so any docket reads it; pickle only on a pickle docket.
    if serializer_name not in (docket.serializer.name, "json"):
        raise PoisonMessage(
            f"payload uses the {serializer_name[:20]!r} serializer, but this docket accepts "
            f"only {docket.serializer.name!r}"
        )
    try:
        serializer = serialization.get_serializer(serializer_name)
    except ValueError as error:
        raise PoisonMessage(str(error)) from None
    signing_key = docket.signing_key
    if signing_key is not None:
        if not signature:
            raise PoisonMessage("unsigned payload (this docket requires signatures)")
        if not serialization.verify_payload(
            signing_key, function_name, key, serializer.name, payload, signature, meta
        ):
            raise PoisonMessage("payload signature does not match (tampered or wrong key)")
    try:
        return serialization.load_call(serializer, payload)
    except serialization.PayloadError as error:
        raise PoisonMessage(str(error)) from None


def open_metadata(meta: bytes) -> dict[str, Any]:
    """A message's metadata (checked with its payload's signature): a JSON object."""
    if not meta:
        return {}
    try:
        value = json.loads(meta)
    except (ValueError, UnicodeDecodeError):
        raise PoisonMessage(f"field 'meta' is not JSON: {meta[:40]!r}") from None
    if not isinstance(value, dict):
        raise PoisonMessage("field 'meta' is not a JSON object")
    return value

"""How task arguments and results become bytes, and how those bytes are protected.

Two serializers: ``pickle`` (cloudpickle; any Python value, the released docket's format)
and ``json`` (plain JSON values only, for deployments that forbid unpickling). With a
signing key every payload carries an HMAC-SHA256 that a worker checks *before* it
deserializes anything, so someone who can write to Redis but lacks the key cannot make
a worker unpickle their bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
from typing import Any, Protocol

import cloudpickle

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024


class PayloadTooLarge(ValueError):
    """An enqueue whose serialized arguments exceed the docket's payload limit."""


class PayloadError(ValueError):
    """Bytes that cannot be turned back into a call (corrupt, wrong shape, unsigned)."""


class Serializer(Protocol):
    name: str

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


# Values that pickle by value alike in pickle and cloudpickle (the same bytes): for them
# the C pickler is used directly, several times faster than cloudpickle's subclass.
_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})


def _plain_call(value: Any) -> bool:
    if type(value) is not tuple or len(value) != 2:
        return False
    args, kwargs = value
    return (
        type(args) is tuple
        and type(kwargs) is dict
        and all(type(arg) in _PLAIN for arg in args)
        and all(type(value) in _PLAIN for value in kwargs.values())
    )


class PickleSerializer:
    name = "pickle"

    def dumps(self, value: Any) -> bytes:
        if _plain_call(value):
            return pickle.dumps(value, protocol=cloudpickle.DEFAULT_PROTOCOL)
        data: bytes = cloudpickle.dumps(value)
        return data

    def loads(self, data: bytes) -> Any:
        return cloudpickle.loads(data)


class JsonSerializer:
    name = "json"

    def dumps(self, value: Any) -> bytes:
        try:
            return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as error:
            raise TypeError(f"The json serializer cannot encode this value: {error}") from None

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


SERIALIZERS: dict[str, Serializer] = {"pickle": PickleSerializer(), "json": JsonSerializer()}


def get_serializer(name: str | Serializer) -> Serializer:
    if not isinstance(name, str):
        return name
    try:
        return SERIALIZERS[name]
    except KeyError:
        raise ValueError(
            f"Unknown serializer {name!r}; choose one of {', '.join(SERIALIZERS)}"
        ) from None


def dump_call(serializer: Serializer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    if serializer.name == "json":
        return serializer.dumps({"args": list(args), "kwargs": kwargs})
    return serializer.dumps((args, kwargs))


def load_call(serializer: Serializer, data: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    try:
        value = serializer.loads(data)
    except Exception as error:
        raise PayloadError(
            f"payload cannot be deserialized ({type(error).__name__}: {error})"
        ) from error
    if serializer.name == "json":
        if (
            not isinstance(value, dict)
            or set(value) != {"args", "kwargs"}
            or not isinstance(value["args"], list)
        ):
            raise PayloadError("payload is not a JSON object with an 'args' list and 'kwargs'")
        value = (tuple(value["args"]), value["kwargs"])
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or not isinstance(value[0], tuple | list)
        or not isinstance(value[1], dict)
        or not all(isinstance(name, str) for name in value[1])
    ):
        raise PayloadError("payload is not an (args, kwargs) pair")
    return tuple(value[0]), value[1]


def _signed_bytes(
    function: str, key: str, serializer: str, payload: bytes, meta: bytes = b""
) -> bytes:
    # Length-prefixed so no two different (function, key) pairs sign the same bytes. A
    # run's metadata is signed after the payload, length-prefixed too; without any, the
    # bytes (and so the signatures) are those of releases before metadata.
    head = f"{len(function)}:{function}|{len(key)}:{key}|{serializer}|".encode()
    if not meta:
        return head + payload
    return head + f"{len(payload)}:".encode() + payload + b"|meta|" + meta


def sign_payload(
    signing_key: bytes,
    function: str,
    key: str,
    serializer: str,
    payload: bytes,
    meta: bytes = b"",
) -> str:
    return hmac.new(
        signing_key, _signed_bytes(function, key, serializer, payload, meta), hashlib.sha256
    ).hexdigest()


def verify_payload(
    signing_key: bytes,
    function: str,
    key: str,
    serializer: str,
    payload: bytes,
    signature: str,
    meta: bytes = b"",
) -> bool:
    expected = sign_payload(signing_key, function, key, serializer, payload, meta)
    return hmac.compare_digest(expected, signature)


def sign_result(signing_key: bytes, key: str, data: bytes) -> bytes:
    """Results are signed too: whoever reads a result deserializes it."""
    return hmac.new(signing_key, b"result|" + key.encode() + b"|" + data, hashlib.sha256).digest()


def seal_result(signing_key: bytes | None, key: str, data: bytes) -> bytes:
    if signing_key is None:
        return b"0" + data
    return b"1" + sign_result(signing_key, key, data) + data


def open_result(signing_key: bytes | None, key: str, sealed: bytes) -> bytes:
    marker, rest = sealed[:1], sealed[1:]
    if marker == b"0":
        if signing_key is not None:
            raise PayloadError(f"the result of {key!r} is not signed")
        return rest
    if marker == b"1":
        if signing_key is None:
            raise PayloadError(f"the result of {key!r} is signed but this docket has no key")
        mac, data = rest[:32], rest[32:]
        if not hmac.compare_digest(mac, sign_result(signing_key, key, data)):
            raise PayloadError(f"the result of {key!r} fails its signature check")
        return data
    raise PayloadError(f"the result of {key!r} is not in a format this docket knows")

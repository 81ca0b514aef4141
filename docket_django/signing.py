"""The payload signing key: configured, or derived from ``SECRET_KEY``."""

from __future__ import annotations

from django.conf import settings
from django.utils.crypto import salted_hmac

from .conf import DocketSettings

SALT = "docket_django.signing"


def signing_key_for(config: DocketSettings) -> bytes | None:
    """``SIGNING_KEY`` if set (``False`` disables signing), else an HMAC of the docket's
    name under ``SECRET_KEY`` (so every process sharing the secret agrees on it, and a
    leaked signing key does not reveal ``SECRET_KEY``)."""
    key = config.signing_key
    if key is False:
        return None
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, bytes):
        return key
    digest: str = salted_hmac(
        SALT, config.name, secret=settings.SECRET_KEY, algorithm="sha256"
    ).hexdigest()
    return digest.encode()

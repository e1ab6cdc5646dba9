"""Signed tokens for unsubscribe and preference links.

A token carries (customer, topic, run) and an HMAC made with the project's
signing key (``RELMAIL_SIGNING_KEY``, from the environment). It cannot be
forged or enumerated without the key; itsdangerous does the signing, so the
format and the constant-time check are a maintained library's, not ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from itsdangerous import BadSignature, URLSafeSerializer

from .errors import SignatureError

_SALT = "relmail.unsubscribe.v1"


@dataclass(frozen=True)
class Claims:
    customer_id: str
    topic: str
    run_id: str


@lru_cache(maxsize=16)  # one serializer per key: building it costs more than a signature
def _serializer(key: str | bytes) -> URLSafeSerializer:
    if not key:
        raise SignatureError("no signing key: export RELMAIL_SIGNING_KEY")
    return URLSafeSerializer(key, salt=_SALT)


def sign(key: str | bytes, customer_id: str, topic: str, run_id: str) -> str:
    """A URL-safe token for this customer, topic and run."""
    return _serializer(key).dumps([customer_id, topic, run_id])


def verify(key: str | bytes, token: str) -> Claims:
    """The claims inside ``token``, or :class:`SignatureError` if it was tampered with."""
    try:
        customer_id, topic, run_id = _serializer(key).loads(token)
    except (BadSignature, ValueError, TypeError):
        raise SignatureError("invalid or tampered token") from None
    return Claims(str(customer_id), str(topic), str(run_id))

"""E-mail addresses: normalization and the salted hash kept after erasure."""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.engine import Connection

from .models import Meta


def normalize(email: str) -> str:
    """The form addresses are compared in: trimmed, lower-cased."""
    return email.strip().lower()


def salt(conn: Connection) -> str:
    """The store's address salt (made by ``relmail db upgrade``)."""
    table = Meta.__table__
    value = conn.execute(select(table.c.value).where(table.c.key == "address_salt")).scalar_one_or_none()
    if value is None:
        from ..errors import DatabaseError

        raise DatabaseError("the store has no address salt; run 'relmail db upgrade'")
    return value


def address_hash(email: str, salt_value: str) -> str:
    """Salted SHA-256 of the normalized address: lets us recognise it, not recover it."""
    return hashlib.sha256(f"{salt_value}:{normalize(email)}".encode()).hexdigest()

"""E-mail addresses: normalization and the salted hash kept after erasure."""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.engine import Connection

from .models import Meta


def normalize(email: str) -> str:
    """The form addresses are compared in: trimmed, lower-cased."""
    return email.strip().lower()


def address_problem(email: str) -> str | None:
    """Why ``email`` is no address relmail can send to, in ``email-validator``'s words; None when it is one.

    The reason never quotes the address (imports end up in CI logs, and
    addresses are personal data), at most one offending character. No
    SMTPUTF8: relmail's e-mails never use it, so a non-ASCII local part
    cannot be sent (an internationalized domain is fine: it has an ASCII form).
    """
    from email_validator import EmailNotValidError, validate_email

    try:
        validate_email(email.strip(), check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        text = str(exc).rstrip(".")
        if text.startswith("Internationalized characters before the @-sign"):
            return "needs SMTPUTF8: non-ASCII local part"
        return text[:1].lower() + text[1:]
    return None


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

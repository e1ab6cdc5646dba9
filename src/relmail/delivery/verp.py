"""A signed return path per e-mail (VERP): ``bounces+<tag>@shop.example``.

With ``[delivery.smtp] verp = true`` every e-mail's envelope sender (MAIL
FROM, which receivers write into ``Return-Path`` and send bounces to) is
``envelope_from`` with a tag after ``verp_separator`` in its local part. The
tag is the delivery's id and an HMAC of it made with the project's
``RELMAIL_SIGNING_KEY``: a bounce that comes back to a tagged address names
exactly the e-mail it answers, and nobody who has not seen that e-mail's
return path can write a report that does (:mod:`relmail.feedback.bounces`).

The tag is lowercase base32 (``a``-``z``, ``2``-``7``): mail servers may fold
the case of a local part, and those letters mean the same in either case.
It is the delivery id as a base32 numeral followed by 16 characters (80
bits) of the HMAC, at most 29 characters, so the local part stays within
RFC 5321's 64 octets for an ``envelope_from`` local part of up to 34.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_DIGITS = {c: i for i, c in enumerate(_ALPHABET)}
_PURPOSE = b"relmail.verp.v1\x00"
#: Characters of the HMAC in a tag (5 bits each).
MAC_LENGTH = 16
#: The largest delivery id (the ledger's ids are 64-bit signed integers).
MAX_ID = 2**63 - 1
#: The longest tag: the largest id's numeral and the HMAC.
MAX_TAG = -(-MAX_ID.bit_length() // 5) + MAC_LENGTH
#: RFC 5321 4.5.3.1.1: the longest local part.
MAX_LOCAL_PART = 64
#: Separators a mail server's sub-addressing uses (Postfix recipient_delimiter, Exim local_part_suffix, qmail).
SEPARATORS = ("+", "-", "=")


def encode(key: str | bytes, delivery_id: int) -> str:
    """The tag of delivery ``delivery_id``."""
    if not 0 < delivery_id <= MAX_ID:
        raise ValueError(f"a delivery id is between 1 and {MAX_ID}, got {delivery_id}")
    digits = []
    n = delivery_id
    while n:
        n, d = divmod(n, 32)
        digits.append(_ALPHABET[d])
    return "".join(reversed(digits)) + _mac(key, delivery_id)


def decode(key: str | bytes, tag: str) -> int | None:
    """The delivery id ``tag`` names, or None when it is no tag signed with ``key`` (altered, forged, cut)."""
    tag = tag.lower()
    numeral, mac = tag[:-MAC_LENGTH], tag[-MAC_LENGTH:]
    if not numeral or len(tag) > MAX_TAG or numeral[0] == _ALPHABET[0] or any(c not in _DIGITS for c in tag):
        return None  # a leading "a" is a zero: one delivery has one tag
    delivery_id = 0
    for c in numeral:
        delivery_id = delivery_id * 32 + _DIGITS[c]
    if delivery_id > MAX_ID or not hmac.compare_digest(mac, _mac(key, delivery_id)):
        return None
    return delivery_id


def _mac(key: str | bytes, delivery_id: int) -> str:
    secret = key.encode() if isinstance(key, str) else key
    digest = hmac.new(secret, _PURPOSE + str(delivery_id).encode(), hashlib.sha256).digest()
    return base64.b32encode(digest[:10]).decode("ascii").lower()


@dataclass(frozen=True)
class ReturnPath:
    """The tagged envelope sender of one project: ``local`` + ``separator`` + tag ``@`` ``domain``.

    ``required``: a bounce that carries no valid tag is never applied (the
    default); when false, one that returns a Message-ID the ledger holds is.
    """

    local: str
    separator: str
    domain: str
    key: str | bytes
    required: bool = True

    def address(self, delivery_id: int) -> str:
        """The envelope sender of the e-mail of delivery ``delivery_id``."""
        return f"{self.local}{self.separator}{encode(self.key, delivery_id)}@{self.domain}"

    def delivery_in(self, address: str) -> int | None:
        """The delivery whose tag ``address`` carries, or None.

        Only the tag after the last separator of the local part is read, not
        the rest of the local part or the domain: a mail server that rewrites
        the address (a virtual alias, a forwarder undoing SRS) keeps the
        extension, and the signature is what makes the tag evidence.
        """
        local = address.rpartition("@")[0] if "@" in address else ""
        head, sep, tag = local.rpartition(self.separator)
        return decode(self.key, tag) if sep and head else None

    def looks_tagged(self, address: str) -> bool:
        """``address`` is this return path with something after the separator (a tag, valid or not)."""
        local = address.rpartition("@")[0].lower()
        return local.startswith((self.local + self.separator).lower()) and len(local) > len(self.local) + 1


def from_config(config: Mapping[str, Any], key: str | bytes | None, where: str = "relmail.toml [delivery.smtp]") -> ReturnPath | None:
    """The project's return path from its ``[delivery.smtp]`` settings; None unless ``verp = true``.

    A setting that cannot work (no ``envelope_from``, a local part too long
    for a tag, no signing key) is a :class:`~relmail.errors.ConfigError`.
    """
    verp = config.get("verp", False)
    if not isinstance(verp, bool):
        raise ConfigError(f"{where}: key 'verp' must be true or false, got {verp!r}")
    if not verp:
        return None
    envelope_from = config.get("envelope_from")
    if not isinstance(envelope_from, str) or envelope_from.count("@") != 1:
        raise ConfigError(f"{where}: verp = true needs envelope_from, the bounce address the tags are added to "
                          "(for example \"bounces@shop.example\")")
    separator = config.get("verp_separator", "+")
    if separator not in SEPARATORS:
        raise ConfigError(f"{where}: key 'verp_separator' must be one of {', '.join(repr(s) for s in SEPARATORS)} "
                          f"(your mail server's sub-address delimiter), got {separator!r}")
    required = config.get("verp_required", True)
    if not isinstance(required, bool):
        raise ConfigError(f"{where}: key 'verp_required' must be true or false, got {required!r}")
    local, _, domain = envelope_from.partition("@")
    room = MAX_LOCAL_PART - len(separator) - MAX_TAG
    if not local or len(local.encode()) > room:
        raise ConfigError(f"{where}: envelope_from's local part {local!r} leaves no room for the return-path tag "
                          f"(at most {room} characters before the tag, RFC 5321's limit is {MAX_LOCAL_PART})")
    if not key:
        raise ConfigError(f"{where}: verp = true signs each return path with RELMAIL_SIGNING_KEY, which is not set")
    return ReturnPath(local, separator, domain, key, required)

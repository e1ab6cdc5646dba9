"""DKIM signing of outgoing messages with ``dkimpy``.

Configured in ``[delivery.dkim]`` (``selector``, ``domain``, optional
``key_file``); the private key (PEM, RSA) comes from the environment
variable behind the ``dkim_private_key`` secret (``RELMAIL_DKIM_PRIVATE_KEY``)
or from ``key_file``, which must live outside the project folder so it is
never committed with the campaigns. The signature covers the RFC 8058
``List-Unsubscribe`` and ``List-Unsubscribe-Post`` headers, which mailbox
providers require to be signed before they offer one-click unsubscribe.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dkim

from ..errors import ConfigError
from .base import idna, to_crlf

#: Headers signed when present (RFC 6376 §5.4.1 plus the RFC 8058 pair).
SIGNED_HEADERS = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "mime-version", "content-type", "content-transfer-encoding", "in-reply-to",
    "references", "list-id", "list-unsubscribe", "list-unsubscribe-post", "feedback-id",
)
#: Signed once more than they occur (M3AAWG's "oversigning"): a verifier then fails a copy with a
#: second From, Subject or List-Unsubscribe added above the signed one, which mail programs
#: would show or act on while the signature still verified.
OVERSIGNED = frozenset({
    "from", "reply-to", "subject", "date", "message-id", "to", "mime-version", "content-type",
    "list-unsubscribe", "list-unsubscribe-post",
})


class DkimSigner:
    """Signs RFC 5322 bytes; ``sign(raw)`` returns the message with a DKIM-Signature prepended."""

    def __init__(self, selector: str, domain: str, private_key: bytes):
        self.selector = selector
        self.domain = domain
        self.private_key = private_key
        try:
            # Sign a tiny message now: a bad key fails at start-up, not mid-batch.
            self.sign(b"From: a@" + domain.encode() + b"\r\nSubject: check\r\n\r\nx\r\n")
        except (dkim.DKIMException, ValueError) as exc:  # ValueError: a PEM body that is not base64 (a line lost in pasting)
            raise ConfigError(f"relmail.toml [delivery.dkim]: the private key cannot sign: {exc}") from None

    def sign(self, raw: bytes) -> bytes:
        message = to_crlf(raw)
        head = message.split(b"\r\n\r\n", 1)[0].lower()
        present = [h for h in SIGNED_HEADERS if (b"\r\n" + h.encode() + b":") in b"\r\n" + head]
        present += [h for h in present if h in OVERSIGNED]
        signature = dkim.sign(
            message,
            self.selector.encode(),
            self.domain.encode(),
            self.private_key,
            include_headers=[h.encode() for h in present],
            canonicalize=(b"relaxed", b"relaxed"),
            linesep=b"\r\n",
        )
        return signature + message

    @classmethod
    def from_config(
        cls,
        table: dict[str, Any] | None,
        secret: Callable[..., str | None],
        root: Path | None = None,
        default_domain: str | None = None,
    ) -> DkimSigner | None:
        """A signer from ``[delivery.dkim]``, or ``None`` when the table is absent or ``enabled = false``."""
        where = "relmail.toml [delivery.dkim]"
        if not table or table.get("enabled", True) is False:
            return None
        selector = table.get("selector")
        domain = table.get("domain", default_domain)
        if not isinstance(selector, str) or not selector:
            raise ConfigError(f"{where}: missing key 'selector' (the DNS name before ._domainkey)")
        if not isinstance(domain, str) or not domain:
            raise ConfigError(f"{where}: missing key 'domain'")
        domain = idna(domain)  # the d= tag and the DNS name are in the domain's ASCII form
        if default_domain and not _aligned(domain, default_domain):
            raise ConfigError(
                f"{where}: domain '{domain}' is not the From address's domain '{default_domain}' nor shares it; "
                "DMARC, which Gmail and Yahoo require of bulk senders, counts only a signature aligned with the From "
                f"domain: sign with domain = \"{default_domain}\" (or a parent or subdomain of it)"
            )
        pem = secret("dkim_private_key", False)
        if pem:
            key = pem.replace("\\n", "\n").encode()
        elif table.get("key_file"):
            path = Path(str(table["key_file"])).expanduser()
            if not path.is_absolute() and root is not None:
                path = Path(root) / path
            path = path.resolve()
            if root is not None and path.is_relative_to(Path(root).resolve()):
                raise ConfigError(
                    f"{where}: key_file {path} is inside the project folder; keep private keys outside it "
                    "(or use RELMAIL_DKIM_PRIVATE_KEY)"
                )
            try:
                key = path.read_bytes()
            except OSError as exc:
                raise ConfigError(f"{where}: key_file {path}: {exc.strerror}") from None
        else:
            raise ConfigError(f"{where}: no private key: set RELMAIL_DKIM_PRIVATE_KEY or key_file")
        return cls(selector, domain, key)


def _aligned(dkim_domain: str, from_domain: str) -> bool:
    """DMARC's relaxed alignment, without a public suffix list: the same domain, one inside the other,
    or the same last two labels (``mg.shop.example`` and ``news.shop.example``); only a plain mismatch
    is refused, so a shop under a two-label suffix (``shop.co.uk``) is never refused wrongly."""
    a, b = (idna(d.lower().rstrip(".")) for d in (dkim_domain, from_domain))
    if a == b or a.endswith("." + b) or b.endswith("." + a):
        return True
    return a.split(".")[-2:] == b.split(".")[-2:]

"""Signed tokens for unsubscribe and preference links.

A token carries (customer, topic, run, project) and an HMAC made with the
project's signing key (``RELMAIL_SIGNING_KEY``, from the environment). It
cannot be forged or enumerated without the key; itsdangerous does the
signing, so the format and the constant-time check are a maintained
library's, not ours.

The project (``[project] name``) is in the signed payload so that two
projects sharing a key (a staging copy of production) refuse each other's
links. A project renamed after a send keeps accepting the names its store
sent links under (:mod:`relmail.store.link_projects`), and a token without
a project, as links were signed before tokens named their project, is
still accepted: an unsubscribe link in an inbox must keep working for
months.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from functools import cached_property, lru_cache

from itsdangerous import BadSignature, URLSafeSerializer
from itsdangerous.encoding import base64_encode
from itsdangerous.serializer import Serializer
from itsdangerous.signer import Signer

from .errors import SignatureError

_SALT = "relmail.unsubscribe.v1"

#: The run of ``relmail preview``'s e-mails, and of proofs (``relmail send --test-to``). A real run's id
#: is always ``campaign:window``, with a colon, so these can never be one.
PREVIEW_RUN = "preview"
PROOF_RUN = "proof"
TRIAL_RUNS = frozenset({PREVIEW_RUN, PROOF_RUN})


@dataclass(frozen=True)
class Claims:
    customer_id: str
    topic: str
    run_id: str
    #: The project the link was made for; None in a token made before tokens named their project.
    project: str | None = None

    @property
    def trial(self) -> bool:
        """The link is in a preview or a proof, which went to someone testing, not to the customer."""
        return self.run_id in TRIAL_RUNS


class _Signer(Signer):
    """itsdangerous' signer with its derived key computed once, not for every token."""

    @cached_property
    def _derived(self) -> bytes:
        return super().derive_key()

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        return self._derived if secret_key is None else super().derive_key(secret_key)


class _Serializer(URLSafeSerializer):
    """itsdangerous' URL-safe serializer, made for a token per e-mail.

    It does not try zlib on every token: a token's payload is a few dozen
    bytes, which zlib does not shorten (so the tokens are the same), but each
    attempt costs tens of µs, a tenth of rendering an e-mail; reading still
    accepts compressed payloads. And it signs with one signer per key.
    """

    def dump_payload(self, obj) -> bytes:
        return base64_encode(Serializer.dump_payload(self, obj))

    @cached_property
    def _signer(self) -> Signer:
        # One signer (and so one derived key) for every token of this key; it holds no per-token state.
        return super().make_signer()

    def make_signer(self, salt=None) -> Signer:
        return self._signer if salt is None else super().make_signer(salt)


@lru_cache(maxsize=16)  # one serializer per key: building it costs more than a signature
def _serializer(key: str | bytes) -> URLSafeSerializer:
    if not key:
        raise SignatureError("no signing key: export RELMAIL_SIGNING_KEY")
    return _Serializer(key, salt=_SALT, signer=_Signer)


def sign(key: str | bytes, customer_id: str, topic: str, run_id: str, project: str) -> str:
    """A URL-safe token for this customer, topic and run of ``project`` (its ``[project] name``)."""
    return _serializer(key).dumps([customer_id, topic, run_id, project])


def verify(key: str | bytes, token: str, projects: str | Collection[str]) -> Claims:
    """The claims inside ``token``, or :class:`SignatureError` if it was tampered with or names another project.

    ``projects``: the project names accepted (the current one, and those links were sent under:
    :func:`relmail.store.link_projects.accepted`). A token that names no project (signed before
    tokens carried one) is accepted.
    """
    accepted = {projects} if isinstance(projects, str) else set(projects)
    try:
        customer_id, topic, run_id, *named = _serializer(key).loads(token)
    except (BadSignature, ValueError, TypeError):
        raise SignatureError("invalid or tampered token") from None
    if len(named) > 1 or (named and named[0] not in accepted):
        raise SignatureError("the token was made for another project") from None
    return Claims(str(customer_id), str(topic), str(run_id), named[0] if named else None)

"""Internationalized domain names: the ASCII form DNS, SMTP and DKIM take, and back (IDNA 2008 with UTS #46).

Python's own ``idna`` codec is IDNA 2003, which maps ``ß`` to ``ss`` (and a
final sigma to a sigma): ``süß.example`` would become the ASCII form of
``süss.example``, another domain (registries such as DENIC register both),
and an e-mail to ``lena@gärtnerei-süß.example`` would go to whoever holds
``gärtnerei-süss.example``. The ``idna`` package, which email-validator uses
to check the addresses an import reads, gives the form the domain was
registered under.
"""

from __future__ import annotations

import idna as _idna


def to_ascii(domain: str) -> str:
    """``müller.example`` -> ``xn--mller-kva.example``; an ASCII domain as it is.

    Raises :class:`UnicodeError` when the domain has no ASCII form.
    """
    if domain.isascii():
        return domain
    return _idna.encode(domain, uts46=True).decode("ascii")


def to_unicode(domain: str) -> str:
    """``xn--mller-kva.example`` -> ``müller.example``. Raises :class:`UnicodeError` when a label is no IDNA."""
    return _idna.decode(domain)

"""Reading the bounce mailbox: an mbox file, a Maildir folder, .eml files.

:func:`read_mail` gives each message's bytes with where it was found (the
mbox line of its ``From`` separator, the Maildir file, the .eml path), so a
message that cannot be used is reported by its place. Nothing is changed in
the mailbox: an mbox is read, not locked or rewritten, and Maildir messages
stay in ``new/`` or ``cur/`` (re-reading them is safe, see
:mod:`relmail.feedback.bounces`).
"""

from __future__ import annotations

import mailbox
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Problem, ValidationError


@dataclass(frozen=True)
class Mail:
    """One message of a mailbox and its place in it."""

    #: The mailbox as given (mbox file, Maildir folder, .eml file or folder of them).
    source: str
    #: 0-based position in ``source`` (mbox order; Maildir and .eml folders by file name).
    index: int
    #: The file holding it: the mbox, the Maildir message file, the .eml.
    file: str
    #: The line of an mbox message's ``From`` separator.
    line: int | None
    data: bytes = field(repr=False)

    @property
    def where(self) -> str:
        """Where a person finds it: ``bounces.mbox:120``, ``Maildir/cur/1733...``, ``a.eml``."""
        return f"{self.file}:{self.line}" if self.line is not None else self.file


def read_mail(path: str | Path) -> list[Mail]:
    """The messages at ``path``: an mbox file, a Maildir, a single .eml, or a folder of .eml files.

    A path that is none of these, or cannot be read, is a
    :class:`~relmail.errors.ValidationError` naming it (nothing is imported).
    """
    path = Path(path)
    name = str(path)
    try:
        if path.is_dir():
            if (path / "cur").is_dir() and (path / "new").is_dir():
                return _maildir(path)
            files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".eml" and p.is_file())
            if not files:
                raise _unreadable(name, "is neither a Maildir (no cur/ and new/) nor a folder of .eml files")
            return [Mail(name, i, str(p), None, p.read_bytes()) for i, p in enumerate(files)]
        data = path.read_bytes()
    except FileNotFoundError:
        raise _unreadable(name, "no such file or folder") from None
    except PermissionError as exc:
        raise _unreadable(exc.filename or name, "cannot be read (permission denied)") from None
    if data.startswith(b"From "):
        return _mbox(path, data)
    return [Mail(name, 0, name, None, data)]


def _mbox(path: Path, data: bytes) -> list[Mail]:
    """The messages of an mbox file, each with the line of its ``From`` separator."""
    # The mailbox module starts a message at every line beginning "From "; so does this count.
    lines = [n for n, text in enumerate(data.split(b"\n"), start=1) if text.startswith(b"From ")]
    box = mailbox.mbox(path, create=False)
    try:
        messages = [box.get_bytes(key) for key in box.iterkeys()]
    finally:
        box.close()
    return [Mail(str(path), i, str(path), line, raw) for i, (line, raw) in enumerate(zip(lines, messages, strict=True))]


def _maildir(path: Path) -> list[Mail]:
    """The messages of a Maildir (``new/`` and ``cur/``), by file name: delivery time first."""
    # A Maildir message is a plain file holding the message (the mailbox module reads it the same way).
    files = sorted((p for sub in ("new", "cur") for p in (path / sub).iterdir() if p.is_file() and not p.name.startswith(".")),
                   key=lambda p: p.name)
    return [Mail(str(path), i, str(p), None, p.read_bytes()) for i, p in enumerate(files)]


def _unreadable(name: str, message: str) -> ValidationError:
    return ValidationError(f"{name}: {message}; nothing was imported", [Problem(name, None, None, message)])

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
from collections.abc import Iterator
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


def read_mail(path: str | Path) -> Iterator[Mail]:
    """The messages at ``path``, one at a time: an mbox file, a Maildir, a single .eml, or a folder of .eml files.

    One message is in memory at a time, so a mailbox nobody cleaned for
    months reads in little memory. A path that is none of these, or cannot
    be read, is a :class:`~relmail.errors.ValidationError` naming it, raised
    while iterating (before the caller writes anything).
    """
    path = Path(path)
    name = str(path)
    try:
        if path.is_dir():
            if (path / "cur").is_dir() and (path / "new").is_dir():
                yield from _files(name, _maildir_files(path))
                return
            files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".eml" and p.is_file())
            if not files:
                raise _unreadable(name, "is neither a Maildir (no cur/ and new/) nor a folder of .eml files")
            yield from _files(name, files)
            return
        with path.open("rb") as f:
            is_mbox = f.read(5) == b"From "
        if is_mbox:
            yield from _mbox(path)
        else:
            yield Mail(name, 0, name, None, path.read_bytes())
    except FileNotFoundError:
        raise _unreadable(name, "no such file or folder") from None
    except PermissionError as exc:
        raise _unreadable(exc.filename or name, "cannot be read (permission denied)") from None


def _files(source: str, files: list[Path]) -> Iterator[Mail]:
    for index, p in enumerate(files):
        yield Mail(source, index, str(p), None, p.read_bytes())


def _mbox(path: Path) -> Iterator[Mail]:
    """The messages of an mbox file, each with the line of its ``From`` separator."""
    # The mailbox module starts a message at every line beginning "From "; so does this count.
    with path.open("rb") as f:
        lines = [n for n, text in enumerate(f, start=1) if text.startswith(b"From ")]
    box = mailbox.mbox(path, create=False)
    try:
        for index, (line, key) in enumerate(zip(lines, box.iterkeys(), strict=True)):
            yield Mail(str(path), index, str(path), line, box.get_bytes(key))
    finally:
        box.close()


def _maildir_files(path: Path) -> list[Path]:
    """The message files of a Maildir (``new/`` and ``cur/``), by file name: delivery time first."""
    # A Maildir message is a plain file holding the message (the mailbox module reads it the same way).
    return sorted((p for sub in ("new", "cur") for p in (path / sub).iterdir() if p.is_file() and not p.name.startswith(".")),
                  key=lambda p: p.name)


def _unreadable(name: str, message: str) -> ValidationError:
    return ValidationError(f"{name}: {message}; nothing was imported", [Problem(name, None, None, message)])

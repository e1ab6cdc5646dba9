"""Files that hold customers' personal data, created readable and writable by their owner only.

The SQLite database, plan files, exports, reports, previews, rejects files and
the file adapter's outbox hold names, addresses and behaviour. On a machine
other accounts use (a shared CI runner, a server with several services), a
file created with the usual umask (``644``) is readable by all of them. A new
file is therefore created with mode ``600``; a file that exists keeps the mode
it has, so one shared on purpose (``chmod g+r``) stays shared.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

#: rw for the owner, nothing for the group and others.
OWNER_ONLY = 0o600
#: The same for folders (rwx: a folder must be searchable to be used).
OWNER_ONLY_FOLDER = 0o700


def open_private(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> IO[Any]:
    """:func:`open` for writing (``w``, ``wb``, ``a`` ...), creating a missing file with mode 600."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags, OWNER_ONLY)
    try:
        return open(fd, mode, **kwargs)  # noqa: SIM115 (the caller closes it, as it would open()'s)
    except BaseException:
        os.close(fd)
        raise


def write_private(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` (UTF-8 for text) to ``path`` as :func:`open_private` creates it."""
    with open_private(path, "wb") as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)


def private_folder(path: str | os.PathLike) -> Path:
    """Make the folder ``path`` (and missing parents) with mode 700 where it is new; returns it."""
    path = Path(path)
    path.mkdir(mode=OWNER_ONLY_FOLDER, parents=True, exist_ok=True)
    return path

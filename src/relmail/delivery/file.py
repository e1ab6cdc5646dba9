"""Writes messages to an outbox folder instead of sending them (the demo uses it).

``format = "eml"`` (default): one ``.eml`` file per message, named after the
message key (filesystem-safe, plus a short hash so distinct keys never
collide). A retry writes the same name, so it overwrites and never
duplicates; files are written to a temporary name and renamed, so a crash
never leaves half a message. ``format = "mbox"``: one ``outbox.mbox``; each
entry carries ``X-Relmail-Key`` and a key already present is not appended
again. ``provider_id`` is the file path (mbox: ``path#key``).
"""

from __future__ import annotations

import hashlib
import mailbox
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError
from ..store.private import open_private, private_folder
from .base import Adapter, OutgoingMessage, Result, accepted, rejected
from .dkim import DkimSigner

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
KEY_HEADER = "X-Relmail-Key"


def safe_name(key: str) -> str:
    """A file name for ``key``: readable, safe on every filesystem, unique per key."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return f"{_UNSAFE.sub('_', key).strip('._')[:120]}-{digest}"


class FileAdapter(Adapter):
    """Outbox folder of ``.eml`` files or one mbox."""

    name = "file"
    # Files are named by key (an mbox skips keys it holds), so a retry overwrites.
    idempotent = True
    max_batch = 1000
    config_keys = ("outbox", "format")

    def __init__(self, config=None, secret=None, **kw):
        super().__init__(config, secret, **kw)
        outbox = Path(self.config.string("outbox", "outbox")).expanduser()
        if not outbox.is_absolute():
            outbox = Path(self.root or ".") / outbox
        self.outbox = outbox.resolve()
        self.format = self.config.choice("format", ("eml", "mbox"), "eml")
        dkim_table = self.config.get("dkim")
        self.signer = (
            DkimSigner.from_config(dkim_table, self._secret, self.root, self.config.get("sender_domain"))
            if isinstance(dkim_table, dict)
            else None
        )
        try:
            private_folder(self.outbox)
        except OSError as exc:
            raise ConfigError(f"{self.config.where}: outbox {self.outbox}: {exc.strerror}") from None

    def _payload(self, msg: OutgoingMessage) -> bytes:
        data = msg.as_bytes()
        return self.signer.sign(data) if self.signer else data

    def _send(self, messages: Sequence[OutgoingMessage]) -> list[Result]:
        if self.format == "mbox":
            return self._send_mbox(messages)
        out = []
        for msg in messages:
            path = self.outbox / f"{safe_name(msg.key)}.eml"
            try:
                fd, tmp = tempfile.mkstemp(dir=self.outbox, prefix=".tmp-", suffix=".eml")
                with os.fdopen(fd, "wb") as fh:
                    fh.write(self._payload(msg))
                os.replace(tmp, path)
            except OSError as exc:
                out.append(rejected(msg.key, f"cannot write {path}: {exc.strerror}"))
                continue
            out.append(accepted(msg.key, str(path)))
        return out

    def _send_mbox(self, messages: Sequence[OutgoingMessage]) -> list[Result]:
        path = self.outbox / "outbox.mbox"
        open_private(path, "ab").close()  # mailbox would create it with the umask's mode
        box = mailbox.mbox(path)
        box.lock()
        try:
            present = {m.get(KEY_HEADER) for m in box}
            for msg in messages:
                if msg.key not in present:
                    entry = mailbox.mboxMessage(f"{KEY_HEADER}: {msg.key}\r\n".encode() + self._payload(msg))
                    entry.set_from(msg.from_addr)
                    box.add(entry)
                    present.add(msg.key)
            box.flush()
        finally:
            box.unlock()
            box.close()
        return [accepted(m.key, f"{path}#{m.key}") for m in messages]

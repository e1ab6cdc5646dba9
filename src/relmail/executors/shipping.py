"""A project that travels with a task, for workers that do not have the project folder.

A Dask worker on another machine has the relmail package and nothing else.
:func:`ship` packs what the send path reads from the submitter's machine —
the settings, every file under ``templates/`` and the secrets that rendering
and delivery use (signing key, SMTP password, ESP API key and secret, DKIM key) — into
a :class:`ShippedProject` that pickles with the task. On the worker its
templates are written once per process into a temporary folder.

The secrets therefore cross the network inside the task, as the database
URL does: run the cluster over TLS (``tls://`` addresses) when it leaves one
trusted host.
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..project import Project

#: The secrets the send path reads (renderer and delivery adapters).
SENDING_SECRETS = ("signing_key", "smtp_password", "esp_api_key", "esp_api_secret", "dkim_private_key")

_folders: dict[str, Path] = {}
_guard = threading.Lock()


@dataclass(frozen=True)
class ShippedProject(Project):
    """A :class:`~relmail.project.Project` whose templates and secrets came with it.

    ``root`` is still the submitter's folder (the file adapter's outbox is
    resolved against it, on the worker's machine).
    """

    files: tuple[tuple[str, bytes], ...] = ()
    shipped_secrets: tuple[tuple[str, str], ...] = ()

    @property
    def templates_dir(self) -> Path:
        return _materialise(self.files)

    def secret(self, name: str, required: bool = True) -> str | None:
        value = dict(self.shipped_secrets).get(name)
        if not value and required:
            raise ConfigError(f"secret '{name}' is not set in the environment of the process that submitted the work")
        return value


def ship(project: Project) -> ShippedProject:
    """``project`` with its templates and sending secrets packed in (see the module docstring)."""
    if isinstance(project, ShippedProject):
        return project
    folder = project.templates_dir
    files = tuple(sorted((str(p.relative_to(folder)), p.read_bytes()) for p in folder.rglob("*") if p.is_file())) \
        if folder.is_dir() else ()
    secrets = tuple((name, value) for name in SENDING_SECRETS if (value := project.secret(name, required=False)))
    return ShippedProject(root=project.root, settings=project.settings, files=files, shipped_secrets=secrets)


def _materialise(files: tuple[tuple[str, bytes], ...]) -> Path:
    """The templates written to a folder of this process (once per distinct set of files)."""
    digest = hashlib.sha256(repr([(name, hashlib.sha256(data).hexdigest()) for name, data in files]).encode()).hexdigest()
    with _guard:
        folder = _folders.get(digest)
        if folder is None:
            folder = Path(tempfile.mkdtemp(prefix="relmail-templates-"))
            atexit.register(shutil.rmtree, folder, True)
            for name, data in files:
                path = folder / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            _folders[digest] = folder
    return folder

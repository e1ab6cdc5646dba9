"""Files holding customers' personal data are created for their owner only (mode 600, folders 700)."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from delivery_messages import message
from relmail.cli import cli
from relmail.delivery import get_adapter
from relmail.store.db import make_engine, upgrade
from relmail.store.models import Customer
from relmail.store.private import open_private, write_private


@pytest.fixture(autouse=True)
def usual_umask():
    """The umask most systems give (022): without care, every new file is readable by every account."""
    before = os.umask(0o022)
    yield
    os.umask(before)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_file_is_the_owners_only_and_an_existing_one_keeps_its_mode(tmp_path):
    with open_private(tmp_path / "new.csv", "w", encoding="utf-8") as fh:
        fh.write("id\n")
    write_private(tmp_path / "new.html", "<p>é</p>")
    assert mode(tmp_path / "new.csv") == mode(tmp_path / "new.html") == 0o600
    assert (tmp_path / "new.html").read_text(encoding="utf-8") == "<p>é</p>"
    shared = tmp_path / "shared.csv"
    shared.write_text("old and longer\n")
    shared.chmod(0o640)  # shared with the group on purpose
    write_private(shared, "new\n")
    assert mode(shared) == 0o640 and shared.read_text() == "new\n"


def test_a_new_sqlite_database_and_its_wal_are_the_owners_only(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'relmail.db'}")
    upgrade(engine)
    with engine.begin() as conn:  # a write: SQLite makes the -wal and -shm files
        conn.execute(Customer.__table__.insert(), [{"id": "C1", "email": "a@example.com", "created_at": datetime.now(UTC),
                                                    "attributes": {}}])
        made = sorted(p.name for p in tmp_path.iterdir())
        assert {"relmail.db", "relmail.db-wal"} <= set(made)
        assert {p: mode(tmp_path / p) for p in made if p.startswith("relmail.db")} == {p: 0o600 for p in made if p.startswith("relmail.db")}
    engine.dispose()
    # A database that exists keeps the mode it was given.
    (tmp_path / "relmail.db").chmod(0o640)
    again = make_engine(f"sqlite:///{tmp_path / 'relmail.db'}")
    with again.connect():
        pass
    again.dispose()
    assert mode(tmp_path / "relmail.db") == 0o640


@pytest.mark.parametrize("fmt", ["eml", "mbox"])
def test_the_outbox_folder_and_its_e_mails_are_the_owners_only(tmp_path, fmt):
    adapter = get_adapter("file", {"outbox": str(tmp_path / "outbox"), "format": fmt})
    adapter.send([message(1), message(2)])
    assert mode(tmp_path / "outbox") == 0o700
    files = list((tmp_path / "outbox").iterdir())
    assert files and all(mode(p) == 0o600 for p in files)


def test_a_customers_export_is_the_owners_only(project, engine, tmp_path):
    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), [{"id": "C1", "email": "a@example.com", "created_at": datetime.now(UTC),
                                                    "attributes": {}}])
    out = CliRunner().invoke(cli, ["-p", str(project.root), "customers", "export", "C1", "-o", str(tmp_path / "C1.json")])
    assert out.exit_code == 0, out.output
    assert mode(tmp_path / "C1.json") == 0o600 and "a@example.com" in (tmp_path / "C1.json").read_text()

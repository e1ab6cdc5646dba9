"""Customers by e-mail address, for imports whose rows name people by address (a mailing tool's activity export)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from ..store.models import Customer

C = Customer.__table__
#: Distinct addresses remembered per import.
REMEMBERED = 65536


class AddressBook:
    """``find(address)``: the customer whose address it is, compared as normalized addresses, case-insensitively.

    One query per distinct address, remembered for the rest of the file. An
    address several customers share goes to the first of them by id, the
    same one every time.
    """

    def __init__(self, conn: Connection):
        self.conn = conn
        self.known: dict[str, str | None] = {}

    def find(self, address: str) -> str | None:
        from .orders import normal_address

        key = normal_address(address)
        if key in self.known:
            return self.known[key]
        found = self.conn.execute(select(C.c.id).where(C.c.email == key).order_by(C.c.id).limit(1)).scalar()
        if found is None:
            lowered = func.lower(C.c.email, type_=C.c.email.type)
            found = self.conn.execute(select(C.c.id).where(lowered == key.lower()).order_by(C.c.id).limit(1)).scalar()
        if len(self.known) >= REMEMBERED:
            self.known.clear()
        self.known[key] = found
        return found

"""Messages and a frozen clock for the delivery tests (built with the stdlib, not the render stage)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage

from relmail.delivery import OutgoingMessage

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self, now: datetime = NOW):
        self.now = now
        self.sleeps: list[float] = []

    def clock(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        from datetime import timedelta

        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)


def message(i: int, *, same_content: bool = False, to: str | None = None, raw: bool = True, **extra) -> OutgoingMessage:
    """Message ``i``; ``same_content`` makes subject and bodies identical across messages."""
    to = to or f"klant{i}@example.org"
    subject = "Nieuwe e-bike" if same_content else f"Nieuwe e-bike voor klant {i}"
    text = "Hallo!" if same_content else f"Hallo klant {i}"
    html = "<p>Hallo!</p>" if same_content else f"<p>Hallo klant {i}</p>"
    headers = {
        "List-Unsubscribe": f"<https://fietsenwinkel.example/relmail/unsubscribe/tok{i}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "Message-ID": f"<run-2026-W48.C{i:07d}.ebike@fietsenwinkel.example>",
    }
    if same_content:
        headers.pop("List-Unsubscribe")
    mime = None
    if raw:
        em = EmailMessage()
        em["From"] = "Fietsenwinkel <news@fietsenwinkel.example>"
        em["To"] = to
        em["Subject"] = subject
        for k, v in headers.items():
            em[k] = v
        em.set_content(text)
        em.add_alternative(html, subtype="html")
        mime = em.as_bytes()
    fields = dict(
        key=f"run-2026-W48:C{i:07d}:ebike-launch",
        to=to,
        to_name=f"Klant {i}",
        from_addr="news@fietsenwinkel.example",
        from_name="Fietsenwinkel",
        reply_to="service@fietsenwinkel.example",
        subject=subject,
        html=html,
        text=text,
        headers=headers,
        raw=mime,
        metadata={"relmail_customer": f"C{i:07d}", "relmail_run": "run-2026-W48", "relmail_message": "ebike-launch"},
        tags=("weekly", "ebike-launch"),
    )
    fields.update(extra)
    return OutgoingMessage(**fields)

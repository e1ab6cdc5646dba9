"""What a render gives: a complete e-mail, or the error that stopped it for one customer."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import TemplateError


@dataclass(frozen=True)
class RenderedEmail:
    """A complete e-mail: the parts, the headers, and the RFC 5322 bytes."""

    customer_id: str
    message_id: str
    subject: str
    html: str
    text: str
    headers: tuple[tuple[str, str], ...]
    raw: bytes
    rfc_message_id: str
    template: str
    locale: str


class RenderError(TemplateError):
    """A template failed for one customer; nothing was produced for them."""

    def __init__(self, customer_id: str, message_id: str, reason: str, file: str | None = None, line: int | None = None):
        self.customer_id, self.message_id, self.reason = customer_id, message_id, reason
        where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(f"{message_id} for {customer_id}: {where}{reason}", file, line)


@dataclass(frozen=True)
class RenderResult:
    """One item of :meth:`Renderer.render_many`: an e-mail, or the error for that customer."""

    customer_id: str
    message_id: str
    email: RenderedEmail | None = None
    error: RenderError | None = None

    @property
    def ok(self) -> bool:
        return self.email is not None

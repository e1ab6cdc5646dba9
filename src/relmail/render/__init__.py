"""Render stage: sandboxed Jinja e-mails with CSS inlined once per template.

Public API::

    from relmail.render import Renderer, MessageSpec, CustomerContext

    renderer = Renderer(project)                 # settings + signing key
    spec = MessageSpec(id="ebike-launch", template="ebike_launch", topic="promotions",
                       campaign_id="weekly", run_id="weekly-2026-W48")
    email = renderer.render(spec, CustomerContext(id="C0000001", email="jan@example.nl",
                                                  first_name="Jan", locale="nl_NL"))
    email.raw        # complete RFC 5322 bytes, multipart/alternative
    for result in renderer.render_many(pairs):   # a failing customer does not stop the batch
        ...

:class:`RenderError` (a :class:`~relmail.errors.TemplateError`) names the
customer, message, file and line when one customer's e-mail cannot be
rendered; a template with a syntax error raises :class:`TemplateError` when
it is compiled, before anything is sent.
"""

from .compiler import CompiledMessage
from .inputs import CustomerContext, MessageSpec
from .renderer import Renderer
from .results import RenderedEmail, RenderError, RenderResult

__all__ = [
    "CompiledMessage",
    "CustomerContext",
    "MessageSpec",
    "RenderedEmail",
    "RenderError",
    "Renderer",
    "RenderResult",
]

"""The renderer: message definition + customer context → complete e-mail.

Per message definition and language, :class:`~relmail.render.compiler.Compiler`
compiles once what is the same for every customer. Per e-mail only what
differs is done: the Jinja renders, the signed token, the personal headers
and the body encodings.
"""

from __future__ import annotations

import html as html_lib
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import TemplateError
from ..windows import current_time
from .bounds import LOCATE_SECONDS, LimitExceeded, collect, render_bounded, run_bounded
from .catalog import catalog_variables, has_localized, localized
from .compiler import CompiledMessage, Compiler, cached_languages
from .inputs import CustomerContext, MessageSpec
from .mime import message_id, one_line
from .optional import named, optional
from .results import RenderedEmail, RenderError, RenderResult
from .text import tidy


class Renderer(Compiler):
    """Renders a project's e-mails from its compiled templates (see :class:`~relmail.render.compiler.Compiler`).

    ``now`` is the templates' ``now``: the moment a send's batch is rendered, which also prices its products
    (:class:`relmail.sending.batcher.Batcher` sets it per batch); None: relmail's clock (``$RELMAIL_NOW`` when set).
    """

    now: datetime | None = None

    def context(self, compiled: CompiledMessage, ctx: CustomerContext, token: str) -> dict[str, Any]:
        """The template variables for one customer (see docs/readme/render.md for the list)."""
        spec = compiled.spec
        # Optional data (attributes, products, message.data): a missing key tests false, printing it fails.
        locale = ctx.locale or compiled.locale
        # The products in the customer's language (a product's name_de, url_de ... for a de_* customer).
        catalog = ctx.catalog.for_locale(locale, self.currencies) if ctx.catalog is not None else None
        own_price = bool(locale) and self.currencies.own_price_needed(locale)

        def local(p: Mapping[str, Any]) -> Mapping[str, Any]:
            found = catalog.get(p.get("id")) if catalog is not None else None
            if found is not None:
                return found
            return optional(localized(p, locale, self.currencies) if locale and (own_price or has_localized(p)) else p, "product")

        products = [local(p) for p in ctx.recommended_products]
        unsubscribe = self.links.unsubscribe_url(token)
        return {
            **compiled.constants,
            "customer": {
                "id": ctx.id,
                "email": ctx.email,
                "first_name": ctx.first_name,
                "last_name": ctx.last_name,
                "name": ctx.name,
                "locale": locale,
                "attributes": optional(ctx.attributes, "customer.attributes"),
            },
            "products": products,
            "recommended_products": products,
            **catalog_variables(catalog, [named(local(p), "featured") for p in ctx.featured_products], ctx.absent_featured),
            "message": {"id": spec.id, "topic": spec.topic, "campaign_id": spec.campaign_id, "run_id": spec.run_id, "data": compiled.data},
            "links": {"unsubscribe": unsubscribe, "preferences": self.links.preferences_url(token), "home": self.brand["url"]},
            "data": ctx.data,
            "locale": locale,
            "timezone": ctx.timezone or self.settings.timezone,
            "now": self.now if self.now is not None else current_time(),
            "preheader": "",
        }

    def render(self, spec: MessageSpec, ctx: CustomerContext) -> RenderedEmail:
        """The complete e-mail for one customer, or :class:`RenderError` (nothing half-rendered).

        The renders run within the project's :class:`~relmail.render.bounds.Limits`.
        """
        compiled = self.compile(spec, ctx.locale)
        token = self.links.token(ctx.id, spec.topic, spec.run_id)
        variables = self.context(compiled, ctx, token)
        budget = self.limits.max_email_bytes
        try:
            html, subject, text = run_bounded(self.limits, self._render_parts, compiled, variables)
        except Exception as exc:  # any failure inside a template is this customer's render error
            raise self._render_error(compiled, ctx, variables, exc) from None
        subject = one_line(subject)  # a subject's template lines and indentation: one line
        rfc_id = message_id(spec.run_id, ctx.id, spec.id, self.settings.sender.domain)
        personal = [("X-Relmail-Customer", ctx.id)]
        try:
            raw = compiled.mime.build(
                to_name=ctx.addressee,
                to_email=ctx.email,
                subject=subject,
                html=html,
                text=text,
                rfc_message_id=rfc_id,
                headers=personal,
                list_unsubscribe=variables["links"]["unsubscribe"],
                list_unsubscribe_mailto=self.links.unsubscribe_mailto(token),
            )
        except TemplateError as exc:
            raise RenderError(ctx.id, spec.id, str(exc)) from None
        if len(raw) > budget:
            too_big = LimitExceeded(f"the e-mail is {len(raw):,} bytes, over the limit of {budget:,}", "max_email_bytes")
            raise RenderError(ctx.id, spec.id, str(too_big), compiled.html_file)
        return RenderedEmail(ctx.id, spec.id, subject, html, text, tuple(personal), raw, rfc_id, compiled.html_file, compiled.locale)

    def _render_parts(self, compiled: CompiledMessage, variables: dict) -> tuple[str, str, str]:
        """(HTML, subject, text) of one e-mail, each stopped past the e-mail's size limit."""
        budget = self.limits.max_email_bytes
        if compiled.preheader is not None:
            variables["preheader"] = _run(compiled.preheader, variables, budget)
        tmpl = compiled.html
        render_ctx = tmpl.new_context(variables)
        html = collect(tmpl.root_render_func(render_ctx), budget)
        if compiled.subject is not None:
            subject = _run(compiled.subject, variables, budget)
        else:
            # After the root render, so top-level {% set %} are visible to the block.
            subject = html_lib.unescape(collect(tmpl.blocks["subject"](render_ctx), budget))
        text = tidy(collect(compiled.text.root_render_func(compiled.text.new_context(variables)), budget - len(html), budget))
        return html, subject, text

    def render_many(self, items: Iterable[tuple[MessageSpec, CustomerContext]]) -> Iterator[RenderResult]:
        """Render a batch; a failing customer yields an error result and the batch continues.

        A syntax error in a template is not a per-customer problem: it raises
        :class:`TemplateError` (the plan fails before anything is sent).
        """
        for spec, ctx in items:
            self.compile(spec, ctx.locale)  # raises TemplateError for broken templates
            try:
                yield RenderResult(ctx.id, spec.id, email=self.render(spec, ctx))
            except RenderError as exc:
                yield RenderResult(ctx.id, spec.id, error=exc)

    def _render_error(self, compiled: CompiledMessage, ctx: CustomerContext, variables: dict, exc: Exception) -> RenderError:
        """Locate the failure in the original files by rendering them unflattened (error path only)."""
        reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, TemplateError) else str(exc)
        if type(exc).__name__ == "UndefinedError":
            reason = f"undefined variable: {exc}"
        elif type(exc).__name__ == "SecurityError":
            reason = f"blocked by the sandbox: {exc}"
        file, line = None, None
        try:
            render_bounded(self.html_env.get_template(compiled.html_file), variables, self.limits,
                           seconds=min(self.limits.timeout_seconds, LOCATE_SECONDS))
        except Exception as again:  # the same failure, now with the real file and line
            file, line = _template_frame(again.__traceback__, self.templates_dir)
            if file is None and again.__context__ is not None:  # a timeout: where the clock stopped it
                file, line = _template_frame(again.__context__.__traceback__, self.templates_dir)
        if file is None and compiled.subject is not None:
            try:
                _run(compiled.subject, variables, self.limits.max_email_bytes)
            except Exception:  # the campaign's subject failed, not the template: name its file, line and field
                file, line, fld = compiled.spec.subject_where(cached_languages(compiled.locale), self.settings.default_locale)
                return RenderError(ctx.id, compiled.spec.id, f"field '{fld}': {reason}", file, line)
        return RenderError(ctx.id, compiled.spec.id, reason, file or compiled.html_file, line)


def _run(template, variables: dict, budget: int) -> str:
    """One template's output for ``variables``, stopped past ``budget`` characters."""
    return collect(template.root_render_func(template.new_context(variables)), budget)


def _template_frame(tb, root: Path) -> tuple[str | None, int | None]:
    found = (None, None)
    root_s = str(root)
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(root_s) or filename.endswith((".html", ".txt")):
            rel = filename[len(root_s) :].lstrip("/") if filename.startswith(root_s) else filename
            found = (rel, tb.tb_lineno)
        tb = tb.tb_next
    return found

"""``relmail preview``, ``relmail render`` and ``relmail templates check``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import DatabaseError, NotFound, TemplateError, ValidationError
from ._common import echo_json, json_option, pass_state


def _write(output: str | None, data: str | bytes) -> None:
    if output in (None, "-"):
        if isinstance(data, bytes):
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        else:
            click.echo(data, nl=not data.endswith("\n"))
        return
    path = Path(output)
    from ..store.private import write_private

    write_private(path, data)
    click.echo(f"wrote {path}", err=True)


def _find_message(project, message: str, campaign: str | None):
    from ..campaigns import load_campaign, load_campaigns

    campaigns = {campaign: load_campaign(project, campaign)} if campaign else load_campaigns(project)
    for camp in campaigns.values():
        for m in camp.messages:
            if m.id == message:
                return camp, m
    raise NotFound(f"no message '{message}' in the campaigns of {project.campaigns_dir}")


def _customer_context(state, customer_id: str, featured: tuple[str, ...]):
    """The customer as ``relmail send`` would see them now: the same context builder, one customer."""
    from ..render.contexts import customer_contexts, load_catalog
    from ..windows import current_time

    now = current_time()
    with state.engine.connect() as conn:
        contexts = customer_contexts(conn, [customer_id], now, load_catalog(conn, now), featured)
    if customer_id not in contexts:
        raise NotFound(f"no customer '{customer_id}'")
    return contexts[customer_id]


@click.command("preview")
@click.argument("message")
@click.option("--customer", "customer_id", required=True, help="Customer id to render for.")
@click.option("--campaign", help="Campaign name, when several campaigns have a message with this id.")
@click.option("--text", "part", flag_value="text", help="Write the text part instead of the HTML.")
@click.option("--eml", "part", flag_value="eml", help="Write the complete message (RFC 5322 bytes), as sent.")
@click.option("--html", "part", flag_value="html", default=True, help="Write the HTML part (the default).")
@click.option("--images", type=click.Choice(["offline", "remote"]), default="offline", show_default=True,
              help="offline: remote images become grey placeholders of their size (nothing is fetched when you open "
                   "the file); remote: keep the image URLs. Applies to the HTML part.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="File to write (default: stdout).")
@pass_state
def preview(state, message: str, customer_id: str, campaign: str | None, part: str, images: str, output: str | None) -> None:
    """Render MESSAGE of a campaign for one customer, as they would get it.

    Warns (on stderr) when a plan of the campaign's current window would not
    send MESSAGE to the customer: not in its audience, suppressed (with the
    reason codes), or held out. The e-mail is rendered all the same.

    \b
    Example:
      relmail preview ebike-launch --customer C0000042 -o preview.html
      relmail preview ebike-launch --customer C0000042 --images remote -o preview.html
      relmail preview ebike-launch --customer C0000042 --text
      relmail preview ebike-launch --customer C0000042 --eml -o preview.eml
    """
    from ..render import MessageSpec, Renderer
    from ..render.offline import offline_html

    project = state.project
    camp, msg = _find_message(project, message, campaign)
    spec = MessageSpec.from_campaign(camp, msg, run_id="preview")
    ctx = _customer_context(state, customer_id, tuple(msg.products))
    email = Renderer(project).render(spec, ctx)
    _warn_unless_sent(state, camp, msg.id, customer_id)
    html = offline_html(email.html) if images == "offline" else email.html
    _write(output, {"html": html, "text": email.text, "eml": email.raw}[part])


def _warn_unless_sent(state, camp, message_id: str, customer_id: str) -> None:
    """A warning when the plan would not send this message to this customer now (see relmail.planning.preview)."""
    from ..errors import RelmailError
    from ..planning.preview import would_decide

    try:
        verdict = would_decide(state.project, state.engine, camp, customer_id)[message_id]
    except RelmailError as exc:  # a broken segment file must not hide the preview; the plan reports it
        click.echo(f"warning: could not check whether {customer_id} would get {message_id}: {exc}", err=True)
        return
    warning = verdict.warning(customer_id)
    if warning:
        click.echo(f"warning: {warning}", err=True)


@click.command("render")
@click.argument("template")
@click.option("--context", "context_file", type=click.Path(exists=True, dir_okay=False), help="JSON file with the template variables.")
@click.option("--locale", help="Locale picking the template variant and the filters' formats (default: the context's 'locale').")
@click.option("--no-inline", is_flag=True, help="Skip CSS inlining.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="File to write (default: stdout).")
@pass_state
def render_cmd(state, template: str, context_file: str | None, locale: str | None, no_inline: bool, output: str | None) -> None:
    """Render any template (path under templates/) with a JSON context.

    For template authors and CI: undefined variables fail with the file and
    line (exit code 6), exactly as they would in a send, and the render runs
    within the [render] limits of relmail.toml. customer.attributes,
    products and message.data of the context are optional data, as in a send.
    brand, sender, currency, timezone, now and links come from the project,
    and products is empty, unless the context gives them.

    \b
    Example:
      relmail render welcome_offer.html --context sample.json --locale nl_NL
      relmail render partials/footer.html --context sample.json
    """
    from ..render.bounds import LOCATE_SECONDS, Limits, render_bounded
    from ..render.environment import Flattener, content_language, locale_languages, make_environment, template_error
    from ..render.inline import inline_source
    from ..render.optional import optional_context
    from ..render.text import tidy

    project = state.project
    variables = {}
    if context_file:
        try:
            variables = json.loads(Path(context_file).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValidationError(f"{context_file}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        if not isinstance(variables, dict):
            raise ValidationError(f"{context_file}: the context must be a JSON object")
    locale = locale or variables.get("locale") or project.settings.default_locale
    # What a send takes from relmail.toml (brand, sender, currency, ...) is there unless the context says otherwise.
    customer_locale = variables.get("locale", locale)
    variables = optional_context({**_project_variables(project, customer_locale), **variables, "locale": customer_locale})
    is_text = template.endswith(".txt")
    limits = Limits.from_settings(project.settings)
    env = make_environment(project.templates_dir, autoescape=not is_text, limits=limits)
    source, files = Flattener(env, project.templates_dir).flatten(template, locale_languages(locale))
    variables.setdefault("language", content_language(files[0], project.settings.default_locale, project.templates_dir))
    if not is_text and not no_inline:
        source = inline_source(env, source, files[0])
    try:
        result = render_bounded(env.from_string(source), variables, limits)
    except Exception as exc:  # locate the failure in the real files
        try:
            render_bounded(env.get_template(files[0]), variables, limits, seconds=min(limits.timeout_seconds, LOCATE_SECONDS))
        except Exception as again:
            raise template_error(again, files[0]) from None
        raise TemplateError(f"{files[0]}: {exc}") from None
    _write(output, tidy(result) if is_text else result)


def _project_variables(project, locale: str | None = None) -> dict:
    """The variables a send fills from the project: brand, sender, currency, time zone, now, and links to the pages.

    The links carry the word ``preview`` where a send puts a signed token: ``relmail render`` signs nothing.
    """
    from ..render.currency import Currencies
    from ..windows import current_time

    settings = project.settings
    b = settings.brand
    base = settings.unsubscribe_url.rstrip("/")
    return {
        "brand": {"name": b.name, "url": b.url, "color": b.color, "logo_url": b.logo_url, "postal_address": b.postal_address},
        "sender": {"name": settings.sender.from_name, "email": settings.sender.from_email},
        "currency": Currencies.from_settings(settings).for_locale(locale or settings.default_locale),
        "timezone": settings.timezone,
        "now": current_time(),
        "links": {"unsubscribe": f"{base}/unsubscribe/preview", "preferences": f"{base}/preferences/preview", "home": b.url},
        # A send always has the recommendations, often none.
        "products": [],
        "recommended_products": [],
    }


@click.group("templates")
def templates_group() -> None:
    """Lint and check the templates under templates/."""


@templates_group.command("check")
@click.option("--campaign", "-c", "campaign_names", multiple=True,
              help="Check the messages of this campaign only (repeatable; default: every campaign).")
@click.option("--generated", is_flag=True,
              help="Render with generated sample customers, not the store's (no database needed).")
@click.option("--no-compare", is_flag=True, help="Skip the inline-once vs inline-after-render comparison.")
@click.option("--strict", is_flag=True, help="Fail on warnings too (names no sample defines, http links, size over 102 KB, control characters).")
@json_option
@pass_state
def templates_check(state, campaign_names: tuple[str, ...], generated: bool, no_compare: bool, strict: bool, as_json: bool) -> None:
    """Lint every template, and render every campaign message's locale variants as the send will.

    Every file is compiled and linted (syntax with file and line, <img>
    without alt, http links), whatever the other files hold. Then each
    message of each campaign is rendered in every locale variant of its
    templates, with the campaign's message.data, the products the plan would
    recommend, and sample customers from the store: for each variant the
    customer with the most optional fields filled in and the one with the
    fewest. Generated customers are used only when the store holds none (or
    with --generated). A template no campaign uses is compiled and linted,
    not rendered. Findings: render failures, names the templates test or
    default that no sample defines (warnings), HTML over 102 KB as sent and
    control characters U+0080-U+009F (Gmail clips both; warnings), and any difference between the e-mail rendered from the
    once-inlined template and the same e-mail inlined after rendering.
    Exit code 6 when there are errors (with --strict: warnings too); 4 when
    a campaign names a template that does not exist (as for relmail plan).

    \b
    Example:
      relmail templates check
      relmail templates check --campaign weekly --json > template-report.json
      relmail templates check --generated     # in a job without the database
    """
    from ..campaigns import load_campaign, load_campaigns
    from ..planning.output import counted
    from ..render import Renderer
    from ..render.check import check_templates

    project = state.project
    renderer = Renderer(project, signing_key=project.secret("signing_key", required=False) or "templates-check")
    if campaign_names:
        campaigns = [load_campaign(project, name) for name in campaign_names]
    else:
        campaigns = list(load_campaigns(project).values())
    engine = None
    if not generated:
        try:
            engine = state.engine
        except DatabaseError as exc:
            raise DatabaseError(f"{exc} (or check with generated sample customers: relmail templates check --generated)") from None
    report = check_templates(renderer, campaigns, engine, compare=not no_compare, generated=generated)
    findings = report.findings
    failing = [f for f in findings if f.severity == "error" or strict]
    errors = len(report.errors)
    if as_json:
        echo_json({"ok": not failing, "samples": report.samples, "files": report.files, "unused": report.unused,
                   "rendered": [{"campaign": c, "message": m, "variant": v, "samples": n} for c, m, v, n in report.rendered],
                   "findings": [f.as_dict() for f in findings]})
    else:
        for f in findings:
            click.echo(str(f))
        renders = sum(n for *_, n in report.rendered)
        unused = f"; not used by a campaign (linted only): {', '.join(report.unused)}" if report.unused else ""
        click.echo(f"{counted(report.files, 'file')} linted; {counted(len(report.rendered), 'message variant')} rendered for "
                   f"{counted(renders, f'{report.samples} sample customer')}{unused}. "
                   f"{counted(errors, 'error')}, {counted(len(findings) - errors, 'warning')}.", err=True)
    if report.missing:
        # A campaign naming a template that does not exist: its error and exit code (4), as in a plan.
        from ..campaigns import missing_templates_error

        raise missing_templates_error(campaigns, report.missing)
    if failing:
        raise TemplateError(f"templates check failed: {len(failing)} problem(s)")


COMMANDS = [preview, render_cmd, templates_group]

"""``relmail preview``, ``relmail render`` and ``relmail templates check``."""

from __future__ import annotations

import json
import sys
from datetime import UTC
from pathlib import Path

import click

from ..errors import NotFound, TemplateError, ValidationError
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
    path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data, encoding="utf-8")
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
    from datetime import datetime

    from ..render.contexts import customer_contexts, load_catalog

    with state.engine.connect() as conn:
        contexts = customer_contexts(conn, [customer_id], datetime.now(UTC), load_catalog(conn), featured)
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

    \b
    Example:
      relmail render welcome_offer.html --context sample.json --locale nl_NL
      relmail render partials/footer.html --context sample.json
    """
    from ..render.bounds import LOCATE_SECONDS, Limits, render_bounded
    from ..render.environment import Flattener, locale_languages, make_environment, template_error
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
    variables = optional_context({**variables, "locale": variables.get("locale", locale)})
    is_text = template.endswith(".txt")
    limits = Limits.from_settings(project.settings)
    env = make_environment(project.templates_dir, autoescape=not is_text, limits=limits)
    source, files = Flattener(env, project.templates_dir).flatten(template, locale_languages(locale))
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


@click.group("templates")
def templates_group() -> None:
    """Lint and check the templates under templates/."""


@templates_group.command("check")
@click.option("--no-compare", is_flag=True, help="Skip the inline-once vs inline-after-render comparison.")
@click.option("--strict", is_flag=True, help="Fail on warnings too (http links, size over 102 KB).")
@json_option
@pass_state
def templates_check(state, no_compare: bool, strict: bool, as_json: bool) -> None:
    """Lint every template and prove inline-once CSS equals inline-after-render.

    Reports syntax errors with file and line, undefined variables against
    sample customers, <img> without alt, links without https, messages
    over 102 KB (Gmail clips them), and any difference between the e-mail
    rendered from the once-inlined template and the same e-mail inlined
    after rendering. Exit code 6 when there are errors.

    \b
    Example:
      relmail templates check
      relmail templates check --json > template-report.json
    """
    from ..render import Renderer
    from ..render.check import check_templates

    project = state.project
    renderer = Renderer(project, signing_key=project.secret("signing_key", required=False) or "templates-check")
    findings = check_templates(renderer, compare=not no_compare)
    errors = [f for f in findings if f.severity == "error" or strict]
    if as_json:
        echo_json({"ok": not errors, "findings": [f.as_dict() for f in findings]})
    else:
        for f in findings:
            click.echo(str(f))
        warnings = len(findings) - len([f for f in findings if f.severity == "error"])
        click.echo(f"{len(renderer.message_templates())} message templates: "
                   f"{len(findings) - warnings} errors, {warnings} warnings", err=True)
    if errors:
        raise TemplateError(f"templates check failed: {len(errors)} problem(s)")


COMMANDS = [preview, render_cmd, templates_group]

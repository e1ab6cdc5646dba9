"""``relmail serve`` and ``relmail feedback import``: the feedback loop."""

from __future__ import annotations

import click

from ._common import State, echo_json, echo_table, json_option, pass_state

_FORMATS = ("sendgrid", "mailgun", "postmark", "ses")


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8025, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@pass_state
def serve(state: State, host: str, port: int) -> None:
    """Serve unsubscribe links, the preference page and ESP webhooks (development server).

    Routes: /unsubscribe/TOKEN (GET page, POST RFC 8058 one-click),
    /preferences/TOKEN, /webhooks/{sendgrid,mailgun,postmark,ses}, /healthz.
    In production run the same app under a WSGI server:
    RELMAIL_PROJECT=/path/to/shop gunicorn 'relmail.web:create_app()'
    Logs go to stderr, one line per request, without colour codes unless
    stderr is a terminal.

    \b
    Example:
      relmail serve --port 8025
      curl -X POST -d List-Unsubscribe=One-Click http://127.0.0.1:8025/unsubscribe/TOKEN
    """
    import logging
    import sys

    import werkzeug.serving
    from werkzeug.serving import run_simple

    from ..web.app import make_app

    project = state.project
    app = make_app(project, state.engine)
    project.secret("signing_key")  # fail now, not on the first click
    if not sys.stderr.isatty():
        # werkzeug colours its request log for a terminal; a file or a pipe gets plain lines.
        werkzeug.serving._log_add_style = False
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    click.echo(f"relmail serving {project.settings.name} on http://{host}:{port}/ (development server)", err=True)
    click.echo(f"production: RELMAIL_PROJECT={project.root} gunicorn 'relmail.web:create_app()'", err=True)
    run_simple(host, port, app, use_reloader=False, use_debugger=False, threaded=True)


@click.group("feedback")
def feedback() -> None:
    """Import ESP events (bounces, complaints, unsubscribes, opens, clicks)."""


@feedback.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(_FORMATS), required=True, help="The provider that exported FILE.")
@click.option("--dry-run", is_flag=True, help="Validate and count; write nothing.")
@json_option
@pass_state
def feedback_import(state: State, file: str, fmt: str, dry_run: bool, as_json: bool) -> None:
    """Import an ESP's exported events: all of them, or none if any record is invalid.

    Formats: sendgrid (webhook events as JSON array, JSON Lines or CSV),
    mailgun (Events API page or JSON Lines), postmark (webhook objects or a
    Bounces/Opens/Clicks API page), ses (JSON Lines of SES events or SNS
    messages). Events already stored are counted as duplicates. Hard bounces,
    complaints and unsubscribes suppress the address in every later plan.

    \b
    Example:
      relmail feedback import events.jsonl --format sendgrid
      relmail feedback import bounces.json --format postmark --json
    """
    from collections import Counter

    from ..feedback import import_file, read_export

    if dry_run:
        events = read_export(file, fmt)
        counts = Counter(e.type for e in events)
        summary = {"file": file, "format": fmt, "dry_run": True, "events": len(events), "by_type": dict(sorted(counts.items()))}
        if as_json:
            echo_json(summary)
        else:
            click.echo(f"{file}: {len(events)} valid event(s); nothing written (--dry-run)")
            echo_table(sorted(counts.items()), ["type", "events"])
        return
    result = import_file(state.engine, file, fmt)
    if as_json:
        echo_json({"file": file, "format": fmt, **result.as_dict()})
        return
    click.echo(
        f"{file}: {result.total_applied} new event(s), {result.duplicates} already stored, "
        f"{result.unknown_recipients} unknown recipient(s) skipped, {result.opt_outs} opt-out(s)"
    )
    echo_table(sorted(result.applied.items()), ["type", "new"])


COMMANDS = [serve, feedback]

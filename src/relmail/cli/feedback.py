"""``relmail serve`` and ``relmail feedback import``: the feedback loop."""

from __future__ import annotations

from collections import Counter

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

    \b
    Example:
      relmail serve --port 8025
      curl -X POST -d List-Unsubscribe=One-Click http://127.0.0.1:8025/unsubscribe/TOKEN
    """
    from werkzeug.serving import run_simple

    from ..web.app import make_app

    project = state.project
    app = make_app(project, state.engine)
    project.secret("signing_key")  # fail now, not on the first click
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
@click.option("--strict", is_flag=True, help="Write nothing if any event is invalid (default: apply the valid ones).")
@json_option
@pass_state
def feedback_import(state: State, file: str, fmt: str, dry_run: bool, strict: bool, as_json: bool) -> None:
    """Import an ESP's exported events; one invalid event does not stop the others.

    Formats: sendgrid (webhook events as JSON array, JSON Lines or CSV),
    mailgun (Events API page or JSON Lines), postmark (webhook objects or a
    Bounces/Opens/Clicks API page), ses (JSON Lines of SES events or SNS
    messages); any of them gzip-compressed (.gz). Valid events are applied;
    each invalid one is reported with its line and index, recorded with the
    provider's raw event (see 'relmail feedback rejects') and makes the
    command exit 4 after the valid ones were applied. With --strict a file
    with any invalid event writes nothing. A file that cannot be read at all
    (corrupt gzip, broken JSON) writes nothing and exits 4. Events already
    stored are counted as duplicates, so importing a file again is safe.
    Hard bounces, complaints and unsubscribes suppress the address in every
    later plan.

    \b
    Example:
      relmail feedback import events.jsonl --format sendgrid
      relmail feedback import bounces.json.gz --format postmark --json
    """
    from ..feedback import ingest, invalid_events, read_export

    batch = read_export(file, fmt)
    if dry_run:
        counts = Counter(e.type for e in batch.events)
        summary = {"file": file, "format": fmt, "dry_run": True, "received": batch.records, "events": len(batch.events),
                   "by_type": dict(sorted(counts.items())), "ignored": dict(sorted(batch.ignored.items())),
                   "invalid": [bad.as_dict() for bad in batch.invalid]}
        if as_json:
            echo_json(summary)
        else:
            click.echo(f"{file}: {len(batch.events)} valid event(s), {len(batch.invalid)} invalid; nothing written (--dry-run)")
            echo_table(sorted(counts.items()), ["type", "events"])
            _echo_invalid(batch.invalid)
        if batch.invalid:
            raise invalid_events(batch)
        return
    if strict and batch.invalid:
        raise invalid_events(batch)
    result = ingest(state.engine, batch)
    if as_json:
        echo_json({"file": file, "format": fmt, **result.as_dict()})
    else:
        ignored = sum(result.ignored.values())
        click.echo(
            f"{file}: {batch.records} provider event(s): {result.total_applied} new, {result.duplicates} already stored, "
            f"{result.unknown_recipients} unknown recipient(s) skipped, {ignored} of kinds relmail does not track, "
            f"{len(result.invalid)} invalid; {result.opt_outs} opt-out(s)"
        )
        echo_table(sorted(result.applied.items()), ["type", "new"])
        _echo_invalid(result.invalid)
    if result.invalid:
        raise invalid_events(batch, applied=True)


def _echo_invalid(invalid) -> None:
    if invalid:
        click.echo()
        echo_table([(bad.line if bad.line is not None else "", bad.index, bad.field or "", bad.reason) for bad in invalid],
                   ["line", "event #", "field", "reason"])


@feedback.command("rejects")
@click.option("--provider", "provider_name", type=click.Choice(_FORMATS), help="Only this provider's events.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many, newest first.")
@json_option
@pass_state
def feedback_rejects(state: State, provider_name: str | None, limit: int, as_json: bool) -> None:
    """List provider events relmail could not use (from webhooks and imports), newest first.

    Each shows where it came from (webhook, or the file and line), the event's
    index, the field and the reason; --json adds the provider's raw event.
    Fix the cause and import the events again (for example from the
    provider's event export); nothing here is applied by itself.

    \b
    Example:
      relmail feedback rejects
      relmail feedback rejects --provider sendgrid --json | jq '.[0].raw_event | fromjson'
    """
    from ..feedback.ingest import rejects

    rows = rejects(state.engine, provider_name, limit)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("No invalid provider events recorded.")
        return
    echo_table([(r["received_at"][:19], r["provider"], r["source"], r["line"] if r["line"] is not None else "", r["position"],
                 r["field"] or "", r["reason"]) for r in rows],
               ["received", "provider", "source", "line", "event #", "field", "reason"])


COMMANDS = [serve, feedback]

"""``relmail serve`` and ``relmail feedback import``: the feedback loop."""

from __future__ import annotations

from collections import Counter

import click

from ._common import State, echo_json, echo_table, json_option, pass_state

_FORMATS = ("sendgrid", "mailgun", "postmark", "ses", "brevo", "mailjet", "mandrill")


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
# Not 8025 or 1025 (MailHog's and Mailpit's web and SMTP ports), 1080 (MailDev, MailCatcher) or 9000 (Inbucket):
# a mail catcher often runs beside relmail while templates are tried. Not 8000 either (gunicorn, mkdocs serve,
# and the dev servers of Laravel, Symfony and Django shops) nor 5000 (Flask, macOS's AirPlay receiver).
# 8080 is HTTP's registered alternative port and the default of waitress and bottle.
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@pass_state
def serve(state: State, host: str, port: int) -> None:
    """Serve unsubscribe links, the preference page and ESP webhooks (development server).

    Routes: /unsubscribe/TOKEN (GET page, POST RFC 8058 one-click),
    /preferences/TOKEN, /webhooks/{sendgrid,mailgun,postmark,ses,brevo,mailjet,mandrill}, /healthz.
    In production run the same app under a WSGI server:
    RELMAIL_PROJECT=/path/to/shop gunicorn 'relmail.web:create_app()'
    Logs go to stderr, one line per request, without colour codes unless
    stderr is a terminal.

    \b
    Example:
      relmail serve
      curl -X POST -d List-Unsubscribe=One-Click http://127.0.0.1:8080/unsubscribe/TOKEN
      relmail serve --host 0.0.0.0 --port 8090
    """
    import logging
    import sys

    import werkzeug.serving
    from werkzeug.serving import run_simple

    from ..feedback import webhook_unready
    from ..web.accesslog import redact_request_log
    from ..web.app import make_app
    from ..web.check import check_pages

    project = state.project
    app = make_app(project, state.engine)
    project.secret("signing_key")  # fail now, not on the first click
    for problem in check_pages(project):
        fallback = "" if (problem.file or "").endswith(".po") else " (customers get relmail's own page instead)"
        click.echo(f"warning: {problem}{fallback}", err=True)
    if unready := webhook_unready(project):
        click.echo(f"warning: {unready}", err=True)
    if not sys.stderr.isatty():
        # werkzeug colours its request log for a terminal; a file or a pipe gets plain lines.
        werkzeug.serving._log_add_style = False
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redact_request_log()
    click.echo(f"relmail serving {project.settings.name} on http://{host}:{port}/ (development server)", err=True)
    click.echo(f"production: RELMAIL_PROJECT={project.root} gunicorn 'relmail.web:create_app()'", err=True)
    run_simple(host, port, app, use_reloader=False, use_debugger=False, threaded=True)


@click.group("feedback")
def feedback() -> None:
    """Import ESP events and the bounce mailbox (bounces, complaints, unsubscribes, opens, clicks)."""


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
    messages), brevo (webhook events as JSON array, JSON Lines or CSV, or
    a page of the events API), mailjet (saved webhook bodies: event objects
    or arrays, or JSON Lines), mandrill (saved mandrill_events arrays, or
    JSON Lines); any of them gzip-compressed (.gz). Valid events are applied;
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

    batch = read_export(file, fmt, state.project)
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
            + (f"; {result.proofs} about proofs, not applied" if result.proofs else "")
        )
        if result.applied:
            echo_table(sorted(result.applied.items()), ["type", "new"])
        _echo_invalid(result.invalid)
    if result.invalid:
        raise invalid_events(batch, applied=True)


def _echo_invalid(invalid) -> None:
    if invalid:
        click.echo()
        echo_table([(bad.line if bad.line is not None else "", bad.index, bad.field or "", bad.reason) for bad in invalid],
                   ["line", "event #", "field", "reason"])


@feedback.command("bounces")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--dry-run", is_flag=True, help="Read and match; write nothing.")
@click.option("--review-file", type=click.Path(dir_okay=False, writable=True),
              help="Also write the hand-written unsubscribe requests to review to this CSV file.")
@json_option
@pass_state
def feedback_bounces(state: State, paths: tuple[str, ...], dry_run: bool, review_file: str | None, as_json: bool) -> None:
    """Import the bounce mailbox of your own SMTP server: DSNs, other bounces, ARF complaints.

    PATHS are mbox files, Maildir folders (with cur/ and new/), .eml files or
    folders of .eml files: the mailbox of the envelope sender ([delivery.smtp]
    envelope_from), delivered there by your mail server, fetchmail or getmail.
    Each message is read as an RFC 3464 delivery status notification
    (per recipient: Action, Status, Diagnostic-Code), an RFC 5965 abuse
    report (a complaint: every topic withdrawn), or a bounce in an older
    format (qmail, Exim, Exchange ...), or an unsubscribe request a mail
    program sent to [unsubscribe] mailto (subject 'unsubscribe TOKEN': the
    token's signature is checked with RELMAIL_SIGNING_KEY, and the customer
    leaves that e-mail's list, as with its one-click link); auto-replies and
    other mail are counted and skipped. A request written by hand (subject
    or first line "unsubscribe", "remove me" ...) has no token: it opts the
    sender out of everything when the Authentication-Results of
    [unsubscribe] authserv_id show DMARC (or aligned DKIM) passed for the
    From domain and the From address is a customer's; otherwise it is
    listed for review (and written to --review-file), never applied. A permanent failure about the address (5.x.x,
    except policy, content and size refusals) is a hard bounce and
    suppresses the customer in every later plan; delays and 4.x.x failures
    are soft bounces.

    Each bounce is tied to the e-mail it answers by the returned Message-ID
    (or X-Relmail-Message-ID, which e-mails sent through Mailjet carry: Mailjet
    writes its own Message-ID), else by the recipient address (the
    customer's latest e-mail before the bounce); bounces no relmail e-mail
    answers are listed, not applied. Mailjet receives the bounces of its
    e-mails itself: with adapter "mailjet" the command warns that this
    mailbox gets only the stray ones, and the Mailjet webhook the rest.
    With [delivery.smtp] verp = true, a bounce is tied to the e-mail its
    signed return-path tag names; one without a valid tag is unverified:
    listed, not applied (verp_required = false also applies one whose
    Message-ID the ledger holds).
    Importing the same mailbox again writes nothing new. An unusable message
    is recorded ('relmail feedback rejects') and listed with its file and
    line; the others are applied, and the command exits 4.

    \b
    Example:
      relmail feedback bounces /var/mail/bounces
      relmail feedback bounces ~/Maildir/.Bounces --json
      relmail feedback bounces saved/*.eml --dry-run
    """
    from ..delivery import delivery_config
    from ..feedback import import_bounces

    key = state.project.secret("signing_key", False)
    settings = state.project.settings
    if delivery_config(settings.section("delivery"))[0] == "mailjet":
        click.echo(MAILJET_BOUNCES, err=True)
    result = import_bounces(state.engine, paths, dry_run=dry_run, signing_key=key, return_path=return_path(state.project, key),
                            project_name=settings.name, authserv_id=settings.unsubscribe_authserv_id)
    if review_file and result.review:
        _write_review(review_file, result.review)
    if as_json:
        echo_json(result.as_dict())
    else:
        _echo_bounces(result)
    error = result.error()
    if error is not None:
        raise error


#: Mailjet's return path is its own: the bounces of its e-mails go to Mailjet, not to the shop's mailbox.
MAILJET_BOUNCES = (
    "warning: this project sends through Mailjet, which receives the bounces of its e-mails at its own return path "
    "and reports them to the Mailjet webhook (relmail serve, /webhooks/mailjet); this mailbox gets only bounces "
    "sent to the From or Reply-To address. Mailjet writes the Message-ID itself: such a bounce is matched by the "
    "X-Relmail-Message-ID header it returns, else by the recipient's address")


def return_path(project, key: str | None):
    """The tagged return path of ``[delivery.smtp] verp``, whichever adapter sends now; None without it."""
    from ..delivery import delivery_config
    from ..delivery.verp import from_config

    _, config = delivery_config(project.settings.section("delivery"), "smtp")
    return from_config(config, key)


def _echo_bounces(result) -> None:
    a = result.applied
    ignored = ", ".join(f"{n} {kind}" for kind, n in sorted(result.ignored.items())) or "0"
    unmatched = f"{len(result.unmatched)} unmatched" + (f" ({result.unverified} unverified)" if result.unverified else "")
    where = result.sources[0] if len(result.sources) == 1 else f"{len(result.sources)} mailboxes"
    if result.dry_run:
        click.echo(f"{where}: {result.messages} message(s): {a.total_applied} event(s) matched, {unmatched}, "
                   f"ignored {ignored}, {len(result.invalid)} unusable; nothing written (--dry-run)")
    else:
        click.echo(f"{where}: {result.messages} message(s): {a.total_applied} new event(s), {a.duplicates} already stored, "
                   f"{unmatched}, ignored {ignored}, {len(result.invalid)} unusable; {a.opt_outs} opt-out(s)")
    if a.applied:  # a cron job that found nothing new logs one line, not an empty table
        echo_table(sorted(a.applied.items()), ["type", "events" if result.dry_run else "new"])
    if result.unmatched:
        click.echo("\nNot applied: no e-mail of relmail's answers these")
        echo_table([(u.where, u.recipient, u.type, u.why) for u in result.unmatched], ["message", "recipient", "type", "why"])
    if result.invalid:
        click.echo()
        echo_table([(f"{bad.raw['file']}:{bad.line}" if bad.line else bad.raw["file"], bad.field or "", bad.reason)
                    for _, bad in result.invalid], ["message", "field", "reason"])
    if result.review:
        click.echo(f"\n{len(result.review)} unsubscribe request(s) without a token to review: remove the sender by hand "
                   "if the request is genuine")
        echo_table([(u.where, u.recipient, u.why) for u in result.review], ["message", "sender", "why"])


def _write_review(path: str, review) -> None:
    """The hand-written requests to review, as CSV (message file, sender, why)."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["message", "sender", "why"])
        writer.writerows((u.where, u.recipient, u.why) for u in review)


@feedback.command("resubscribe")
@click.option("--dry-run", is_flag=True, help="List what would be lifted; call nothing.")
@json_option
@pass_state
def feedback_resubscribe(state: State, dry_run: bool, as_json: bool) -> None:
    """Lift the ESP's unsubscribe listing of customers who opted in again on relmail's preference page.

    SendGrid drops every e-mail to an address on its global unsubscribe list
    or on a group's, Brevo every e-mail to an address on its transactional
    blocked contacts, and Mandrill every e-mail to an address on its
    rejection denylist, whatever relmail decided. For each opt-in
    made on the preference page after an unsubscribe that came from the ESP,
    this deletes the listing the opt-in covers: at SendGrid the topic's group
    of [delivery.sendgrid] asm_groups, or, for "everything", the global list
    (and the "*" group); at Brevo the blocked contact and at Mandrill the
    denylist entry, when "everything" is switched back on (never for an
    address the ESP reported a hard bounce or a spam complaint for). relmail send does the same before its first e-mail;
    run this to lift sooner or to see what is pending. A call the ESP refuses
    is listed with its reason and the command exits 7; the next run tries it
    again. With any other adapter there is nothing to lift: it says so and
    exits 0.

    \b
    Example:
      relmail feedback resubscribe --dry-run
      relmail feedback resubscribe && relmail send weekly
    """
    from ..delivery import delivery_config, get_adapter
    from ..errors import DeliveryError
    from ..feedback.resubscribe import PROVIDERS, ResubscribeResult, resubscribe

    project = state.project
    name, config = delivery_config(project.settings.section("delivery"))
    esp = PROVIDERS.get(name)
    if esp is None:
        # Nothing to lift is not a failure: a scheduled "resubscribe && send" keeps sending after the shop
        # moves from SendGrid, Brevo or Mandrill to an adapter whose provider keeps no list relmail lifts.
        if as_json:
            echo_json(ResubscribeResult(dry_run=dry_run).as_dict())
        else:
            click.echo(f"adapter {name!r}: relmail lifts the unsubscribe lists of SendGrid, Brevo and Mandrill only; "
                       "nothing to lift")
        return
    adapter = get_adapter(name, config, project.secret)
    try:
        result = resubscribe(state.engine, adapter, dry_run=dry_run)
    finally:
        adapter.close()
    if as_json:
        echo_json(result.as_dict())
    else:
        verb = "to lift (--dry-run, nothing called)" if dry_run else "lifted"
        customers = len({x.customer_id for x in result.lifted})
        click.echo(f"{esp.label}: {len(result.lifted)} listing(s) of {customers} customer(s) {verb}, {len(result.failed)} failed")
        rows = [(x.customer_id, esp.describe(x.listing), x.error or ("to lift" if dry_run else "lifted"))
                for x in result.lifted + result.failed]
        if rows:
            echo_table(rows, ["customer", f"{esp.label} list", "result"])
    if result.failed:
        first = result.failed[0]
        raise DeliveryError(f"{esp.label} did not lift {len(result.failed)} listing(s) (first: customer "
                            f"{first.customer_id}, {esp.describe(first.listing)}: {first.error}); "
                            "the next run tries them again")


@feedback.command("rejects")
@click.option("--provider", "provider_name", type=click.Choice((*_FORMATS, "smtp")),
              help="Only this provider's events (smtp: the bounce mailbox).")
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

"""Learning-loop commands: ``model train|evaluate|list``, ``runs import``, ``report incrementality``."""

from __future__ import annotations

from datetime import timedelta

import click

from ._common import echo_json, echo_table, json_option, pass_state


def _shared_group(name: str, help_text: str) -> tuple[click.Group, bool]:
    """The root's group ``name`` if another module made it already, else a new one.

    ``runs`` and ``report`` hold commands of several stages; joining an
    existing group keeps the others' subcommands instead of replacing them.
    """
    from . import cli as root

    existing = root.commands.get(name)
    if isinstance(existing, click.Group):
        return existing, False
    return click.Group(name, help=help_text), True


@click.group("model")
def model() -> None:
    """Train, evaluate, list the propensity / uplift / irritation models, and write their predictions."""


dir_option = click.option("--dir", "models_folder", type=click.Path(file_okay=False), default=None,
                          help="Models folder (default: [model] dir, else models/ in the project). "
                               "Train an experiment into a folder of its own, then evaluate or predict from it.")


def _root(state, folder):
    from ..learn import store

    return store.models_dir(state.project, folder)


@model.command("train")
@click.option("--message", "-m", "messages", multiple=True, help="Train only this message (repeatable). Default: every message in the ledger.")
@click.option("--outcome", "-o", "outcomes", multiple=True, type=click.Choice(["open", "click", "visit", "conversion"]),
              help="Outcome(s) to model (default: [model] outcomes, else all four).")
@click.option("--split-seed", type=int, default=None, help="Seed of the customer split into training and test parts (default 0).")
@click.option("--test-share", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Share of customers kept out for 'model evaluate', from 0 up to (not including) 1 (default 0.3).")
@click.option("--window-days", type=click.FloatRange(0, min_open=True), default=None,
              help="Outcome window after the send time, in days (default 14).")
@click.option("--criterion", type=click.Choice(["qini", "keep_at_30", "keep_at_50"]), default=None,
              help="What the estimator choice maximizes (default qini).")
@dir_option
@click.option("--replace", is_flag=True, help="Overwrite each model's newest version instead of adding a version.")
@json_option
@pass_state
def train_cmd(state, messages, outcomes, split_seed, test_share, window_days, criterion, models_folder, replace, as_json) -> None:
    """Train a model per message from the ledger, picking the best uplift estimator.

    Candidates (T-learner, X-learner, transformed outcome and the
    proportional model on logistic regression and gradient boosting, a
    solo logistic model (the sent flag as a feature), a
    logistic interaction model, which is replaced by the same model pooled
    with the other messages' sends when there are any, and for conversions
    the funnel: the visit model times a visitor's chance to buy) are
    compared by cross-fitting on the
    training customers, over 3 repeated 2-fold splits ([model] cv_repeats);
    the best must beat the safe model (the funnel for conversions, else the
    proportional model) by more than its standard error, else the safe
    model is kept. The winner is refitted,
    its uplift calibrated, and saved as a new version in models/<message>/
    with its reason. --replace overwrites the newest version instead, and
    --dir trains into another folder: experiments need not stack versions
    on the models the plan uses.

    \b
    Example:
      relmail model train
      relmail model train --message newsletter --outcome click --split-seed 7
      relmail model train --outcome visit --split-seed 3 --dir /tmp/exp --replace
    """
    from ..learn.train import TrainOptions, train

    overrides = {"split_seed": split_seed, "test_share": test_share, "criterion": criterion, "replace": replace or None,
                 "outcomes": tuple(outcomes) or None, "window": timedelta(days=window_days) if window_days else None}
    options = TrainOptions.from_project(state.project, **overrides)
    results = train(state.engine, _root(state, models_folder), list(messages) or None, options)
    if as_json:
        echo_json(results)
        return
    for res in results:
        pooled = (f" and {res['sibling_sends']:,} sends of {', '.join(res['sibling_messages'])} (for the pooled estimator)"
                  if res.get("sibling_sends") else "")
        held = f", {res['test_rows']:,} test decisions held back for 'model evaluate'" if res.get("test_rows") else ""
        click.echo(f"{res['message']}: version {res['version']} from {res['rows']:,} training decisions{held}{pooled} ({res['path']})")
        for outcome, sel in res["selection"].items():
            click.echo(f"  {outcome}: {sel['chosen'] or 'propensity only'} — {sel['reason']}")
        for outcome, why in res["skipped"].items():
            click.echo(f"  {outcome}: skipped — {why}")
        if res.get("replaced"):
            gone = res["replaced"]
            click.echo(f"  Note: version {gone['version']} learned {', '.join(gone['outcomes'])}; --replace dropped "
                       f"{', '.join(gone['dropped'])}, which a plan can no longer score {res['message']} on "
                       f"(name every outcome to keep, or train without --replace)")


@model.command("evaluate")
@click.option("--message", "-m", "messages", multiple=True, help="Evaluate only this message's model (repeatable).")
@dir_option
@json_option
@pass_state
def evaluate_cmd(state, messages, models_folder, as_json) -> None:
    """Score the newest models on their held-back test customers, against baselines.

    Propensity: AUC, Brier score, calibration error. Uplift: Qini
    coefficient and the share of incremental outcomes kept at 10/30/50% of
    volume, next to random targeting and response-model targeting. The
    test customers are those relmail.learn.split_mask marks with the
    model's split seed and test share (in --json under "split"; customer
    ids that share an address are one mailbox, on one side of the split and
    counted once); 'relmail model predict --split test' writes their
    predictions.

    \b
    Example:
      relmail model evaluate
      relmail model evaluate --message newsletter --json | jq '.[0].outcomes'
    """
    from ..learn.evaluate import evaluate, unreliable_lifts

    results = evaluate(state.engine, _root(state, models_folder), list(messages) or None)
    if as_json:
        echo_json(results)
        return
    rows = []
    for res in results:
        for outcome, entry in res["outcomes"].items():
            prop = entry["propensity"]
            up = entry.get("uplift")
            base = [res["message"], outcome, entry["chosen"] or "-", prop["auc"], prop["calibration_error"]]
            if up:
                for who in ("model", "response", "random"):
                    f = up[who]
                    rows.append(base + [who, f["qini"], f["keep_at_10"], f["keep_at_30"], f["keep_at_50"]])
                    base = ["", "", "", None, None]
            else:
                rows.append(base + ["-", None, None, None, None])
    echo_table(rows, ["message", "outcome", "estimator", "auc", "calib.err", "targeting", "qini", "keep@10", "keep@30", "keep@50"])
    for sentence in unreliable_lifts(results):
        click.echo(f"Note: {sentence}")


@model.command("predict")
@click.option("--message", "-m", "messages", multiple=True, help="Only this message's model (repeatable). Default: every model.")
@click.option("--outcome", "-o", type=click.Choice(["open", "click", "visit", "conversion"]), default=None,
              help="The outcome to predict (default: the model's primary outcome, named in the output).")
@click.option("--split", type=click.Choice(["test", "train", "all"]), default="test", show_default=True,
              help="The model's test customers, its training customers, or both.")
@click.option("--version", type=int, default=None, help="This model version instead of the newest.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, allow_dash=True), help="CSV file to write ('-': standard output).")
@dir_option
@json_option
@pass_state
def predict_cmd(state, messages, outcome, split, version, models_folder, out, as_json) -> None:
    """Write a model's predictions for the decisions it learned from, one row per decision.

    Rows are the message's decisions of closed runs (a customer once per
    run), by default only the model's test customers. Columns: decision_id,
    run_id, customer_id, message_id, split (test|train), sent (1 send,
    0 hold-out), the observed outcome, every feature the model reads as the
    decision logged it, and the predictions p_sent (P(outcome | sent)),
    uplift (calibrated) and irritation (P(unsubscribe or complaint | sent)).
    Ranking the test rows by uplift reproduces 'relmail model evaluate'.

    \b
    Example:
      relmail model predict --message womens --outcome visit --out scores.csv
      relmail model predict -m womens -o visit --split all --out - | head
    """
    from ..learn.predict import predict, write_csv

    preds = predict(state.engine, _root(state, models_folder), list(messages) or None, outcome, split, version)
    rows = write_csv(preds, out)
    summary = [{"message": p.message, "version": p.version, "outcome": p.outcome, "split": p.split, "rows": len(p),
                "customers": len(set(p.columns["customer_id"]))} for p in preds]
    if as_json:
        echo_json({"out": out, "rows": rows, "models": summary})
    elif out != "-":
        for s in summary:
            click.echo(f"{s['message']} v{s['version']}: {s['rows']:,} {s['split']} rows ({s['customers']:,} customers), "
                       f"outcome {s['outcome']} → {out}")


@model.command("list")
@dir_option
@json_option
@pass_state
def list_cmd(state, models_folder, as_json) -> None:
    """List the trained models: newest version, training dates, chosen estimators.

    \b
    Example:
      relmail model list
    """
    from ..learn import store

    metas = store.list_models(_root(state, models_folder))
    if as_json:
        echo_json([{k: m.get(k) for k in ("key", "version", "created", "training", "selection", "sha256")} for m in metas])
        return
    rows = []
    for m in metas:
        tr = m["training"]
        chosen = ", ".join(f"{o}={s.get('chosen') or 'propensity'}" for o, s in m["selection"].items())
        rows.append([m["key"], m["version"], m["created"], f"{(tr['date_from'] or '')[:10]}..{(tr['date_to'] or '')[:10]}", tr["rows"], chosen])
    echo_table(rows, ["message", "version", "created", "trained on", "rows", "estimators"])


runs, _new_runs = _shared_group("runs", "Runs in the ledger.")


@runs.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--categorical", "categorical", multiple=True, metavar="COL",
              help="A feature column whose values are codes, not quantities (zip codes, store numbers): kept as text (repeatable).")
@json_option
@pass_state
def runs_import(state, file, categorical, as_json) -> None:
    """Import a historical run (sends and hold-outs with features) into the ledger.

    CSV or JSON Lines with run_id, campaign, window, as_of, customer_id,
    message_id, action (send|holdout); every other column is a feature.
    Values that look like numbers become numbers, unless the column is
    named with --categorical: then the model treats each value as a
    category of its own.

    \b
    Example:
      relmail import customers customers.csv
      relmail runs import past_campaign.csv --categorical zip_code
      relmail import events outcomes.csv
    """
    from ..errors import ValidationError
    from ..learn.history import import_history
    from .imports import _fail

    try:
        res = import_history(state.engine, file, categorical=categorical)
    except ValidationError as exc:
        _fail(exc, 0, as_json)  # every problem on its own line, as 'relmail import' lists them
    if as_json:
        echo_json(res.__dict__)
    else:
        click.echo(f"imported run(s) {', '.join(res.runs)}: {res.decisions:,} decisions ({res.sends:,} sends, {res.holdouts:,} hold-outs)")


report, _new_report = _shared_group("report", "Reports on past runs.")


@report.command("incrementality")
@click.argument("run", required=False)
@click.option("--window-days", type=float, default=None, help="Outcome window after the send time (default [model] window_days, else 14).")
@click.option("--confidence", type=float, default=0.95, show_default=True, help="Confidence level of the intervals.")
@json_option
@pass_state
def report_incrementality(state, run, window_days, confidence, as_json) -> None:
    """Lift per message with a confidence interval: sends against hold-outs.

    \b
    Example:
      relmail report incrementality
      relmail report incrementality weekly-2026-W48 --json
    """
    from ..learn.incrementality import incrementality

    days = window_days or float(state.project.settings.section("model").get("window_days", 14))
    entries = incrementality(state.engine, run, timedelta(days=days), confidence=confidence)
    if as_json:
        echo_json(entries)
        return
    if not entries:
        click.echo("no run with hold-outs and a closed outcome window")
        return
    rows = []
    for e in entries:
        for name in ("open", "click", "visit", "conversion", "unsubscribe", "complaint"):
            o = e["outcomes"][name]
            if o["rate_sent"] == 0 and o["rate_holdout"] == 0:
                continue
            rows.append([e["run"], e["message"], e["sends"], e["holdouts"], name, o["rate_sent"], o["rate_holdout"],
                         o["lift"], f"[{o['low']:+.4f}, {o['high']:+.4f}]", "yes" if o["significant"] else "no"])
        rows.append(revenue_row(e))
    echo_table(rows, ["run", "message", "sends", "holdouts", "outcome", "rate sent", "rate hold", "lift", f"{confidence:.0%} CI", "significant"])
    click.echo("revenue per customer: the mean purchase value within the window of a customer sent the e-mail and of one held out")


def revenue_row(e: dict) -> list:
    """The table row of an entry's revenue per customer: means of sends and hold-outs, lift and interval in money, 2 decimals."""
    import math

    def money(value: float | None, spec: str = ".2f") -> str:
        return "–" if value is None or not math.isfinite(value) else format(value, spec)

    r = e["revenue_per_customer"]
    interval = "–" if money(r["low"]) == "–" else f"[{money(r['low'], '+.2f')}, {money(r['high'], '+.2f')}]"
    return [e["run"], e["message"], e["sends"], e["holdouts"], "revenue per customer", money(r["sent"]), money(r["holdout"]),
            money(r["lift"], "+.2f"), interval, "yes" if r["significant"] else "no"]


COMMANDS = [model] + ([runs] if _new_runs else []) + ([report] if _new_report else [])

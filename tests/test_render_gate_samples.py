"""The plan's render gate renders each variant for its fullest and emptiest recipients, as ``templates check`` does.

A template that prints an attribute only most customers have passes a gate
that draws a few recipients at random; the few without it are the variant's
emptiest recipients, whom the gate renders whatever it draws.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from relmail.cli import cli
from relmail.planning.run import plan
from relmail.store.models import Customer

AS_OF = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
WINDOW = "2026-W48"
PLAN = ["plan", "weekly", "--window", WINDOW, "--as-of", AS_OF.isoformat(), "--dry-run"]

#: The base launch e-mail (English customers) prints the customer's city: an error for a customer without one.
PRINTS_CITY = "{% block content %}\n<tr><td>Rides in {{ customer.attributes.city }}</td></tr>\n"
#: The same line written for optional data: tested, so a customer without a city reads the e-mail without it.
TESTS_CITY = "{% block content %}\n{% if customer.attributes.city %}<tr><td>Rides in {{ customer.attributes.city }}</td></tr>{% endif %}\n"


@pytest.fixture
def demo(project, engine):
    from relmail.demo import generate

    generate(engine, customers=3000, seed=7, as_of=AS_OF)
    return project


def _launch_senders(project, engine) -> list[str]:
    d = plan(project, engine, "weekly", WINDOW, as_of=AS_OF, dry_run=True).decisions
    return sorted(d.customer_id[(d.message_id == "ebike-launch") & (d.action == "send")].tolist())


def _without_city(project, engine) -> tuple[list[str], str, int]:
    """Two launch recipients out of many lose their city (and the rest of their attributes but the tier),
    as customers a CRM import brought in sparse; the base launch template prints the city. Returns them, the file
    and the line printing the city."""
    c = Customer.__table__
    with engine.begin() as conn:
        conn.execute(update(c).values(locale="en_GB"))  # one variant of the launch for every recipient
    senders = _launch_senders(project, engine)
    assert len(senders) > 60
    sparse = [senders[len(senders) // 3], senders[2 * len(senders) // 3]]
    with engine.begin() as conn:
        conn.execute(update(c).where(c.c.id.in_(sparse)).values(attributes={"loyalty_tier": "new"}))
    assert _launch_senders(project, engine) == senders
    path = project.templates_dir / "ebike_launch.html"
    source = path.read_text(encoding="utf-8")
    path.write_text(source.replace("{% block content %}\n", PRINTS_CITY, 1), encoding="utf-8")
    return sparse, "ebike_launch.html", source.split("{% block content %}")[0].count("\n") + 2


def test_a_template_failing_only_for_the_few_recipients_without_an_attribute_fails_the_gate(demo, engine, tmp_path):
    sparse, file, line = _without_city(demo, engine)
    out = CliRunner().invoke(cli, ["-p", str(demo.root), *PLAN, "--render-sample", "3", "--out", str(tmp_path / "plan.md")])
    assert out.exit_code == 22, out.output
    # Only the emptiest of the two is rendered (the lower id of equals): the random draw of three misses both.
    assert "Error: gate failed: 1 template render error(s)" in out.output, out.output
    assert (f"render error: ebike-launch [ebike_launch.html + text from the HTML] for {sparse[0]} (en_GB): {file}:{line}: "
            "undefined variable: customer.attributes.city is missing") in out.output
    assert f"- `ebike-launch [ebike_launch.html + text from the HTML] for {sparse[0]} (en_GB): {file}:{line}:" in (
        tmp_path / "plan.md").read_text()
    data = json.loads(CliRunner().invoke(cli, ["-p", str(demo.root), *PLAN, "--json"]).stdout)
    assert [(p["customer_id"], p["file"], p["line"]) for p in data["render_problems"]] == [(sparse[0], file, line)]
    check = next(c for c in data["render_checks"] if c["variant"] == "ebike_launch.html + text from the HTML")
    # Three drawn (one locale) and the fullest and the emptiest recipient.
    assert check["rendered"] == 5 and check["failed"] == 1


def test_the_same_template_testing_the_attribute_passes_with_every_variant_rendered_for_its_extremes(demo, engine):
    from relmail.campaigns import load_campaign
    from relmail.planning.gate import render_sample

    _without_city(demo, engine)
    path = demo.templates_dir / "ebike_launch.html"
    path.write_text(path.read_text(encoding="utf-8").replace(PRINTS_CITY, TESTS_CITY, 1), encoding="utf-8")
    out = CliRunner().invoke(cli, ["-p", str(demo.root), *PLAN, "--render-sample", "3"])
    assert out.exit_code == 0, out.output
    assert "render error" not in out.output
    result = plan(demo, engine, "weekly", WINDOW, as_of=AS_OF, dry_run=True)
    assert render_sample(demo, engine, load_campaign(demo, "weekly"), result, sample=1) == []
    base = next(c for c in result.render_checks if str(c.variant) == "ebike_launch.html + text from the HTML")
    assert base.rendered == 3  # one drawn, the fullest and the emptiest
    assert all(c.failed == 0 for c in result.render_checks)


def test_the_extremes_are_found_across_batches_of_recipients(demo, engine, monkeypatch):
    """A variant with more recipients than one query takes: each batch's extremes, then the extremes of those."""
    import relmail.planning.gate as gate
    from relmail.campaigns import load_campaign

    sparse, _, _ = _without_city(demo, engine)
    monkeypatch.setattr(gate, "BATCH", 7)
    result = plan(demo, engine, "weekly", WINDOW, as_of=AS_OF, dry_run=True)
    problems = gate.render_sample(demo, engine, load_campaign(demo, "weekly"), result, sample=1)
    assert [p.customer_id for p in problems] == [sparse[0]]

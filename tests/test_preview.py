"""relmail preview: one customer's e-mail exactly as `relmail send` would build it."""

import email
from email import policy

from click.testing import CliRunner
from tests.sendkit import build

from relmail.cli import cli


def test_preview_writes_the_customers_html_text_and_eml(project, tmp_path):
    from sqlalchemy import select

    from relmail.store.models import Customer

    engine = build(project, customers=60)
    with engine.connect() as conn:
        first = conn.execute(select(Customer.__table__.c.first_name).where(Customer.__table__.c.id == "C0000007")).scalar_one()
    runner = CliRunner()
    base = ["-p", str(project.root), "preview", "ebike-launch", "--customer", "C0000007"]
    html = runner.invoke(cli, base)
    assert html.exit_code == 0, html.output
    assert html.output.lstrip().lower().startswith("<!doctype html") and f" {first}," in html.output
    text = runner.invoke(cli, base + ["--text"])
    assert text.exit_code == 0 and f" {first}," in text.output and "<td" not in text.output
    out = tmp_path / "p.eml"
    assert runner.invoke(cli, base + ["--eml", "-o", str(out)]).exit_code == 0
    msg = email.message_from_bytes(out.read_bytes(), policy=policy.default)
    assert msg["X-Relmail-Customer"] == "C0000007"
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_preview_of_an_unknown_customer_is_exit_8(project):
    build(project, customers=20)
    result = CliRunner().invoke(cli, ["-p", str(project.root), "preview", "ebike-launch", "--customer", "NOPE"])
    assert result.exit_code == 8 and "no customer 'NOPE'" in result.output

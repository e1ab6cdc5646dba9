"""Plan warnings for messages that silently reach nobody: a segment on a category as the shop names it, a featured
product the catalogue has in another case. A CI dry run must say so, not show an audience of 0 and pass."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from relmail.cli import cli

SHOPIFY = Path(__file__).resolve().parent.parent / "examples" / "shopify"


def _shopify_shop(tmp_path, db_url, monkeypatch):
    """A blank project given the Shopify sample's customers, products and orders: (runner, root, ``--project`` args)."""
    monkeypatch.setenv("RELMAIL_DATABASE_URL", db_url)
    runner = CliRunner()
    root = tmp_path / "shop"
    assert runner.invoke(cli, ["init", str(root), "--blank", "--name", "Shop", "--domain", "shop.example"]).exit_code == 0
    base = ["--project", str(root)]
    for kind in ("customers", "products", "orders"):
        result = runner.invoke(cli, [*base, "import", kind, str(SHOPIFY / f"{kind}_export.csv"), "--map", "shopify"])
        assert result.exit_code == 0, result.output
    return runner, root, base


def test_a_message_that_reaches_nobody_or_features_an_unknown_product_is_a_plan_warning(tmp_path, db_url, monkeypatch):
    runner, root, base = _shopify_shop(tmp_path, db_url, monkeypatch)
    # The shop's own name for its product type; the catalogue stores the id 'literaire-roman'.
    (root / "segments" / "novels.yml").write_text("description: novel readers\npurchased: {category: Literaire roman}\n")
    (root / "campaigns" / "autumn.yml").write_text(
        "title: Autumn\npolicy: {consent: opt-in, min_relevance: 0}\nmessages:\n"
        "  - id: novels\n    template: newsletter\n    topic: books\n    segments: [novels]\n    offer: promotion\n"
        "  - id: poems\n    template: newsletter\n    topic: books\n    segments: [everyone]\n    offer: promotion\n"
        "    products: [lt-poezie-01]\n")
    result = runner.invoke(cli, [*base, "plan", "autumn", "--window", "2026-W50", "--as-of", "2026-12-07T09:00:00+01:00",
                                 "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    warnings = {w["rule"]: w for w in json.loads(result.stdout)["warnings"]}
    assert warnings["EMPTY_AUDIENCE"]["message_id"] == "novels"
    assert warnings["EMPTY_AUDIENCE"]["text"].startswith("novels: no customer is in its audience (segments: novels): ")
    assert warnings["EMPTY_AUDIENCE"]["text"].endswith(
        "novels.yml:2: field 'purchased.category': no product in the catalogue has category 'Literaire roman'; "
        "it has 'literaire-roman' (categories are stored as ids)")
    assert warnings["FEATURED_PRODUCT"]["text"] == (
        "poems: featured product 'lt-poezie-01' is not in the catalogue (the catalogue has 'LT-POEZIE-01'; ids are "
        "compared exactly); every e-mail of it would fail to render")
    text = runner.invoke(cli, [*base, "plan", "autumn", "--window", "2026-W50", "--dry-run"])
    assert "Warning: novels: no customer is in its audience" in text.stderr
    # Fixed, the warnings go.
    (root / "segments" / "novels.yml").write_text("description: novel readers\npurchased: {category: literaire-roman}\n")
    (root / "campaigns" / "autumn.yml").write_text((root / "campaigns" / "autumn.yml").read_text().replace("lt-poezie-01", "LT-POEZIE-01"))
    fixed = runner.invoke(cli, [*base, "plan", "autumn", "--window", "2026-W50", "--as-of", "2026-12-07T09:00:00+01:00",
                                "--dry-run", "--json"])
    assert json.loads(fixed.stdout)["warnings"] == []


def test_a_message_category_the_catalogue_lacks_is_a_plan_warning(tmp_path, db_url, monkeypatch):
    # The message names the category as the shop does ('Literaire roman'), or not at all: its affinity
    # counts nothing for anyone, and the sends drop below min_relevance with every decision right.
    runner, root, base = _shopify_shop(tmp_path, db_url, monkeypatch)
    campaign = root / "campaigns" / "autumn.yml"
    campaign.write_text(
        "title: Autumn\npolicy: {consent: opt-in, min_relevance: 0}\nmessages:\n"
        "  - id: novels\n    template: newsletter\n    topic: books\n    segments: [everyone]\n    offer: promotion\n"
        "    categories: [Literaire roman, poezi]\n")
    plan = [*base, "plan", "autumn", "--window", "2026-W50", "--as-of", "2026-12-07T09:00:00+01:00", "--dry-run", "--json"]
    result = runner.invoke(cli, plan)
    assert result.exit_code == 0, result.output
    assert [w["text"] for w in json.loads(result.stdout)["warnings"] if w["rule"] == "UNKNOWN_CATEGORY"] == [
        "novels: no product in the catalogue has category 'Literaire roman'; it has 'literaire-roman' (categories are "
        "stored as ids), so no purchase or view in it can count toward the score's affinity",
        "novels: no product in the catalogue has category 'poezi' (a typo, or products not imported yet?), so no "
        "purchase or view in it can count toward the score's affinity",
    ]
    campaign.write_text(campaign.read_text().replace("[Literaire roman, poezi]", "[literaire-roman]"))
    assert json.loads(runner.invoke(cli, plan).stdout)["warnings"] == []

"""The interfaces a data scientist needs: predictions per decision, the split, experiment folders, categorical codes.

On real databases through the CLI: what ``relmail model predict`` writes and
what ``relmail.learn.split_mask`` marks must reproduce ``relmail model
evaluate``'s figures exactly.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner
from tests.test_learn_ledger import AS_OF, NOW, add_customers, planted_history

from relmail.cli import cli
from relmail.learn import load_model, load_outcomes, metrics, split_mask
from relmail.learn.dataset import FeatureSpec
from relmail.store.db import make_engine

FAST_MODEL = '\n[model]\nestimators = ["t_learner", "interaction"]\nbases = ["logistic"]\ncv_repeats = 1\n'


@pytest.fixture
def trained(project, tmp_path):
    """A project whose ledger holds the planted experiment, trained on visit and conversion with split seed 3."""
    engine = make_engine(project.database_url)
    planted_history(engine, tmp_path, visits=True)
    config = project.root / "relmail.toml"
    config.write_text(config.read_text() + FAST_MODEL)
    res = CliRunner().invoke(cli, ["--project", str(project.root), "model", "train", "--split-seed", "3", "--test-share", "0.4",
                                   "--outcome", "visit", "--outcome", "conversion"])
    assert res.exit_code == 0, res.output
    yield project, engine
    engine.dispose()


def run(project, *args):
    return CliRunner().invoke(cli, ["--project", str(project.root), *args])


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_model_predict_rows_reproduce_model_evaluate_exactly(trained, tmp_path):
    project, engine = trained
    res = run(project, "model", "evaluate", "--json")
    assert res.exit_code == 0, res.output
    [ev] = json.loads(res.output)
    for outcome in ("visit", "conversion"):
        out = tmp_path / f"{outcome}.csv"
        res = run(project, "model", "predict", "--message", "promo", "--outcome", outcome, "--out", str(out))
        assert res.exit_code == 0, res.output
        assert f"outcome {outcome}" in res.output
        rows = read_csv(out)
        assert list(rows[0])[:7] == ["decision_id", "run_id", "customer_id", "message_id", "split", "sent", outcome]
        assert list(rows[0])[-3:] == ["p_sent", "uplift", "irritation"] and {"x", "tier"} <= set(rows[0])
        assert {r["split"] for r in rows} == {"test"} and len(rows) == ev["rows"]
        uplift = np.array([float(r["uplift"]) for r in rows])
        p_sent = np.array([float(r["p_sent"]) for r in rows])
        y = np.array([int(r[outcome]) for r in rows])
        t = np.array([int(r["sent"]) for r in rows])
        seed = ev["split"]["seed"]
        figures = ev["outcomes"][outcome]["uplift"]
        # Exactly the command's figures, from the file alone.
        assert metrics.qini_coefficient(uplift, y, t, seed) == figures["model"]["qini"]
        for v in (10, 30, 50):
            assert metrics.keep_at(uplift, y, t, v / 100, seed) == figures["model"][f"keep_at_{v}"]
            assert metrics.keep_at(p_sent, y, t, v / 100, seed) == figures["response"][f"keep_at_{v}"]
        assert metrics.auc(p_sent[t == 1], y[t == 1]) == ev["outcomes"][outcome]["propensity"]["auc"]


def test_split_mask_gives_the_test_customers_and_the_python_api_the_same_predictions(trained, tmp_path):
    project, engine = trained
    out = tmp_path / "all.csv"
    assert run(project, "model", "predict", "-m", "promo", "-o", "visit", "--split", "all", "--out", str(out)).exit_code == 0
    rows = read_csv(out)
    model = load_model(project, "promo")
    training = model.meta["training"]
    assert (training["split_seed"], training["test_share"]) == (3, 0.4)
    table = load_outcomes(engine, messages=["promo"], now=NOW)
    test = split_mask(table.customer_id, training["split_seed"], training["test_share"])
    by_id = {r["customer_id"]: r for r in rows}
    assert {c for c in table.customer_id[test]} == {c for c, r in by_id.items() if r["split"] == "test"}
    assert {c for c in table.customer_id[~test]} == {c for c, r in by_id.items() if r["split"] == "train"}
    part = table.subset(test)
    pred = model.predict(part.features, outcome="visit")
    # The same rows in one batch give the same floats, bit for bit (other batches may differ in the last bit).
    out = tmp_path / "test.csv"
    assert run(project, "model", "predict", "-m", "promo", "-o", "visit", "--out", str(out)).exit_code == 0
    by_id = {r["customer_id"]: r for r in read_csv(out)}
    assert [float(by_id[c]["uplift"]) for c in part.customer_id] == pred["uplift"].tolist()
    assert [float(by_id[c]["p_sent"]) for c in part.customer_id] == pred["p_positive_sent"].tolist()
    res = run(project, "model", "evaluate", "--json")
    assert json.loads(res.output)[0]["split"] == {"seed": 3, "test_share": 0.4, "customers": int(test.sum())}


def test_predict_names_the_outcome_when_the_model_learned_several(trained):
    project, engine = trained
    model = load_model(project, "promo")
    feats = load_outcomes(engine, messages=["promo"], now=NOW).features[:5]
    with pytest.raises(ValueError, match=r"learned visit, conversion: name the outcome"):
        model.predict(feats)
    visit, conversion = model.predict(feats, outcome="visit"), model.predict(feats, "conversion")
    assert not np.allclose(visit["p_positive_sent"], conversion["p_positive_sent"])
    # One outcome learned (or a primary one named in training): nothing to choose.
    model.propensity.pop("conversion")
    assert model.predict(feats)["p_positive_sent"].tolist() == visit["p_positive_sent"].tolist()


def test_train_replace_and_dir_keep_experiments_off_the_project_models(trained, tmp_path):
    project, engine = trained
    folder = project.root / "models" / "promo"
    assert sorted(p.name for p in folder.iterdir()) == ["v0001.json", "v0001.skops"]
    res = run(project, "model", "train", "--outcome", "visit", "--split-seed", "5", "--replace")
    assert res.exit_code == 0, res.output
    # The version replaced learned conversion too, the outcome a plan scores by first: the output says it is gone.
    assert ("Note: version 1 learned visit, conversion; --replace dropped conversion, which a plan can no longer "
            "score promo on") in res.output
    assert sorted(p.name for p in folder.iterdir()) == ["v0001.json", "v0001.skops"]
    assert load_model(project, "promo").meta["training"]["split_seed"] == 5
    exp = tmp_path / "exp"
    res = run(project, "model", "train", "--outcome", "visit", "--split-seed", "9", "--dir", str(exp))
    assert res.exit_code == 0, res.output
    assert (exp / "promo" / "v0001.json").is_file()
    assert sorted(p.name for p in folder.iterdir()) == ["v0001.json", "v0001.skops"]
    res = run(project, "model", "evaluate", "--dir", str(exp), "--json")
    assert json.loads(res.output)[0]["split"]["seed"] == 9
    res = run(project, "model", "evaluate", "--json")
    assert json.loads(res.output)[0]["split"]["seed"] == 5
    res = run(project, "model", "predict", "--dir", str(exp), "--out", "-")
    assert res.exit_code == 0 and res.output.splitlines()[0].startswith("decision_id,")
    res = run(project, "model", "predict", "--dir", str(tmp_path / "none"), "--out", "-")
    assert res.exit_code == 12 and "no trained models" in res.output


def test_predict_refuses_a_split_the_model_does_not_have(trained):
    project, _ = trained
    res = run(project, "model", "train", "--outcome", "visit", "--test-share", "0", "--replace")
    assert res.exit_code == 0, res.output
    res = run(project, "model", "predict", "--out", "-")
    assert res.exit_code == 12 and "test share 0" in res.output
    # An outcome the sound model was not trained for is not found (8), not a damaged model file (12).
    res = run(project, "model", "predict", "--outcome", "conversion", "--split", "all", "--out", "-")
    assert res.exit_code == 8 and "no 'conversion' outcome" in res.output


def history_file(project, tmp_path, columns: str, rows: list[str]):
    """(engine, file): four stored customers, and a past run's file of ``rows`` after ``r1,c,w1,<as_of>,``, under ``columns``."""
    engine = make_engine(project.database_url)
    add_customers(engine, 4)
    path = tmp_path / "h.csv"
    path.write_text(f"run_id,campaign,window,as_of,{columns}\n" + "".join(f"r1,c,w1,{AS_OF.isoformat()},{r}\n" for r in rows))
    return engine, path


def test_runs_import_categorical_keeps_codes_as_text(project, tmp_path):
    engine, path = history_file(project, tmp_path, "customer_id,message_id,action,store,zip",
                                [f"C000000{i},m,send,{12 + i % 2},9411{i}" for i in range(4)])
    res = run(project, "runs", "import", str(path), "--categorical", "store", "--categorical", "zip")
    assert res.exit_code == 0, res.output
    feats = load_outcomes(engine, now=NOW).features
    assert [f["store"] for f in feats] == ["12", "13", "12", "13"] and feats[0]["zip"] == "94110"
    spec = FeatureSpec.infer(feats)
    assert set(spec.categorical) == {"store", "zip"} and spec.numeric == []
    # Without the option the same codes are quantities.
    path.write_text(path.read_text().replace("r1,c,w1", "r2,c,w2"))
    assert run(project, "runs", "import", str(path)).exit_code == 0
    assert FeatureSpec.infer(load_outcomes(engine, runs=["r2"], now=NOW).features).numeric == ["store", "zip"]
    # A column the file does not have is a typo, not a silent no-op.
    path.write_text(path.read_text().replace("r2,c,w2", "r3,c,w3"))
    res = run(project, "runs", "import", str(path), "--categorical", "stor")
    assert res.exit_code == 4 and "field 'stor': no such column" in res.output
    jl = tmp_path / "h.jsonl"
    jl.write_text("".join(json.dumps({"run_id": "r4", "campaign": "c", "window": "w4", "as_of": AS_OF.isoformat(), "customer_id": f"C000000{i}",
                                      "message_id": "m", "action": "send", "features": {"store": 12 + i}}) + "\n" for i in range(2)))
    assert run(project, "runs", "import", str(jl), "--categorical", "store").exit_code == 0
    assert [f["store"] for f in load_outcomes(engine, runs=["r4"], now=NOW).features] == ["12", "13"]
    res = run(project, "runs", "import", str(jl), "--categorical", "action")
    assert res.exit_code == 4 and "required column" in res.output
    engine.dispose()


def test_runs_import_refuses_a_number_column_with_text_in_it_naming_line_and_field(project, tmp_path):
    engine = make_engine(project.database_url)
    add_customers(engine, 4)
    path = tmp_path / "h.csv"
    spend = ["120.5", "NA", "80", "95"]
    path.write_text("run_id,campaign,window,as_of,customer_id,message_id,action,spend,zip,channel\n"
                    + "".join(f"r1,c,w1,{AS_OF.isoformat()},C000000{i},m,send,{spend[i]},{['01067', '10115', '20095', '50667'][i]},web\n"
                              for i in range(4)))
    res = run(project, "runs", "import", str(path))
    # 'NA' would have made spend a column of categories, and a zip with a leading zero text among numbers.
    assert res.exit_code == 4, res.output
    assert "h.csv:3: field 'spend': 'NA' is not a number, but 3 other values" in res.output
    assert "h.csv:2: field 'zip': '01067' is not a number, but 3 other values" in res.output and "--categorical" in res.output
    assert load_outcomes(engine, now=NOW).features == []
    # Empty cells are missing values; codes are named as such: the same file imports.
    path.write_text(path.read_text().replace(",NA,", ",,"))
    res = run(project, "runs", "import", str(path), "--categorical", "zip")
    assert res.exit_code == 0, res.output
    assert FeatureSpec.infer(load_outcomes(engine, now=NOW).features).numeric == ["spend"]
    engine.dispose()


def test_a_test_share_outside_0_to_1_is_an_error_naming_the_option_or_setting_not_a_traceback(project):
    from relmail.errors import ConfigError, ValidationError
    from relmail.learn.train import TrainOptions

    res = run(project, "model", "train", "--test-share", "1.5")
    assert res.exit_code == 2 and "'--test-share': 1.5 is not in the range 0<=x<1" in res.output
    with pytest.raises(ValidationError, match="test_share: 1.5 is not a share"):
        TrainOptions.from_project(project, test_share=1.5)
    config = project.root / "relmail.toml"
    config.write_text(config.read_text() + "\n[model]\ntest_share = 1.0\n")
    with pytest.raises(ConfigError, match=r"relmail.toml: \[model\] test_share: 1.0 is not a share"):
        TrainOptions.from_project(type(project).load(project.root))
    res = run(project, "model", "train")
    assert res.exit_code == 3 and "[model] test_share" in res.output and "Traceback" not in res.output


def test_runs_import_lists_every_problem_on_its_own_line_and_as_json(project, tmp_path):
    engine, path = history_file(project, tmp_path, "customer_id,message_id,action", [f"C000000{i},m,sent" for i in range(5)])
    res = run(project, "runs", "import", str(path))
    assert res.exit_code == 4
    lines = res.output.splitlines()
    assert lines[0].startswith("Error: ") and lines[0].endswith("h.csv: 5 problem(s), nothing imported")
    assert [line.split(": field")[0].rsplit(":", 1)[1] for line in lines[1:]] == ["2", "3", "4", "5", "6"]
    res = run(project, "runs", "import", str(path), "--json")
    got = json.loads(res.output)
    assert got["ok"] is False and [p["line"] for p in got["problems"]] == [2, 3, 4, 5, 6]
    assert {p["field"] for p in got["problems"]} == {"action"}
    engine.dispose()

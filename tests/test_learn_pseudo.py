"""The DR- and R-learner: second-stage regressions of a pseudo-outcome built of cross-fitted nuisance models."""

from __future__ import annotations

import numpy as np
import pytest
import skops.io as sio
from tests.test_learn_pooled import table

from relmail.learn import store
from relmail.learn.bases import Layout
from relmail.learn.model import load_model
from relmail.learn.pseudo import DRLearner, RLearner
from relmail.learn.train import TrainOptions, train
from relmail.project import init_project

LEARNERS = [(cls, base) for cls in (DRLearner, RLearner) for base in ("logistic", "hgb")]


def linear(n: int, seed: int):
    """A known effect linear in x0 (0 to 0.3), a baseline that rises with x1 and is blind to x0."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, 2))
    t = rng.integers(0, 2, n).astype(np.int8)
    effect = 0.15 + 0.15 * X[:, 0]
    y = (rng.random(n) < 0.2 + 0.1 * X[:, 1] + effect * t).astype(np.int8)
    return X, t, y, effect


@pytest.mark.parametrize(("cls", "base"), LEARNERS)
def test_the_estimate_follows_a_known_linear_effect(cls, base):
    X, t, y, _ = linear(20000, 1)
    est = cls(Layout.of(X, 2, 0, y), base).fit(X, y, t)
    fresh, _, _, truth = linear(5000, 2)
    uplift = est.predict_uplift(fresh)
    assert np.corrcoef(uplift, truth)[0, 1] > 0.9
    # On the probability scale: its mean is the mean effect.
    assert uplift.mean() == pytest.approx(truth.mean(), abs=0.02)


@pytest.mark.parametrize("cls", [DRLearner, RLearner])
def test_it_needs_sends_and_hold_outs(cls):
    X, _, y, _ = linear(200, 3)
    with pytest.raises(ValueError, match="both sends and hold-outs"):
        cls(Layout(2, 0)).fit(X, y, np.ones(200))


@pytest.mark.parametrize(("cls", "base"), LEARNERS)
def test_its_stored_parts_load_as_trusted_types_and_predict_identically(cls, base):
    X, t, y, _ = linear(4000, 4)
    layout = Layout.of(X, 2, 0, y)
    est = cls(layout, base).fit(X, y, t)
    data = sio.dumps(est.parts())
    assert set(sio.get_untrusted_types(data=data)) <= store.ALLOWED_TYPES
    loaded = cls.from_parts(layout, base, sio.loads(data, trusted=sio.get_untrusted_types(data=data)))
    np.testing.assert_array_equal(loaded.predict_uplift(X), est.predict_uplift(X))


@pytest.mark.parametrize(("cls", "base"), LEARNERS)
def test_train_writes_it_to_the_model_file_and_load_model_rebuilds_it(tmp_path, cls, base):
    project = init_project(tmp_path / "shop")
    X, t, y, _ = linear(4000, 5)
    rows = [("r1", f"A{i}", "a", int(ti), float(xi), int(yi)) for i, (xi, ti, yi) in enumerate(zip(X[:, 0], t, y))]
    opts = TrainOptions(outcomes=("conversion",), kinds=(cls.kind,), bases=(base,), test_share=0.3, cv_repeats=1)
    (result,) = train(None, store.models_dir(project), ["a"], opts, table=table(rows))
    assert result["selection"]["conversion"]["chosen"] == f"{cls.kind}/{base}"
    model = load_model(project, "a")
    assert isinstance(model.uplift["conversion"], cls)
    uplift = model.predict({"x": np.linspace(-1, 1, 9)}, "conversion")["uplift"]
    # The effect grows with x.
    assert uplift[-1] > uplift[0]

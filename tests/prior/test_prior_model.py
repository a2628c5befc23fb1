"""The prior on the committed corpus: never under the floor, negatives ranked below the best
positives, and the CV report runs."""

from __future__ import annotations

import numpy as np
import pytest

from prior.corpus import CORPUS_PATH, read_corpus
from prior.model import EPS, Prior, cross_validate, fit_prior, latency_us, training_rows


@pytest.fixture(scope="module")
def corpus():
    return read_corpus(CORPUS_PATH)


@pytest.fixture(scope="module")
def prior(corpus):
    return fit_prior(corpus)


def test_the_committed_corpus_is_measured_and_has_both_kinds(corpus):
    assert (corpus["measurement"] == "measured").all()
    assert set(corpus["state"]) >= {"complete", "pruned"}


def test_never_under_the_floor(corpus, prior):
    train = training_rows(corpus)
    floor = train["floor_us"].fillna(64.0).to_numpy()
    assert (latency_us(floor, prior.fraction(train)) >= floor).all()
    wild = np.array([-3.0, 0.0, 0.5, 1.0, 7.0])
    out = latency_us(np.full(5, 10.0), wild)
    assert (out >= 10.0).all() and np.isfinite(out).all() and out[0] == 10.0 / EPS


def test_a_regressor_that_overshoots_is_clipped(corpus):
    class Overshoot:
        def predict(self, x):
            return np.full(len(x), 5.0)

    feasible = training_rows(corpus).query("state == 'complete'")
    p = Prior(Overshoot(), 1, 1)
    assert np.allclose(p.latency(feasible), feasible["floor_us"])


def test_negatives_are_predicted_worse_than_the_best_positives(corpus, prior):
    train = training_rows(corpus)
    pred = prior.fraction(train)
    neg, pos = pred[train["y"].to_numpy() == 0], pred[train["y"].to_numpy() > 0]
    assert len(neg) and neg.max() < np.sort(pos)[-5:].min()


def test_cv_report_runs(corpus):
    r = cross_validate(corpus, folds=3)
    assert r.rows == len(corpus) and r.positives + r.negatives == r.rows
    assert 0 <= r.mae_fraction < 1 and -1 <= r.spearman <= 1 and 0 <= r.top_k_hits <= r.top_k
    assert "Spearman" in "\n".join(r.lines())


def test_no_feasible_row_says_how_to_fix(corpus):
    with pytest.raises(ValueError, match="amk-tune corpus add"):
        fit_prior(corpus[corpus["state"] == "pruned"])

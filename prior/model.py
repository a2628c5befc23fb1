"""The prior: a random forest from ``features.vector`` to ``floor_us / us_per_token``.

Target: the fraction of the bandwidth floor a trial reached, in (0, 1] for a feasible
trial, and 0 for a pruned, failed or infeasible one, so the prior learns to avoid what
the validator or the oracle refused. A predicted latency is ``floor / clip(pred, EPS, 1)``:
never under the floor, whatever the regressor says. Only measured rows train it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.ensemble import RandomForestRegressor
from sklearn.model_selection import KFold

from prior.features import matrix

EPS = 1e-3
TREES = 300


def training_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The measured rows, with ``y`` (the target fraction) added."""
    r = rows[rows["measurement"] == "measured"].copy()
    ok = (r["state"] == "complete") & (r["us_per_token"] > 0)
    frac = (r["floor_us"] / r["us_per_token"]).where(ok, 0.0)
    r["y"] = frac.clip(0.0, 1.0).astype(float)
    return r.reset_index(drop=True)


def latency_us(floor_us: np.ndarray | float, fraction: np.ndarray | float) -> np.ndarray:
    """Predicted us/token from the floor and a predicted fraction: never under the floor."""
    return np.asarray(floor_us, dtype=float) / np.clip(np.asarray(fraction, dtype=float), EPS, 1)


@dataclass(frozen=True)
class Prior:
    """A fitted prior and what it was fitted on."""

    regressor: RandomForestRegressor
    rows: int
    positives: int

    def fraction(self, rows: pd.DataFrame) -> np.ndarray:
        """Predicted floor / latency of each row, clipped into [EPS, 1] (higher = faster)."""
        return np.clip(self.regressor.predict(matrix(rows)), EPS, 1.0)

    def latency(self, rows: pd.DataFrame) -> np.ndarray:
        """Predicted us/token of rows that carry ``floor_us``."""
        return latency_us(rows["floor_us"].to_numpy(dtype=float), self.fraction(rows))


def _regressor(seed: int) -> RandomForestRegressor:
    return RandomForestRegressor(n_estimators=TREES, min_samples_leaf=1, random_state=seed,
                                 n_jobs=1)


def fit_prior(rows: pd.DataFrame, seed: int = 0) -> Prior:
    """Fit on the measured rows of ``rows``; ValueError when none is feasible."""
    train = training_rows(rows)
    positives = int((train["y"] > 0).sum())
    if positives == 0:
        raise ValueError(f"no measured feasible trial among {len(rows)} rows: add a measured "
                         "study with `amk-tune corpus add --study NAME`")
    reg = _regressor(seed).fit(matrix(train), train["y"].to_numpy())
    return Prior(reg, len(train), positives)


@dataclass(frozen=True)
class CvReport:
    """Out-of-fold quality of the prior (``folds``-fold CV, shuffled, seeded)."""

    rows: int
    positives: int
    negatives: int
    folds: int
    mae_fraction: float  # |pred - y| over all rows
    mape_latency: float  # |pred latency - measured| / measured over feasible rows
    spearman: float  # predicted vs measured latency over feasible rows
    top_k: int
    top_k_hits: int  # of the k fastest trials, how many the prior puts in its top k
    negatives_below_median: float  # negatives predicted slower than the median positive

    def lines(self) -> list[str]:
        return [
            f"prior CV ({self.folds}-fold, out-of-fold): {self.rows} measured trials "
            f"({self.positives} feasible, {self.negatives} pruned/failed/infeasible)",
            f"  MAE of floor/latency fraction: {self.mae_fraction:.4f}",
            f"  MAPE of predicted us/token (feasible): {100 * self.mape_latency:.1f}%",
            f"  Spearman, predicted vs measured us/token (feasible): {self.spearman:.3f}",
            f"  top-{self.top_k} hit: {self.top_k_hits}/{self.top_k} of the fastest trials in "
            f"the prior's top {self.top_k}",
            f"  negatives predicted slower than the median feasible trial: "
            f"{100 * self.negatives_below_median:.0f}%",
        ]


def cross_validate(rows: pd.DataFrame, folds: int = 5, top_k: int = 5, seed: int = 0) -> CvReport:
    """Out-of-fold predictions for every measured row, and how well they rank."""
    train = training_rows(rows)
    if len(train) < folds:
        raise ValueError(f"{len(train)} measured rows cannot make {folds} folds: add studies "
                         "to the corpus or pass fewer folds")
    x, y = matrix(train), train["y"].to_numpy()
    oof = np.zeros(len(train))
    for fit_idx, test_idx in KFold(folds, shuffle=True, random_state=seed).split(x):
        oof[test_idx] = _regressor(seed).fit(x[fit_idx], y[fit_idx]).predict(x[test_idx])
    pos = y > 0
    measured = train["us_per_token"].to_numpy(dtype=float)[pos]
    predicted = latency_us(train["floor_us"].to_numpy(dtype=float)[pos], oof[pos])
    k = min(top_k, int(pos.sum()))
    hits = len(set(np.argsort(measured)[:k]) & set(np.argsort(predicted)[:k]))
    median_pos = float(np.median(oof[pos]))
    neg = oof[~pos]
    return CvReport(
        rows=len(train), positives=int(pos.sum()), negatives=int((~pos).sum()), folds=folds,
        mae_fraction=float(np.mean(np.abs(oof - y))),
        mape_latency=float(np.mean(np.abs(predicted - measured) / measured)),
        spearman=float(spearmanr(predicted, measured).statistic),
        top_k=k, top_k_hits=hits,
        negatives_below_median=float(np.mean(neg < median_pos)) if len(neg) else float("nan"),
    )

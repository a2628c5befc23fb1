"""Loop 1 on the live GPU: one role of TINY, every grid point built, checked against the
NumPy twin and timed."""

from __future__ import annotations

import optuna
import pytest

from amk_tune.model import loaders
from amk_tune.study.instruction_run import run_instruction_loop
from amk_tune.study.run import StudyOptions
from space.kernel_knobs import ROWS_PER_WARP, UNROLL
from tests.conftest import TINY

pytestmark = pytest.mark.gpu


def test_loop1_measures_one_role_on_the_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(loaders, "inspect_model", lambda source: TINY)
    url = f"sqlite:///{tmp_path / 'amk.db'}"
    outcome = run_instruction_loop(StudyOptions(model="tiny", storage=url, minutes=8, iters=20),
                                   roles=("o",))
    study = outcome.studies["o"]
    assert study.study_name.endswith(".loop1.o")
    # TINY's O tile fits its slot: rows per warp x unroll, no ring dimension; the default
    # knobs first, then the whole grid (the default once more)
    assert len(study.trials) == len(ROWS_PER_WARP) * len(UNROLL) + 1
    assert study.trials[0].params == {"rows_per_warp": 1, "unroll": 1}
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE, t.user_attrs.get("fail_reason")
        assert set(t.params) == {"rows_per_warp", "unroll"}
        assert t.user_attrs["feasible"] is True, t.user_attrs.get("twin_problems")
        assert t.user_attrs["measurement"] == "measured"
        assert 0 < t.value < 1000 and t.user_attrs["registers"] > 0
        p10, p90 = t.user_attrs["spread_us"]
        assert p10 <= t.value <= p90
    assert outcome.best is not None and "(measured)" in outcome.text

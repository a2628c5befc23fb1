"""The worker watchdog, through the real worker process (simulated backend, same pipe and
watchdog as the GPU): a trial that hangs and one that crashes each fail with the reason,
a fresh worker takes the next trial and the study goes on; an oracle failure completes the
trial as infeasible."""

from __future__ import annotations

import io

import optuna
import pytest
from optuna.trial import TrialState

from amk_tune.errors import AmkError
from amk_tune.study.run import StudyOptions, run_study
from amk_tune.study.worker import FAULT_ENV, parse_faults
from space.search_space import default_params


def test_hang_and_crash_fail_their_trials_and_the_study_goes_on(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'amk.db'}"
    study = optuna.create_study(storage=url, study_name="faults")
    for _ in range(5):  # fixed, accepted params: every trial reaches the worker
        study.enqueue_trial(default_params())
    monkeypatch.setenv(FAULT_ENV, "hang:1,crash:2,oracle:3")
    err = io.StringIO()
    opts = StudyOptions(model="smollm2-135m", layers=1, simulate=True, trials=5, storage=url,
                        study="faults", prompt_len=3, trial_timeout_s=8.0)
    outcome = run_study(opts, out=io.StringIO(), err=err)
    t = {x.number: x for x in outcome.study.trials}
    assert [t[i].state for i in range(5)] == [TrialState.COMPLETE, TrialState.FAIL,
                                              TrialState.FAIL, TrialState.COMPLETE,
                                              TrialState.COMPLETE]
    assert "no answer from the worker within 8 s" in t[1].user_attrs["fail_reason"]
    assert "the worker died (killed by SIGSEGV)" in t[2].user_attrs["fail_reason"]
    assert t[3].user_attrs["feasible"] is False and t[3].constraints == {"oracle": 1.0}
    assert t[0].user_attrs["feasible"] is True and t[4].user_attrs["feasible"] is True
    log = err.getvalue()
    assert "trial 1 FAIL" in log and "trial 2 FAIL" in log
    assert "trial 3 COMPLETE" in log and "INFEASIBLE" in log


@pytest.mark.parametrize("text", ["hang", "boom:1", "crash:x"])
def test_bad_fault_specs_are_named(text):
    with pytest.raises(AmkError, match="write KIND:TRIAL"):
        parse_faults(text)

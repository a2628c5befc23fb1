"""The worker watchdog, through the real worker process (simulated backend, same pipe and
watchdog as the GPU): a trial that hangs and one that crashes each fail with the reason,
a fresh worker takes the next trial and the study goes on; an oracle failure completes the
trial as infeasible."""

from __future__ import annotations

import io
import itertools

import optuna
import pytest
from optuna.trial import TrialState

from amk_tune.errors import AmkError
from amk_tune.study.run import StudyOptions, run_study
from amk_tune.study.worker import FAULT_ENV, parse_faults
from space.search_space import default_params


@pytest.mark.parametrize("jobs", [1, 2])
def test_hang_and_crash_fail_their_trials_and_the_study_goes_on(tmp_path, monkeypatch, jobs):
    """With 2 trials in flight (the GPU default) each answer still goes to its own trial:
    the worker takes one request at a time, and a restart after a hang or crash too."""
    url = f"sqlite:///{tmp_path / 'amk.db'}"
    study = optuna.create_study(storage=url, study_name="faults")
    for _ in range(5):  # fixed, accepted params: every trial reaches the worker
        study.enqueue_trial(default_params())
    monkeypatch.setenv(FAULT_ENV, "hang:1,crash:2,oracle:3")
    err = io.StringIO()
    opts = StudyOptions(model="smollm2-135m", layers=1, simulate=True, trials=5, storage=url,
                        study="faults", prompt_len=3, trial_timeout_s=8.0, jobs=jobs)
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


def test_two_trials_in_flight_overlap_and_each_gets_its_own_answer(tmp_path):
    """jobs=2: while the worker runs one trial the next is sampled, lowered and validated;
    every answer carries its trial's number (a mixed-up one would fail the trial)."""
    url = f"sqlite:///{tmp_path / 'amk.db'}"
    opts = StudyOptions(model="smollm2-135m", layers=1, simulate=True, trials=8, storage=url,
                        prompt_len=3, prior=False, jobs=2, seed=3)
    outcome = run_study(opts, out=io.StringIO(), err=io.StringIO())
    trials = sorted(outcome.study.trials, key=lambda t: t.number)
    assert len(trials) == 8
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert trials[0].params == default_params()  # the enqueued default ran first, alone
    sampled = trials[1:]
    overlap = [a.number for a, b in itertools.pairwise(sampled)
               if b.datetime_start < a.datetime_complete]
    assert overlap, "no two sampled trials were in flight at once"


def test_trials_in_flight_default_to_two_on_a_gpu_and_one_simulated():
    assert StudyOptions(model="m").in_flight == 2
    assert StudyOptions(model="m", simulate=True).in_flight == 1
    assert StudyOptions(model="m", jobs=3).in_flight == 3
    with pytest.raises(AmkError, match="--jobs 0: give at least 1"):
        StudyOptions(model="m", jobs=0)


@pytest.mark.parametrize("text", ["hang", "boom:1", "crash:x"])
def test_bad_fault_specs_are_named(text):
    with pytest.raises(AmkError, match="write KIND:TRIAL"):
        parse_faults(text)

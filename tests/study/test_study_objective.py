"""The objective: a statically rejected trial is pruned with its violations and no build or
worker contact; an oracle failure is a completed infeasible trial; worker failures are FAIL
with the reason; a measured latency under the floor is refused."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from amk_tune.errors import TrialFailed
from amk_tune.study.objective import Objective, StudySetup
from amk_tune.targets import get_target
from space.search_space import default_params
from tests.conftest import TINY

H100 = get_target("h100")
PASS = {"passed": True, "steps": 5, "max_abs_err": 1e-6, "max_rel_err": 1e-7,
        "tokens_equal": True, "first_mismatch": None, "message": "PASS: ..."}
FAIL = {**PASS, "passed": False, "max_abs_err": 1.0, "message": "FAIL: 5/5 steps out"}
BASELINES = {"torch eager": {"median_us": 900.0, "p10_us": 890.0, "p90_us": 910.0,
                             "samples": 10},
             "torch.compile + CUDA graph": "failed: no compiler"}


class FakeWorker:
    """Answers with ``result`` (or raises it); records every request."""

    def __init__(self, result: dict[str, Any] | Exception) -> None:
        self.result, self.requests = result, []

    def evaluate(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def _result(latency: float = 500.0, oracle: dict | None = None, measured: bool = True) -> dict:
    return {"ok": True, "measured": measured, "latency_us": latency, "p10_us": latency - 1,
            "p90_us": latency + 1, "oracle": oracle or PASS, "oracle_scope": "test",
            "compile_s": 1.5, "build_cached": False, "registers": 64, "spills": 0,
            "smem_bytes": 70000, "cuda_source": "// src", "binary": b"\x7fELF", "arch": "sm_90"}


def _run(worker: FakeWorker, params: dict, simulated: bool = False) -> optuna.Study:
    study = optuna.create_study()
    info = {"baselines": None if simulated else BASELINES, "spec": {}, "weights_sha256": "0",
            "versions": {}}
    setup = StudySetup(TINY, H100, simulated, 3, "tiny", 0, info)
    study.enqueue_trial(params)
    study.optimize(Objective(study, setup, worker), n_trials=1, catch=(TrialFailed,))
    return study


def test_rejected_trial_is_pruned_before_any_build_or_worker(monkeypatch):
    from vm import build, gpu_runner

    def no_gpu_work(*a, **k):
        raise AssertionError("a rejected trial must not build or launch anything")

    for mod, name in ((build, "build"), (build, "compile_cubin"), (gpu_runner, "load_kernel")):
        monkeypatch.setattr(mod, name, no_gpu_work)
    worker = FakeWorker(_result())
    # two 192 KiB blocks cannot share one SM: the validator's co-residency check fails
    study = _run(worker, {**default_params(), "blocks_per_sm": 2, "smem_bytes": 196608})
    (t,) = study.trials
    assert t.state == TrialState.PRUNED
    assert worker.requests == []
    reject = t.user_attrs["reject"]
    assert reject and {v["property"] for v in reject} == {"co_resident"}
    assert {v["program"] for v in reject} == {"prompt launch", "timed launch"}
    assert all(v["message"] for v in reject)


def test_completed_trial_records_its_attrs():
    worker = FakeWorker(_result(latency=450.0))
    study = _run(worker, default_params())
    (t,) = study.trials
    assert t.state == TrialState.COMPLETE and t.value == 450.0
    a = t.user_attrs
    assert a["measurement"] == "measured" and a["feasible"] is True
    assert a["us_per_token"] == 450.0 and a["spread_us"] == [449.0, 451.0]
    assert a["pct_of_floor"] == pytest.approx(100 * a["floor_us"] / 450.0)
    assert a["baseline"] == "torch eager" and a["baseline_ratio"] == pytest.approx(2.0)
    for key in ("compile_s", "registers", "smem_bytes", "oracle_max_abs_err", "schedule",
                "kernel_knobs", "critical_stages"):
        assert a[key] is not None, key
    assert t.constraints == {"oracle": 0.0}
    req = worker.requests[0]
    assert req["number"] == 0 and req["schedule"]["threads"] == 256
    assert set(req["stats"]) == {"weight_bytes", "critical_stages", "busiest_block_tasks"}


def test_oracle_failure_is_infeasible_not_a_crash():
    study = _run(FakeWorker(_result(oracle=FAIL)), default_params())
    (t,) = study.trials
    assert t.state == TrialState.COMPLETE
    assert t.user_attrs["feasible"] is False and t.user_attrs["oracle_passed"] is False
    assert t.constraints == {"oracle": 1.0}
    assert "artifact_id" not in t.user_attrs


@pytest.mark.parametrize("answer", [
    TrialFailed("trial 0: no answer from the worker within 5 s (a hung kernel)"),
    {"ok": False, "error": "BuildError: nvrtc failed", "fatal": False},
])
def test_worker_failures_fail_the_trial_with_the_reason(answer):
    study = _run(FakeWorker(answer), default_params())
    (t,) = study.trials
    assert t.state == TrialState.FAIL
    assert ("no answer" if isinstance(answer, Exception) else "nvrtc") in (
        t.user_attrs["fail_reason"])


def test_a_measured_latency_under_the_floor_is_refused():
    study = _run(FakeWorker(_result(latency=1e-3)), default_params())
    (t,) = study.trials
    assert t.state == TrialState.FAIL
    assert "under the bandwidth floor" in t.user_attrs["fail_reason"]


def test_simulated_trials_say_so():
    study = _run(FakeWorker(_result(measured=False)), default_params(), simulated=True)
    (t,) = study.trials
    assert t.user_attrs["measurement"] == "simulated"
    assert t.user_attrs["baseline_ratio"] is None


def test_an_int8_trial_lowers_and_asks_for_its_own_weight_format():
    worker = FakeWorker(_result())
    study = _run(worker, {**default_params(), "dtype": "int8", "quant_group": 32})
    (t,) = study.trials
    assert t.state == TrialState.COMPLETE
    assert t.user_attrs["weights"] == {"dtype": "int8", "quant_group": 32}
    assert worker.requests[0]["weights"] == {"dtype": "int8", "quant_group": 32}
    bf16 = _run(FakeWorker(_result()), default_params()).trials[0]
    assert t.user_attrs["floor_us"] < 0.6 * bf16.user_attrs["floor_us"]  # int8: ~half the bytes


def test_a_group_that_does_not_fit_the_model_is_rejected_statically():
    worker = FakeWorker(_result())
    study = _run(worker, {**default_params(), "dtype": "int8", "quant_group": 64})
    (t,) = study.trials
    assert t.state == TrialState.PRUNED and worker.requests == []
    (v,) = t.user_attrs["reject"]
    assert v["property"] == "lowering" and "quantisation group 64" in v["message"]


def test_kernel_knobs_that_do_not_fit_the_launch_are_pruned_before_the_worker():
    worker = FakeWorker(_result())
    study = _run(worker, {**default_params(), "threads": 128, "k_split": 8})
    (t,) = study.trials
    assert t.state == TrialState.PRUNED and worker.requests == []
    (v,) = t.user_attrs["reject"]
    assert v["property"] == "kernel_knobs" and "k_split = 8 does not divide" in v["message"]


def test_a_ring_deeper_than_its_slot_runs_fitted_and_says_so():
    worker = FakeWorker(_result())
    study = _run(worker, {**default_params(), "threads": 1024, "smem_bytes": 16384,
                          "lm_ring": 8, "ring_prefill": True})
    (t,) = study.trials
    assert t.state == TrialState.COMPLETE
    assert t.user_attrs["knobs_fitted"] == {"lm_ring": [8, 0], "ring_prefill": [True, False]}
    (request,) = worker.requests
    assert request["kernel_knobs"] == t.user_attrs["kernel_knobs"]
    assert request["kernel_knobs"]["lm_ring"] == 0 and t.params["lm_ring"] == 8


def test_a_measured_study_without_baselines_says_so():
    """--no-baselines (StudyOptions.baselines=False): the worker times no torch baseline,
    trials carry no baseline ratio, and the summary says why the rows are missing."""
    from amk_tune.study.summary import summary

    study = optuna.create_study()
    info = {"baselines": None, "spec": {}, "weights_sha256": "0", "versions": {},
            "device": "a GPU", "oracle_scope": "test"}
    study.enqueue_trial(default_params())
    study.optimize(Objective(study, StudySetup(TINY, H100, False, 3, "tiny", 0, info),
                             FakeWorker(_result())), n_trials=1, catch=(TrialFailed,))
    (t,) = study.trials
    assert t.state == TrialState.COMPLETE and t.user_attrs["baseline_ratio"] is None
    text = summary(study, info, simulated=False, session_trials=1, elapsed_s=1.0)
    assert "not measured: --no-baselines" in text and "simulated" not in text.lower()

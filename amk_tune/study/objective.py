"""The objective of a study: sample -> lower -> validate -> [pruned] -> worker -> attrs.

1. ``space.search_space.suggest`` samples a Schedule, KernelKnobs and a weight format among
   the study's (``StudySetup.weights``).
2. The two programs a trial will launch are lowered: the prompt launch and the timed launch
   (amk_tune/bench.py ``run_checked``). A lowering error is a rejection too. The rings are
   fitted to the launch's prefetch slot (``fit_knobs``: a sampled depth is an upper bound;
   ``kernel_knobs`` holds what runs, ``knobs_fitted`` what was asked where it differs), and
   knobs that still do not fit (k_split) are a rejection.
3. Both are validated. A rejected trial records its violations in ``user_attrs["reject"]``
   and raises ``optuna.TrialPruned`` here, in the parent: no build, no worker, no GPU.
4. The worker builds, checks against HF and times it (or simulates). A hang or crash is
   ``TrialFailed`` with ``user_attrs["fail_reason"]``: the trial is FAIL, the study goes on.
5. An oracle failure completes the trial as infeasible (``feasible = False`` and the
   constraint ``oracle`` = 1.0, which TPE and ``study.best_trial`` honour), never as a crash.
6. A feasible trial's megakernel is stored as its artifact (amk_tune.artifacts).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import optuna

from amk_tune.errors import ScheduleError, TrialFailed
from amk_tune.model.spec import ModelSpec
from amk_tune.study.attrs import result_attrs
from amk_tune.study.worker import FAULT_ENV, SLOW_S, Worker, parse_faults
from amk_tune.targets import Target
from space.search_space import Candidate, suggest
from space.weight_format import WHOLE_SPACE, WeightChoices
from validator import validate
from vm.analysis import program_stats
from vm.build import config_for, fit_rings
from vm.lowering import lower
from vm.program import Program

log = logging.getLogger(__name__)
TASKS_SHOWN = 5


@dataclass(frozen=True)
class StudySetup:
    """What every trial of this session shares."""

    spec: ModelSpec
    target: Target
    simulated: bool
    prompt_len: int
    model_source: str  # the --model argument (how to load the weights again)
    weights_seed: int
    worker_info: dict[str, Any]  # the worker's ready message (device, weights hash, baselines)
    weights: WeightChoices = WHOLE_SPACE  # the weight formats this study searches


def trial_programs(spec: ModelSpec, target: Target, cand: Candidate,
                   prompt_len: int) -> dict[str, Program]:
    """The launches a trial runs: the prompt in one launch, then the timed launch (what the
    validator must accept; the prior's warm start checks the same two)."""
    s, fmt = cand.schedule, cand.weights
    total = prompt_len + s.steps_per_launch
    kw = {"max_seq": total, "dtype": fmt.dtype, "quant_group": fmt.quant_group}
    return {
        "prompt launch": lower(spec, s, target, steps=prompt_len, position=0, **kw),
        "timed launch": lower(spec, s, target, steps=s.steps_per_launch, position=prompt_len,
                              **kw),
    }


def fit_knobs(programs: dict[str, Program], spec: ModelSpec, cand: Candidate) -> Candidate:
    """``cand`` with its rings fitted to the kernel the worker builds (``vm.build.fit_rings``:
    a sampled ring depth is an upper bound), from the timed launch (the prompt launch has
    the same threads and shared memory). Raises ScheduleError for knobs that still do not
    fit (``k_split``)."""
    fitted = dataclasses.replace(cand, knobs=fit_rings(programs["timed launch"], spec,
                                                       cand.knobs))
    config_for(programs["timed launch"], spec, fitted.knobs)
    return fitted


class Objective:
    def __init__(self, study: optuna.Study, setup: StudySetup, worker: Worker) -> None:
        self.study, self.setup, self.worker = study, setup, worker
        self.artifact_note: str | None = None  # why artifacts are not stored, once known
        self.faults = parse_faults(os.environ.get(FAULT_ENV, ""))  # test hook (worker.py)

    def programs(self, cand: Candidate) -> dict[str, Program]:
        return trial_programs(self.setup.spec, self.setup.target, cand, self.setup.prompt_len)

    def __call__(self, trial: optuna.Trial) -> float:
        setup = self.setup
        if self.faults.get(trial.number) == "slow":
            time.sleep(SLOW_S)
        cand = suggest(trial, setup.target, setup.weights)
        trial.set_user_attr("measurement", "simulated" if setup.simulated else "measured")
        for key, value in cand.to_dict().items():
            trial.set_user_attr(key, value)
        try:
            programs = self.programs(cand)
        except ScheduleError as e:
            self.reject(trial, [{"program": "lowering", "property": "lowering", "tasks": [],
                                 "message": str(e)}])
        try:
            fitted = fit_knobs(programs, setup.spec, cand)
        except ScheduleError as e:
            self.reject(trial, [{"program": "kernel build", "property": "kernel_knobs",
                                 "tasks": [], "message": str(e)}])
        if fitted != cand:  # what runs, and what was asked where it differs
            asked, used = cand.knobs.to_dict(), fitted.knobs.to_dict()
            trial.set_user_attr("kernel_knobs", used)
            trial.set_user_attr("knobs_fitted", {k: [asked[k], used[k]] for k in asked
                                                 if asked[k] != used[k]})
            cand = fitted
        found = []
        for what, program in programs.items():
            verdict = validate(program, setup.target)
            found += [{"program": what, "property": v.property,
                       "tasks": list(v.tasks[:TASKS_SHOWN]), "message": v.message}
                      for v in verdict.violations]
        if found:
            self.reject(trial, found)
        timed = programs["timed launch"]
        stats = program_stats(timed)
        request = {"number": trial.number, **cand.to_dict(),
                   "stats": {"weight_bytes": stats.weight_bytes,
                             "critical_stages": stats.critical_stages,
                             "busiest_block_tasks": stats.busiest_block_tasks}}
        try:
            result = self.worker.evaluate(request)
        except TrialFailed as e:
            trial.set_user_attr("fail_reason", str(e))
            raise
        if not result.get("ok"):
            trial.set_user_attr("fail_reason", result.get("error", "unknown worker error"))
            raise TrialFailed(f"trial {trial.number}: {result.get('error')}")
        attrs = result_attrs(result, stats, setup.target, setup.worker_info.get("baselines"))
        fail = attrs.pop("fail_reason")
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        trial.set_constraint("oracle", 0.0 if attrs["feasible"] else 1.0)
        if fail:
            trial.set_user_attr("fail_reason", fail)
            raise TrialFailed(fail)
        if attrs["feasible"]:
            self.store_artifact(trial, cand, timed, result)
        return float(result["latency_us"])

    @staticmethod
    def reject(trial: optuna.Trial, violations: list[dict[str, Any]]) -> None:
        trial.set_user_attr("reject", violations)
        props = sorted({v["property"] for v in violations})
        raise optuna.TrialPruned(f"rejected statically ({', '.join(props)}): "
                                 f"{violations[0]['message']}")

    def store_artifact(self, trial: optuna.Trial, cand: Candidate, timed: Program,
                       result: dict[str, Any]) -> None:
        """Hand the trial's megakernel to amk_tune.artifacts (skipped if that is missing)."""
        if self.artifact_note is not None:
            return
        try:
            from amk_tune.artifacts import store_trial_bundle
        except ImportError as e:
            self.artifact_note = f"artifacts not stored: {e}"
            log.debug(self.artifact_note)
            return
        info, setup = self.setup.worker_info, self.setup
        bundle = {
            "program": timed.to_dict(),
            "schedule": cand.schedule.to_dict(),
            "kernel_knobs": cand.knobs.to_dict(),
            "cuda_source": result.get("cuda_source"),
            "binary": result.get("binary"),
            "arch": result.get("arch"),
            "model": {"source": setup.model_source, "spec": info["spec"],
                      "weights_sha256": result.get("weights_sha256", info["weights_sha256"]),
                      "seed": setup.weights_seed},
            "gpu": setup.target.name,
            "measured": bool(result["measured"]),
            "oracle": result["oracle"],
            "latency_us": float(result["latency_us"]),
            "versions": info["versions"],
        }
        try:
            store_trial_bundle(self.study, trial, bundle)
        except Exception as e:  # a broken store must not end the study: say so once
            self.artifact_note = f"artifacts not stored: {type(e).__name__}: {e}"
            trial.set_user_attr("artifact_error", self.artifact_note)

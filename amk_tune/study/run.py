"""``run_study``: one session of a study, from the GPU check to the closing summary.

``minutes`` is the wall-clock budget of the whole session, start-up included (weights,
HF reference, baselines): no trial starts once the median trial would not finish in time.
Trial 0 of a new study is the default schedule, so "first" always means the default; the
prior's warm-start picks (``--no-prior`` turns them off) come right after it, after the
default schedule with loop 1's best kernel knobs when ``--loop instruction`` ran before.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import optuna
from optuna.trial import TrialState

from amk_tune.errors import StudyError, TrialFailed
from amk_tune.model.spec import ModelSpec
from amk_tune.study.objective import Objective, StudySetup
from amk_tune.study.progress import Progress, best_feasible
from amk_tune.study.setup import DEFAULT_STORAGE, open_study, resolve_gpu, study_name
from amk_tune.study.summary import summary
from amk_tune.study.worker import Worker, WorkerSpec
from amk_tune.targets import Target
from space.kernel_knobs import KernelKnobs
from space.search_space import STEPS_PER_LAUNCH, default_params
from space.weight_format import WeightChoices


@dataclass(frozen=True)
class StudyOptions:
    model: str
    gpu: str = "auto"
    minutes: float = 10.0
    trials: int | None = None
    dtype: str = "bf16"
    quant_group: int | None = None  # int8: fixed, or None to search the groups that fit
    layers: int | None = None
    storage: str = DEFAULT_STORAGE
    study: str | None = None
    seed: int = 0
    simulate: bool = False
    prior: bool = True  # warm start a new study with the prior's picks (prior/warm_start.py)
    prior_picks: int = 4
    baselines: bool = True  # time the torch baselines at start (the summary compares them)
    prompt_len: int = 16
    iters: int = 100
    trial_timeout_s: float = 180.0
    start_timeout_s: float = 900.0
    jobs: int | None = None  # trials in flight; None: 2 on a GPU, 1 simulated (in_flight)

    def __post_init__(self) -> None:
        if self.jobs is not None and self.jobs < 1:
            raise StudyError(f"--jobs {self.jobs!r}: give at least 1 trial in flight")
        if not self.minutes > 0:
            raise StudyError(f"--minutes {self.minutes!r}: give a positive time budget")
        if self.trials is not None and self.trials < 1:
            raise StudyError(f"--trials {self.trials!r}: give at least 1 (or leave it out)")
        if self.prompt_len < 1:
            raise StudyError(f"--prompt-len {self.prompt_len!r}: the oracle needs a prompt")
        if self.iters < 1:
            raise StudyError(f"--iters {self.iters!r}: time at least one launch per trial")

    @property
    def in_flight(self) -> int:
        """Trials run at once. The worker still takes one at a time; the others are sampled,
        lowered and validated meanwhile (on a GPU that parent-side work is a large part of a
        trial). Simulated studies default to 1 so that a seeded one repeats itself: with two
        in flight the order trials finish in, and so what TPE has seen, varies."""
        return self.jobs or (1 if self.simulate else 2)


@dataclass(frozen=True)
class StudyOutcome:
    study: optuna.Study
    text: str  # the closing summary
    feasible: bool  # a feasible trial exists


def study_identity(spec: ModelSpec, target: Target, opts: StudyOptions,
                   choices: WeightChoices) -> dict[str, object]:
    """What a study's user attrs record and a resumed session must match (setup.IDENTITY)."""
    return {"model": spec.name, "layers": spec.layers, "gpu": target.name,
            "dtype": opts.dtype, "simulated": opts.simulate,
            "quant_groups": list(choices.quant_groups) if opts.dtype == "int8" else None}


def enqueue_loop1_knobs(study: optuna.Study, opts: StudyOptions, choices: WeightChoices,
                        err: TextIO) -> None:
    """Queue the default schedule with loop 1's best kernel knobs (instruction_loop.py's
    ``loop1_best``) right after the default, when loop 1 ran and found other knobs."""
    from amk_tune.study.instruction_loop import loop1_best

    knobs = loop1_best(opts.storage, study.study_name)
    tag = "[study, simulated]" if opts.simulate else "[study]"
    if knobs is None:
        return
    if knobs == KernelKnobs():
        print(f"{tag} loop 1: its best kernel knobs are the defaults (trial 0)", file=err)
        return
    if opts.trials is not None and opts.trials < 2:
        print(f"{tag} loop 1: no room after the default in --trials {opts.trials}", file=err)
        return
    study.enqueue_trial({**default_params(choices), **knobs.to_dict()},
                        user_attrs={"role": "default schedule, loop-1 kernel knobs",
                                    "origin": "loop1"})
    shown = ", ".join(f"{k}={v}" for k, v in knobs.to_dict().items())
    print(f"{tag} loop 1 enqueued #{len(study.trials) - 1}: the default schedule with "
          f"loop 1's kernel knobs ({shown})", file=err, flush=True)


def enqueue_prior_picks(study: optuna.Study, opts: StudyOptions, spec: ModelSpec,
                        target: Target, err: TextIO) -> None:
    """Queue the prior's best accepted candidates after the default (never more than the
    trials this run will start, so none is left waiting)."""
    from prior.warm_start import warm_start

    first = len(study.trials)
    k = opts.prior_picks if opts.trials is None else min(opts.prior_picks, opts.trials - first)
    tag = "[study, simulated]" if opts.simulate else "[study]"
    if k < 1:
        print(f"{tag} prior: no room after the {first} enqueued in --trials {opts.trials}",
              file=err)
        return
    ws = warm_start(study, spec, target, opts.dtype, quant_group=opts.quant_group,
                    storage=opts.storage, prompt_len=opts.prompt_len, k=k, seed=opts.seed)
    print(f"{tag} {ws.note}", file=err, flush=True)
    for n, p in enumerate(ws.picks, start=first):
        knobs = ", ".join(f"{key}={v}" for key, v in p.params.items())
        print(f"{tag} prior enqueued #{n}: predicted {p.predicted_us:.1f} us/token "
              f"(floor/latency {p.fraction:.3f}; {knobs})", file=err, flush=True)


def optimize(study: optuna.Study, objective: Objective, opts: StudyOptions, deadline: float,
             progress: Progress) -> None:
    """Run trials until ``opts.trials`` or the deadline, ``opts.in_flight`` at once.

    Enqueued trials (the default, loop 1's and the prior's picks) run one at a time first:
    popping a waiting trial is not atomic on SQLite (Optuna's SELECT ... FOR UPDATE is a
    plain read there), so two threads could both take the same one. New trials are created,
    not popped, so they may then run several at once."""
    waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    phases = [(1, waiting), (opts.in_flight, None)] if waiting and opts.in_flight > 1 \
        else [(opts.in_flight, None)]
    for jobs, n in phases:
        left = deadline - time.monotonic()
        budget = None if opts.trials is None else opts.trials - progress.finished
        if progress.stopped or left < 1.0 or budget == 0:
            return
        if budget is not None:
            n = budget if n is None else min(n, budget)
        study.optimize(objective, n_trials=n, timeout=left, catch=(TrialFailed,),
                       callbacks=[progress], n_jobs=jobs)


def run_study(opts: StudyOptions, *, out: TextIO | None = None,
              err: TextIO | None = None) -> StudyOutcome:
    from amk_tune.model.loaders import inspect_model
    from amk_tune.model.presets import with_layers

    out, err = out or sys.stdout, err or sys.stderr
    t0 = time.monotonic()
    deadline = t0 + opts.minutes * 60
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    target, _ = resolve_gpu(opts.gpu, opts.simulate)
    spec = with_layers(inspect_model(opts.model), opts.layers)
    choices = WeightChoices.for_study(spec, opts.dtype, opts.quant_group)
    name = opts.study or study_name(spec.name, opts.layers, target.name, opts.dtype,
                                    opts.simulate, opts.quant_group)
    study, created = open_study(opts.storage, name, study_identity(spec, target, opts, choices),
                                opts.seed)
    tag = "[study, simulated]" if opts.simulate else "[study]"
    if opts.simulate:
        print(f"{tag} SIMULATED STUDY: no GPU work; latencies come from an analytic cost model "
              "and are never measurements", file=err, flush=True)
    print(f"{tag} {name} in {opts.storage}: {len(study.trials)} trials so far; starting the "
          f"worker ({'simulated' if opts.simulate else 'GPU'})...", file=err, flush=True)
    cache = Path(tempfile.gettempdir()) / "amk-tune-study"
    first = choices.first()
    worker = Worker(
        WorkerSpec(backend="simulated" if opts.simulate else "gpu", model=opts.model,
                   layers=opts.layers, dtype=first.dtype, target=target.name,
                   prompt_len=opts.prompt_len, max_steps=max(STEPS_PER_LAUNCH),
                   iters=opts.iters, cache_dir=str(cache), quant_group=first.quant_group,
                   measure_baselines=opts.baselines),
        trial_timeout_s=opts.trial_timeout_s, start_timeout_s=opts.start_timeout_s)
    try:
        info = worker.start()
    except TrialFailed as e:
        raise StudyError(f"the worker could not start: {e}") from None
    try:
        if info["spec"] != dataclasses.asdict(spec):
            raise StudyError(f"the worker loaded another model shape than {opts.model!r} "
                             f"describes: {info['spec']} vs {dataclasses.asdict(spec)}")
        print(f"{tag} device: {info['device']}; oracle: {info['oracle_scope']}", file=err,
              flush=True)
        for key in ("device", "oracle_scope", "baselines", "weights_sha256"):
            if info.get(key) is not None:
                study.set_user_attr(key, info[key])
        before = len(study.trials)
        if created:  # one worker of many: only the study's creator enqueues the default
            study.enqueue_trial(default_params(choices, target),
                                user_attrs={"role": "default schedule"})
            enqueue_loop1_knobs(study, opts, choices, err)
            if opts.prior:
                enqueue_prior_picks(study, opts, spec, target, err)
        setup = StudySetup(spec, target, opts.simulate, opts.prompt_len, opts.model, 0, info,
                           choices)
        objective = Objective(study, setup, worker)
        optimize(study, objective, opts, deadline,
                 Progress(deadline, simulated=opts.simulate, stream=err))
    finally:
        worker.close()
    if objective.artifact_note:
        print(f"{tag} {objective.artifact_note}", file=err, flush=True)
    text = summary(study, info, simulated=opts.simulate,
                   session_trials=len(study.trials) - before, elapsed_s=time.monotonic() - t0)
    print(text, file=out, flush=True)
    return StudyOutcome(study, text, best_feasible(study.get_trials(deepcopy=False)) is not None)

"""``run_instruction_loop``: one session of loop 1 (instruction_loop.py says what a trial is).

The roles run one after another, each with an equal share of the time left; a role whose
grid is already done (a resumed session) runs nothing. A new role study runs the default
knobs first (an enqueued trial), so the closing table compares against them even when time
runs out before the shuffled grid reaches that point; the grid then measures it once more.
Progress goes to stderr, the closing table (best knobs per role against the defaults, and
what loop 2 will start from) to stdout.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import dataclass
from typing import TextIO

import optuna
from optuna.trial import TrialState

from amk_tune.errors import StudyError, TrialFailed
from amk_tune.study.instruction_loop import (
    RINGS,
    ROLES,
    Evaluator,
    RoleTask,
    grid_sampler,
    loop1_best,
    loop1_name,
    objective,
    per_config,
    role_knobs,
    role_tasks,
)
from amk_tune.study.progress import clock
from amk_tune.study.run import StudyOptions, study_identity
from amk_tune.study.setup import open_study, resolve_gpu, study_name
from space.kernel_knobs import ROWS_PER_WARP, UNROLL, KernelKnobs
from space.search_space import params_key
from space.weight_format import WeightChoices


@dataclass(frozen=True)
class Loop1Outcome:
    studies: dict[str, optuna.Study]  # role -> its loop-1 study
    best: KernelKnobs | None  # what loop 2 starts from (loop1_best)
    text: str  # the closing table


def run_instruction_loop(opts: StudyOptions, roles: tuple[str, ...] = ROLES, *,
                         out: TextIO | None = None, err: TextIO | None = None) -> Loop1Outcome:
    from amk_tune.model.loaders import inspect_model
    from amk_tune.model.presets import with_layers

    out, err = out or sys.stdout, err or sys.stderr
    if opts.trials is not None:
        base = len(ROWS_PER_WARP) * len(UNROLL)
        raise StudyError(f"--trials {opts.trials!r}: loop 1 evaluates each role's whole grid "
                         f"({base} points, {base * len(RINGS)} where its tile takes a ring); "
                         "leave --trials out (--minutes bounds it)")
    deadline = time.monotonic() + opts.minutes * 60
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    target, _ = resolve_gpu(opts.gpu, opts.simulate)
    spec = with_layers(inspect_model(opts.model), opts.layers)
    choices = WeightChoices.for_study(spec, opts.dtype, opts.quant_group)
    fmt = choices.first()
    main = opts.study or study_name(spec.name, opts.layers, target.name, opts.dtype,
                                    opts.simulate, opts.quant_group)
    tag = "[loop 1, simulated]" if opts.simulate else "[loop 1]"
    if opts.simulate:
        print(f"{tag} SIMULATED: no GPU work; the twin runs, times are analytic estimates and "
              "never measurements", file=err, flush=True)
    tasks = role_tasks(spec, target, fmt.dtype, fmt.quant_group)
    evaluate = Evaluator(target, opts.simulate, opts.iters, opts.seed)
    identity = study_identity(spec, target, opts, choices)
    studies = {}
    for i, role in enumerate(roles):
        rt = tasks[role]
        study, _ = open_study(opts.storage, loop1_name(main, role), identity, opts.seed)
        study.sampler = grid_sampler(rt, opts.seed)
        study.set_user_attr("loop1_role", role)
        study.set_user_attr("task", rt.task_id)
        study.set_user_attr("stages_per_step", rt.per_step)
        studies[role] = study
        if not study.trials:
            study.enqueue_trial({k: getattr(KernelKnobs(), k) for k in rt.grid})
        visited = {params_key(t.params) for t in study.trials
                   if t.state.is_finished() and set(t.params) == set(rt.grid)}
        todo = rt.grid_size - len(visited)
        left = deadline - time.monotonic()
        dims = " x ".join(f"{k} {v}" for k, v in rt.grid.items())
        print(f"{tag} {study.study_name}: tile {rt.task_id}, stages timed {rt.stages} of "
              f"{rt.per_step} per step, grid {dims}: {todo} of {rt.grid_size} left, "
              f"{clock(left)} left", file=err, flush=True)
        if todo <= 0 or left <= 0:
            continue
        # + 1: the enqueued default carries no grid id, so the grid measures it once more;
        # the GridSampler stops the study once every grid point has run
        study.optimize(objective(rt, evaluate), n_trials=todo + 1,
                       timeout=max(1.0, left / (len(roles) - i)), catch=(TrialFailed,),
                       callbacks=[_progress(tag, role, err)])
    best = loop1_best(opts.storage, main)
    text = table(studies, tasks, best, opts.simulate)
    print(text, file=out, flush=True)
    return Loop1Outcome(studies, best, text)


def _progress(tag: str, role: str, err: TextIO):
    def line(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        knobs = ", ".join(f"{k}={v}" for k, v in trial.params.items())
        if trial.state != TrialState.COMPLETE:
            what = f"{trial.state.name} ({str(trial.user_attrs.get('fail_reason'))[:160]})"
        elif trial.user_attrs.get("feasible"):
            what = f"{trial.value:.2f} us/stage"
        else:
            what = f"INFEASIBLE (twin: {trial.user_attrs['twin_problems'][0][:160]})"
        print(f"{tag} {role} trial {trial.number} ({knobs}): {what}", file=err, flush=True)

    return line


def table(studies: dict[str, optuna.Study], tasks: dict[str, RoleTask],
          best: KernelKnobs | None, simulated: bool) -> str:
    """Each role's best knobs (its ring where its grid has one) and us/stage against the
    default knobs' (every knob default: no ring), then what loop 2 starts from."""
    kind = "simulated" if simulated else "measured"
    lines = [f"loop 1 ({kind}): each role's tile checked alone, its stage timed, us per stage",
             "| role | tile | best knobs | us/stage | default knobs us/stage |",
             "|---|---|---|---|---|"]
    default = KernelKnobs()
    for role, study in studies.items():
        found = per_config(study)
        names = role_knobs(role)
        base = found.get(tuple(getattr(default, k) for k in names), math.inf)
        if found:
            config = min(sorted(found), key=found.__getitem__)
            text = ", ".join(f"{k}={v}" for k, v in zip(names, config, strict=True)
                             if k in tasks[role].grid)
            lines.append(f"| {role} | {tasks[role].task_id} | {text} | {found[config]:.2f} "
                         f"({kind}) | {_us(base, kind)} |")
        else:
            lines.append(f"| {role} | {tasks[role].task_id} | no feasible trial | - | - |")
    if best is None:
        lines.append("loop 2 starts from: the defaults (no feasible loop-1 result)")
    else:
        knobs = ", ".join(f"{k}={v}" for k, v in best.to_dict().items())
        lines.append(f"loop 2 starts from: {knobs}")
    return "\n".join(lines)


def _us(us: float, kind: str) -> str:
    return f"{us:.2f} ({kind})" if math.isfinite(us) else "-"

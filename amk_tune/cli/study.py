"""``amk-tune study``: search the schedule and kernel knobs of a model's megakernel with Optuna
(amk_tune/study/ says how): progress on stderr, the closing summary table on stdout.
``--loop instruction`` runs loop 1 instead (amk_tune/study/instruction_loop.py)."""

from __future__ import annotations

import argparse

from amk_tune.cli.common import add_model_args
from amk_tune.study.setup import DEFAULT_STORAGE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="search the megakernel's schedule and kernel knobs")
    add_model_args(p)
    p.add_argument("--loop", choices=("schedule", "instruction"), default="schedule",
                   help="schedule: the whole megakernel's schedule and kernel knobs (loop 2; "
                        "starts from loop 1's best knobs when loop 1 ran); instruction: each "
                        "GEMV role's kernel knobs on its tile alone, checked against the NumPy "
                        "twin (loop 1; default: schedule)")
    p.add_argument("--gpu", default="auto",
                   help="target profile; must match the live GPU (default: auto)")
    p.add_argument("--minutes", type=float, default=10.0,
                   help="wall-clock budget of the whole run, start-up included (default 10)")
    p.add_argument("--trials", type=int, help="at most this many trials in this run")
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help=f"Optuna storage URL (default {DEFAULT_STORAGE}; any RDB URL)")
    p.add_argument("--study", help="study name (default: MODEL-GPU-DTYPE[-gGROUP][-simulated])")
    p.add_argument("--seed", type=int, default=0, help="seed of the TPE sampler (default 0)")
    p.add_argument("--simulate", action="store_true",
                   help="no GPU: CPU reference VM oracle and an analytic cost model; every "
                        "output is marked simulated")
    p.add_argument("--no-prior", action="store_true",
                   help="no warm start: do not enqueue the learned prior's picks after the "
                        "default schedule (prior/warm_start.py)")
    p.add_argument("--no-baselines", action="store_true",
                   help="do not time the torch baselines at start (saves about a minute; the "
                        "summary then has none)")
    p.add_argument("--prompt-len", type=int, default=16,
                   help="oracle prompt length: the timed launch runs at this position")
    p.add_argument("--iters", type=int, default=100, help="timed launches per trial")
    p.add_argument("--trial-timeout", type=float, default=180.0,
                   help="seconds a trial may take in the worker before it is killed")
    p.add_argument("--jobs", type=int,
                   help="trials in flight: the worker runs one at a time while the next is "
                        "sampled, lowered and validated (default: 2 on a GPU, 1 simulated)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from amk_tune.study.run import StudyOptions, run_study

    opts = StudyOptions(
        model=args.model, gpu=args.gpu, minutes=args.minutes, trials=args.trials,
        dtype=args.dtype, quant_group=args.quant_group, layers=args.layers,
        storage=args.storage, study=args.study,
        seed=args.seed, simulate=args.simulate, prior=not args.no_prior,
        baselines=not args.no_baselines,
        prompt_len=args.prompt_len, iters=args.iters,
        trial_timeout_s=args.trial_timeout, jobs=args.jobs,
    )
    if args.loop == "instruction":
        from amk_tune.study.instruction_run import run_instruction_loop

        return 0 if run_instruction_loop(opts).best is not None else 1
    return 0 if run_study(opts).feasible else 1

"""``amk-tune bench``: megakernel us/token vs torch eager, CUDA graph and torch.compile +
CUDA graph, from one run on the same weights, with the bandwidth floor and the oracle
verdict of the timed launches (amk_tune/bench.py says how)."""

from __future__ import annotations

import argparse

from amk_tune.cli.common import add_model_args, quant_group
from amk_tune.targets import get_target
from space.kernel_knobs import KernelKnobs
from space.schedule import Schedule


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time the megakernel against torch baselines on the GPU")
    add_model_args(p)
    p.add_argument("--position", type=int, default=128,
                   help="sequence position of the timed decode steps (default 128)")
    p.add_argument("--steps-per-launch", type=int, default=8,
                   help="decode steps per timed launch (default 8)")
    p.add_argument("--schedule", help="JSON file of schedule knobs")
    p.add_argument("--kernel-knobs", help="JSON file of kernel knobs (space/kernel_knobs.py)")
    p.add_argument("--iters", type=int, default=200, help="timed calls of each contender")
    p.add_argument("--gpu", default="auto", help="target profile (floor, lowering)")
    p.add_argument("--seed", type=int, default=0, help="seed of a preset's random weights")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    p.add_argument("--no-verify", action="store_true", help="skip the HF oracle check")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from amk_tune.bench import bench
    from amk_tune.model.loaders import load_model

    model = load_model(args.model, dtype=args.dtype, quant_group=quant_group(args),
                       layers=args.layers, seed=args.seed)
    schedule = Schedule.load(args.schedule) if args.schedule else Schedule()
    knobs = KernelKnobs.load(args.kernel_knobs) if args.kernel_knobs else KernelKnobs()
    result = bench(model.weights, get_target(args.gpu), tokenizer=model.tokenizer,
                   position=args.position, steps=args.steps_per_launch, schedule=schedule,
                   iters=args.iters, compile_baseline=not args.no_compile,
                   verify=not args.no_verify, kernel_knobs=knobs)
    print(result.table())
    return 0 if args.no_verify or result.verdict.startswith("PASS") else 1

"""``amk-tune compile``: lower a model under a schedule and write the Program JSON."""

from __future__ import annotations

import argparse

from amk_tune.cli.common import add_model_args, quant_group, resolve_spec
from amk_tune.model.weights import storage_name
from amk_tune.targets import get_target
from space.schedule import Schedule
from vm.analysis import program_stats
from vm.lowering import lower


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compile", help="lower a model into an amk-program (JSON)")
    add_model_args(p)
    p.add_argument("--gpu", default="auto", help="target profile (default: live GPU, else h100)")
    p.add_argument("--schedule", help="JSON file of schedule knobs (default: the built-in)")
    p.add_argument("--steps", type=int, help="decode steps per launch (default: the schedule's)")
    p.add_argument("--position", type=int, default=0, help="sequence position of step 0")
    p.add_argument("--out", help="write the Program JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    spec = resolve_spec(args)
    schedule = Schedule.load(args.schedule) if args.schedule else Schedule()
    target = get_target(args.gpu)
    program = lower(spec, schedule, target, steps=args.steps, position=args.position,
                    dtype=args.dtype, quant_group=quant_group(args))
    st = program_stats(program)
    floor = target.floor_us(st.weight_bytes)
    print(f"model     {spec.name}: {spec.layers} layers, hidden {spec.hidden}, "
          f"{spec.heads}/{spec.kv_heads} heads, vocab {spec.vocab}")
    print(f"target    {target.name} ({target.arch}, {target.sms} SMs); "
          f"launch {program.launch.blocks} blocks x {program.launch.threads} threads")
    print(f"steps     {program.steps} per launch, from position {args.position}")
    ops = ", ".join(f"{op} {n}" for op, n in sorted(st.tasks_by_op.items()))
    print(f"tasks     {st.tasks_per_step} per step ({ops}); "
          f"busiest block {st.busiest_block_tasks}, idle blocks {st.idle_blocks}")
    print(f"critical  {st.critical_stages} dependent stages per step")
    print(f"storage   {storage_name(args.dtype, quant_group(args))}")
    print(f"weights   {st.weight_bytes / 1e6:.1f} MB per step; bandwidth floor "
          f"{floor:.0f} us/token at {target.measured_gbps:.0f} GB/s")
    if args.out:
        program.save(args.out)
        print(f"wrote     {args.out}")
    return 0

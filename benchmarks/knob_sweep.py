"""Time a few hand-picked knob settings of one model, each with its oracle verdict.

A quick A/B tool for kernel work (the study is the real search): every variant is a JSON
object of schedule and kernel-knob overrides on top of the defaults (or of ``--base``),
run as ``amk-tune bench`` runs it (prompt launch, then a timed launch at ``--position``,
both checked against HF float32), without the torch baselines. One line per variant::

    python3 benchmarks/knob_sweep.py --model smollm2-135m-instruct \\
        '{}' '{"prefetch": 2}' '{"prefetch": 3, "threads": 512}'
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

from amk_tune.bench import prompt_ids, run_checked, time_launch
from amk_tune.model.loaders import load_model
from amk_tune.oracle import compare, hf_reference
from amk_tune.targets import get_target
from space.kernel_knobs import KernelKnobs
from space.schedule import Schedule
from vm.analysis import critical_stages
from vm.lowering import lower

KNOB_NAMES = {f.name for f in fields(KernelKnobs)}


def split(overrides: dict) -> tuple[dict, dict]:
    """(schedule part, kernel-knob part) of one variant's overrides."""
    return ({k: v for k, v in overrides.items() if k not in KNOB_NAMES},
            {k: v for k, v in overrides.items() if k in KNOB_NAMES})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("variants", nargs="+", help="JSON objects of knob overrides")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--dtype", default="bf16", help="weight storage: bf16 or int8")
    ap.add_argument("--quant-group", type=int, default=0, help="int8 columns per scale (0: "
                    "one per output channel)")
    ap.add_argument("--gpu", default="auto")
    ap.add_argument("--position", type=int, default=128)
    ap.add_argument("--steps-per-launch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--base", default="{}", help="JSON overrides every variant starts from")
    args = ap.parse_args()

    from vm.gpu_runner import GpuMachine

    model = load_model(args.model, layers=args.layers, dtype=args.dtype,
                       quant_group=args.quant_group)
    w, target = model.weights, get_target(args.gpu)
    prompt = prompt_ids(w, model.tokenizer, args.position)
    ref = hf_reference(w, prompt, args.steps_per_launch + 1)
    base = json.loads(args.base)
    failed = 0
    print(f"{w.spec.name} {w.storage}, position {args.position}, "
          f"{args.steps_per_launch} steps/launch")
    for text in args.variants:
        sched_part, knob_part = split({**base, **json.loads(text)})
        sched = Schedule.from_dict({**Schedule().to_dict(), **sched_part,
                                    "steps_per_launch": args.steps_per_launch})
        knobs = KernelKnobs.from_dict({**KernelKnobs().to_dict(), **knob_part})
        try:
            machine = GpuMachine(w, knobs=knobs)
            prepared, logits, tokens = run_checked(machine, w, target, sched, prompt,
                                                   args.steps_per_launch)
            verdict = compare(ref, tokens, logits)
            t = time_launch(machine, prepared, args.iters)
        except Exception as e:  # one bad variant must not hide the others
            failed += 1
            print(f"{text:<60} FAILED {type(e).__name__}: {str(e)[:160]}")
            continue
        failed += not verdict.passed
        stages = critical_stages(lower(w.spec, sched, target, steps=1))
        k = prepared.kernel
        print(f"{text:<60} {t.median_us:8.1f} us/token ({t.p10_us:.1f}-{t.p90_us:.1f}) "
              f"{stages} stages, {k.registers} regs, {k.spills} B spilled  {verdict.message}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

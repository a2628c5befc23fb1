"""Where the time of one decode launch goes: sync hops on the critical path vs task work.

Builds the megakernel with time stamps (``KernelConfig.trace``: thread 0 of each block
stamps wait start, wait end and run end of every task with the GPU's global timer), runs
the prompt and one timed launch (oracle-checked, as ``amk-tune bench``), re-runs the timed
launch traced, and prints per task kind:

- ``run``: median us from wait end to run end (the task's own work, barrier included);
- ``wait``: median us a block spent waiting for the task's inputs;
- ``hop``: median us from the last producer stage finishing to the first consumer task
  starting (the hand-off latency the critical path pays per stage);
- the run of GEMV and attention tasks split at three phase stamps of their own (GEMV:
  staged weights landed | prologue: input vector, norm and epilogue operands | rows done
  by thread 0's warp | barrier; attention: staged rows landed, q and the newest row
  issued | chunks | reduction and stores | barrier);

and the step's wall time split into the critical stages' run and hop time. With ``--ncu``
it only runs the two launches untraced, for ``ncu`` to profile the timed one::

    ncu --clock-control none -k amk_megakernel --launch-skip 1 -c 1 \\
        --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \\
        python3 benchmarks/where_time_goes.py --model smollm2-135m --ncu

Run on the GPU machine from the repo root: ``python3 benchmarks/where_time_goes.py --model M``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from amk_tune.bench import prompt_ids, run_checked
from amk_tune.model.loaders import load_model
from amk_tune.oracle import compare, hf_reference
from amk_tune.targets import get_target
from space.kernel_knobs import KernelKnobs
from space.schedule import Schedule

_LAYER = re.compile(r"^L\d+$")


def stage_of(task: str) -> str:
    """``L3.qkv.5`` -> ``L3.qkv``; ``L3.attn.g0.p1`` -> ``L3.attn``; ``lm.7`` -> ``lm``."""
    parts = task.split(".")
    return ".".join(parts[:2]) if _LAYER.match(parts[0]) else parts[0]


def kind_of(stage: str) -> str:
    parts = stage.split(".")
    return parts[1] if _LAYER.match(parts[0]) else parts[0]


def analyse(stamps: np.ndarray, offsets: np.ndarray, task_ids: tuple[str, ...],
            steps: int) -> dict:
    """Per-kind medians and the step's split from ``stamps`` [block, g, 3] (ns)."""
    runs, waits, phases = defaultdict(list), defaultdict(list), defaultdict(list)
    start: dict[tuple[int, str], int] = {}
    end: dict[tuple[int, str], int] = {}
    order: dict[str, int] = {}
    for b in range(len(offsets) - 1):
        n = int(offsets[b + 1] - offsets[b])
        for g in range(steps * n):
            name = task_ids[int(offsets[b]) + g % n]
            t0, t1, t2, p1, p2, p3 = (int(v) for v in stamps[b, g])
            st, key = stage_of(name), (g // n, stage_of(name))
            order.setdefault(st, len(order))
            runs[kind_of(st)].append((t2 - t1) / 1e3)
            waits[kind_of(st)].append((t1 - t0) / 1e3)
            if p1:  # GEMV / attention: the run split at its three phase stamps
                phases[kind_of(st)].append([(p1 - t1) / 1e3, (p2 - p1) / 1e3,
                                            (p3 - p2) / 1e3, (t2 - p3) / 1e3])
            start[key] = min(start.get(key, t1), t1)
            end[key] = max(end.get(key, t2), t2)
    # stages in program order (the order a block first met them is the lowering's order)
    stages = sorted(order, key=lambda s: min(v for (_, st), v in start.items() if st == s))
    hops, spans = defaultdict(list), defaultdict(list)
    for s in range(steps):
        for a, b in itertools.pairwise(stages):
            hops[kind_of(b)].append((start[(s, b)] - end[(s, a)]) / 1e3)
        for st in stages:
            spans[kind_of(st)].append((end[(s, st)] - start[(s, st)]) / 1e3)
    t_first = min(start.values())
    t_last = max(end.values())
    kinds = sorted(runs, key=lambda k: -sum(spans[k]))
    table = {k: {"tasks": len(runs[k]) // steps,
                 "run_us": float(np.median(runs[k])), "wait_us": float(np.median(waits[k])),
                 "span_us_per_step": float(sum(spans[k]) / steps),
                 "hop_us": float(np.median(hops[k])) if hops[k] else 0.0,
                 "hop_us_per_step": float(sum(hops[k]) / steps),
                 # means, not medians: unbiased however coarse the timer's tick
                 "phases_us": (np.mean(np.array(phases[k]), axis=0).round(3).tolist()
                               if phases[k] else [])}
             for k in kinds}
    diffs = np.diff(np.sort(stamps[stamps > 0]))
    return {"step_us": (t_last - t_first) / 1e3 / steps, "stages_per_step": len(stages),
            "tick_ns": int(diffs[diffs > 0].min()) if (diffs > 0).any() else 0,
            "span_us_per_step": sum(v["span_us_per_step"] for v in table.values()),
            "hop_us_per_step": sum(v["hop_us_per_step"] for v in table.values()),
            "kinds": table}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--gpu", default="auto")
    ap.add_argument("--position", type=int, default=128)
    ap.add_argument("--steps-per-launch", type=int, default=8)
    ap.add_argument("--schedule", help="JSON file of schedule knobs")
    ap.add_argument("--kernel-knobs", help="JSON file of kernel knobs")
    ap.add_argument("--dtype", default="bf16", help="weight storage: bf16 or int8")
    ap.add_argument("--quant-group", type=int, default=0,
                    help="int8 columns per scale (0: one scale per output channel)")
    ap.add_argument("--ncu", action="store_true", help="untraced launches only, for ncu")
    ap.add_argument("--json", help="write the analysis here")
    args = ap.parse_args()

    from vm.gpu_runner import GpuMachine

    model = load_model(args.model, layers=args.layers, dtype=args.dtype,
                       quant_group=args.quant_group)
    w, target = model.weights, get_target(args.gpu)
    sched = Schedule.load(args.schedule) if args.schedule else Schedule()
    sched = sched.replace(steps_per_launch=args.steps_per_launch)
    knobs = (KernelKnobs.from_dict(json.loads(Path(args.kernel_knobs).read_text()))
             if args.kernel_knobs else KernelKnobs())
    prompt = prompt_ids(w, model.tokenizer, args.position)
    machine = GpuMachine(w, knobs=knobs, trace=not args.ncu)
    prepared, logits, tokens = run_checked(machine, w, target, sched, prompt,
                                           args.steps_per_launch)
    if args.ncu:
        return 0
    verdict = compare(hf_reference(w, prompt, args.steps_per_launch + 1), tokens, logits)
    machine.start(prepared)  # warm, then the traced launch
    machine.finish(prepared)
    machine.start(prepared)
    machine.finish(prepared)
    enc = prepared.encoded
    out = analyse(machine.traces(prepared), enc.offsets, enc.task_ids, prepared.steps)
    out.update(model=w.spec.name, dtype=args.dtype, quant_group=args.quant_group,
               position=args.position, steps=prepared.steps,
               schedule=sched.to_dict(), kernel_knobs=knobs.to_dict(),
               oracle=verdict.message)
    print(f"{w.spec.name} {args.dtype}, position {args.position}, {prepared.steps} "
          "steps/launch, traced: "
          f"{out['step_us']:.1f} us/step over {out['stages_per_step']} stages; oracle "
          f"{verdict.message}")
    print(f"{'kind':<8} {'tasks':>6} {'run us':>8} {'wait us':>8} {'span/step':>10} "
          f"{'hop us':>7} {'hops/step':>10}")
    for k, v in out["kinds"].items():
        print(f"{k:<8} {v['tasks']:>6} {v['run_us']:>8.2f} {v['wait_us']:>8.2f} "
              f"{v['span_us_per_step']:>10.1f} {v['hop_us']:>7.2f} {v['hop_us_per_step']:>10.1f}")
    print(f"timer tick: {out['tick_ns']} ns (smallest step between two stamps; medians "
          "of stamps finer than it are unreliable)")
    print("run split at the phase stamps (means, us): GEMV = staged weights | prologue "
          "(input, norm, epilogue operands) | rows (thread 0's warp) | barrier + arg-max; "
          "attention = staged rows | chunks | reduction + stores | barrier")
    for k, v in out["kinds"].items():
        if v["phases_us"]:
            print(f"  {k:<8} " + " | ".join(f"{x:6.2f}" for x in v["phases_us"]))
    print(f"critical stages: spans {out['span_us_per_step']:.1f} us + hops "
          f"{out['hop_us_per_step']:.1f} us per step")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())

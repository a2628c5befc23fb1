"""Validation time at scale: the llama-2-7b shape and a 13B shape under realistic
schedules, fully validated (every property, every step, no caps).

``python -m validator.bench`` prints the table BENCHMARKS.md records. Times are CPU
seconds of this process (one core): the validator is single-threaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass

from amk_tune.model.presets import preset_spec
from amk_tune.model.spec import ModelSpec
from amk_tune.targets import get_target
from space.schedule import Schedule
from validator.api import validate

# Llama-2-13B's published shape (config.json): not a preset, as no run needs its weights
LLAMA_2_13B = dataclasses.replace(
    preset_spec("llama-2-7b"), name="llama-2-13b", hidden=5120, layers=40, heads=40,
    kv_heads=40, head_dim=128, intermediate=13824,
)


@dataclass(frozen=True)
class Case:
    spec: ModelSpec
    schedule: Schedule
    steps: int
    gpu: str = "h100"


CASES = (
    Case(preset_spec("llama-2-7b"), Schedule(), 1),
    Case(preset_spec("llama-2-7b"), Schedule(tiles=264, split_kv=2), 1),
    Case(preset_spec("llama-2-7b"), Schedule(), 4),
    Case(LLAMA_2_13B, Schedule(), 1),
    Case(LLAMA_2_13B, Schedule(tiles=264, split_kv=2), 1),
    Case(LLAMA_2_13B, Schedule(blocks_per_sm=2, smem_bytes=98304), 2),
)


@dataclass(frozen=True)
class Timing:
    case: Case
    tasks: int
    executions: int
    verdict: str
    seconds: float  # best of the repeats, CPU time


def time_case(case: Case, repeats: int = 3) -> Timing:
    from vm.lowering import lower

    program = lower(case.spec, case.schedule, get_target(case.gpu), steps=case.steps)
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        verdict = validate(program)
        best = min(best, time.process_time() - start)
    return Timing(case, program.task_count, program.task_count * case.steps, verdict.verdict,
                  best)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m validator.bench", description=__doc__)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    print("| model | schedule | steps | tasks/step | executions | verdict | CPU s |")
    print("| --- | --- | ---: | ---: | ---: | --- | ---: |")
    default = Schedule()
    for case in CASES:
        t = time_case(case, args.repeats)
        knobs = {f.name: getattr(case.schedule, f.name) for f in dataclasses.fields(Schedule)
                 if getattr(case.schedule, f.name) != getattr(default, f.name)}
        shown = ", ".join(f"{k}={v}" for k, v in knobs.items()) or "default"
        print(f"| {case.spec.name} | {shown} | {case.steps} | {t.tasks} | {t.executions} | "
              f"{t.verdict} | {t.seconds:.2f} |")


if __name__ == "__main__":
    main()

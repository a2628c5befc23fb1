"""Full validation at scale: the llama-2-7b shape and a 13B shape, every property, every
step, no caps. BENCHMARKS.md records the times (``python -m validator.bench``); here a
generous bound catches a return to quadratic behaviour, and a single planted bug deep in
the program must still be found."""

from __future__ import annotations

import dataclasses
import time

import pytest

from amk_tune.model.presets import preset_spec
from amk_tune.targets import get_target
from space.schedule import Schedule
from validator import validate
from validator.bench import LLAMA_2_13B
from validator.verdict import DEADLOCK_FREE, RACE_FREE
from vm.lowering import lower
from vm.program import Program

H100 = get_target("h100")


@pytest.fixture(scope="module")
def llama7b() -> Program:
    return lower(preset_spec("llama-2-7b"), Schedule(), H100, steps=2)


def _timed(program: Program):
    start = time.process_time()
    verdict = validate(program)
    return verdict, time.process_time() - start


def _replace_task(program: Program, tid: str, **changes) -> Program:
    queues = tuple(tuple(dataclasses.replace(t, **changes) if t.id == tid else t for t in q)
                   for q in program.queues)
    return dataclasses.replace(program, queues=queues)


def test_llama_2_7b_is_accepted_quickly(llama7b):
    verdict, seconds = _timed(llama7b)
    assert verdict.accepted, verdict.describe()
    assert llama7b.task_count > 15_000
    assert seconds < 15, f"{seconds:.1f} s"  # about 1 s on one core (BENCHMARKS.md)


def test_13b_shape_is_accepted():
    program = lower(LLAMA_2_13B, Schedule(tiles=264, split_kv=2), H100, steps=1)
    verdict, seconds = _timed(program)
    assert verdict.accepted, verdict.describe()
    assert program.task_count > 40_000
    assert seconds < 30, f"{seconds:.1f} s"


def test_one_dropped_wait_deep_in_7b_is_found(llama7b):
    # an attention task of the last layer stops waiting for its group's QKV tiles
    tid = next(t.id for q in llama7b.queues for t in q if t.id.startswith("L31.attn.g17"))
    verdict = validate(_replace_task(llama7b, tid, wait=()))
    assert verdict.failed == {RACE_FREE}
    assert all(tid in v.tasks for v in verdict.violations if v.tasks)


def test_one_misplaced_task_deep_in_7b_deadlocks(llama7b):
    # a down-projection tile of layer 20 waits for the next layer's activations
    tid = next(t.id for q in llama7b.queues for t in q if t.id.startswith("L20.down."))
    program = _replace_task(llama7b, tid, wait=(dataclasses.replace(
        next(t for q in llama7b.queues for t in q if t.id == tid).wait[0], counter="act.L21"),))
    verdict = validate(program)
    assert DEADLOCK_FREE in verdict.failed
    assert any(v.tasks[0] == tid for v in verdict.violations if v.property == DEADLOCK_FREE)

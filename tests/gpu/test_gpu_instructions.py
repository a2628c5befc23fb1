"""Every instruction the lowering emits, alone on the GPU against its NumPy twin.

For each preset (at its real sizes, one layer plus the LM head), for fused and unfused
schedules and for bf16 and int8 weights (one scale per output channel, and groups of up to
64 columns), the first and last task of every kind (op, epilogue, matrix, vector source,
folded norm, KV split) runs in a one-block, one-step launch on fresh random inputs with its
declared outputs poisoned (NaN). The GPU must write every declared float, agree with the
twin there, and leave every other byte alone.
"""

from __future__ import annotations

import pytest

from amk_tune.model.presets import PRESETS, preset_spec
from amk_tune.model.quantise import allowed_groups
from amk_tune.targets import get_target
from space.schedule import Schedule
from tests.conftest import TINY, TINY_UNTIED
from vm.gpu_runner import GpuMachine
from vm.isolated import compare, isolate, random_state, run_gpu, run_twin, task_weights
from vm.lowering import lower

pytestmark = pytest.mark.gpu

SCHEDULES = {
    "fused": Schedule(),
    "fused-split": Schedule(split_kv=3, tiles=24, lm_tiles=7, threads=512, smem_bytes=8192),
    "unfused": Schedule(fuse_norm=False, fuse_rope=False, fuse_residual=False,
                        fuse_silu=False, fuse_argmax=False, split_kv=2, threads=128),
}
SPECS = {name: preset_spec(name, layers=1) for name in PRESETS} | {
    "tiny": TINY, "tiny-untied": TINY_UNTIED}
FORMATS = ("bf16", "int8", "int8-group")  # int8-group: the largest group <= 64 that fits


def weight_format(spec, fmt: str) -> dict:
    if fmt == "bf16":
        return {}
    group = max(g for g in allowed_groups(spec) if g <= 64) if fmt == "int8-group" else 0
    return {"dtype": "int8", "quant_group": group}


def kind(task) -> tuple:
    a = task.args
    if task.op != "gemv":
        return (task.op, a.get("parts"), a.get("tiles"), (a.get("src") or {}).get("kind")
                if isinstance(a.get("src"), dict) else None,
                (a.get("res") or {}).get("kind"))
    e = a["epilogue"]
    return ("gemv", e["kind"], a["matrix"].split(".")[-1], a["src"]["kind"], a["norm"] is None,
            (e.get("res") or {}).get("kind"), e.get("head", -1) >= 0 and e.get("head", 0) // 10)


def picks(program) -> list:
    first, last = {}, {}
    for _, _, t in program.tasks():
        first.setdefault(kind(t), t)
        last[kind(t)] = t
    return list({t.id: t for t in (*first.values(), *last.values())}.values())


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("sched", sorted(SCHEDULES))
@pytest.mark.parametrize("model", sorted(SPECS))
def test_instructions_match_their_twins(model, sched, fmt):
    spec = SPECS[model]
    position = 37  # attention over 38 cache rows; several KV partitions
    program = lower(spec, SCHEDULES[sched], get_target("h100"), position=position,
                    max_seq=position + 3, **weight_format(spec, fmt))
    weights = task_weights(program, seed=len(model))  # the one layer + embedding + head
    machine = GpuMachine(weights)  # uploads each weight once for all the tasks below
    problems, ran = [], 0
    for i, task in enumerate(picks(program)):
        lone = isolate(program, task)
        inputs = random_state(lone, seed=1000 + i)
        found = compare(inputs, run_gpu(lone, weights, inputs, machine),
                        run_twin(lone, weights, inputs))
        problems += [f"{task.id} ({task.op}): {p}" for p in found]
        ran += 1
    assert ran >= 6
    assert not problems, "\n".join(problems[:20])


@pytest.mark.parametrize("position", [0, 2000])
def test_attention_long_cache_and_first_position(position):
    """Beyond one shared-memory chunk of scores (online softmax across chunks), and n = 1."""
    spec = preset_spec("tinyllama-1.1b", layers=1)  # 8 query heads per KV head
    for sched in (Schedule(smem_bytes=0), Schedule(split_kv=4, smem_bytes=0)):
        program = lower(spec, sched, get_target("h100"), position=position,
                        max_seq=position + 1)
        for task in [t for _, _, t in program.tasks() if t.op == "attention"][:3]:
            lone = isolate(program, task)
            weights = task_weights(lone, seed=position)
            inputs = random_state(lone, seed=position + 1)
            found = compare(inputs, run_gpu(lone, weights, inputs),
                            run_twin(lone, weights, inputs))
            assert not found, f"{task.id}: {found}"

"""Every instruction touches exactly what its task declares (what the validator trusts).

Each task runs alone on poisoned memory: its declared reads hold finite data, everything
else is NaN, weights included (an int8 matrix's value is finite only where both its codes
and its scales are declared read). It must write only inside its declared writes, and what
it writes must be finite (so it read nothing undeclared and wrote every declared output).
"""

from __future__ import annotations

import numpy as np
import pytest

from amk_tune.model.quantise import to_storage
from amk_tune.model.weights import SCALE_SUFFIX, ModelWeights
from amk_tune.targets import get_target
from space.schedule import Schedule
from tests.conftest import TINY, TINY_UNTIED, tiny_weights
from vm.lowering import lower
from vm.reference_vm import ReferenceVM, _Context

SCHEDULES = [
    Schedule(tiles=5, split_kv=2),
    Schedule(fuse_norm=False, fuse_rope=False, fuse_residual=False, fuse_silu=False,
             fuse_argmax=False, tiles=3),
]


FORMATS = {"bf16": ("bf16", 0), "int8": ("int8", 0), "int8-g16": ("int8", 16)}


def _declared_weights(weights: ModelWeights, reads, step) -> ModelWeights:
    """``weights`` with every value NaN that the declared weight reads do not cover."""
    marks = {}
    for r in reads:
        if not r.buffer.startswith("w."):
            continue
        name = r.buffer[2:]
        a, e = r.at(step)
        per = 4 if name.endswith(SCALE_SUFFIX) else 1 if name in weights.codes else 2
        mark = marks.setdefault(name, np.zeros(weights.stored(name).size, bool))
        mark[a // per : e // per] = True
    tensors = {}
    for name, a in weights.tensors.items():
        ok = marks.get(name, np.zeros(a.size, bool)).reshape(a.shape)
        if name in weights.codes:
            scales = marks.get(name + SCALE_SUFFIX, np.zeros(weights.scales[name].size, bool))
            groups = weights.scales[name].shape[1]
            ok = ok & np.repeat(scales.reshape(-1, groups), a.shape[1] // groups, axis=1)
        tensors[name] = np.where(ok, a, np.float32(np.nan))
    return ModelWeights(weights.spec, weights.dtype, tensors, weights.quant_group,
                        weights.codes, weights.scales)


def _bytes_of(ranges, step):
    out: dict[str, np.ndarray] = {}
    for r in ranges:
        a, b = r.at(step)
        out.setdefault(r.buffer, []).append((a, b))  # type: ignore[arg-type]
    return out


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("spec", [TINY, TINY_UNTIED], ids=lambda s: s.name)
@pytest.mark.parametrize("sched", SCHEDULES, ids=["fused", "unfused"])
def test_tasks_touch_only_their_declared_bytes(spec, sched, fmt):
    dtype, group = FORMATS[fmt]
    weights = to_storage(tiny_weights(spec), dtype, group)
    steps, step, position = 3, 1, 4
    program = lower(spec, sched, get_target("h100"), steps=steps, position=position, max_seq=12,
                    dtype=dtype, quant_group=group)
    vm = ReferenceVM(program, weights)
    ctx = _Context(vm, forced_upto=0)
    rng = np.random.default_rng(0)
    checked = 0
    for b, q in enumerate(program.queues):
        for i, task in enumerate(q):
            for name, nbytes in program.buffers.items():
                if not name.startswith("w."):
                    vm.state.buffers[name] = np.full(nbytes // 4, np.nan, np.float32).view(np.uint8)
            for r in task.read:
                if r.buffer.startswith("w."):
                    continue
                a, e = r.at(step)
                view = vm.state.buffers[r.buffer][a:e].view(np.float32)
                view[:] = rng.standard_normal(view.size, dtype=np.float32)
            vm.state.buffers["tokens"].view(np.int32)[:] = rng.integers(0, spec.vocab, steps + 1)
            before = {k: v.copy() for k, v in vm.state.buffers.items()}
            vm.weights = _declared_weights(weights, task.read, step)
            vm.instrs[b][i].run(ctx, step)
            declared = _bytes_of(task.write, step)
            for name, buf in vm.state.buffers.items():
                changed = np.flatnonzero(buf != before[name])
                allowed = np.zeros(buf.size, bool)
                for a, e in declared.get(name, []):
                    allowed[a:e] = True
                assert not (changed.size and (~allowed[changed]).any()), (
                    f"{task.id} wrote {name} bytes outside its declared writes"
                )
                if name in declared and name not in ("tokens", "out_tokens"):
                    written = buf.view(np.float32)[allowed.reshape(-1, 4).all(axis=1)]
                    assert np.isfinite(written).all(), (
                        f"{task.id}: declared output {name} has NaN (an undeclared read, or a "
                        "declared write left unwritten)"
                    )
            checked += 1
    assert checked == program.task_count

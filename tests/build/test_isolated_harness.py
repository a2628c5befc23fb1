"""The isolated-instruction harness the GPU tests rely on, checked on the CPU: the twin
passes against itself, and compare() catches the failures it exists to catch."""

from __future__ import annotations

import numpy as np

from amk_tune.targets import get_target
from space.schedule import Schedule
from tests.conftest import TINY
from vm.isolated import compare, isolate, random_state, run_twin, task_weights
from vm.lowering import lower


def _one(op: str, sched: Schedule):
    program = lower(TINY, sched, get_target("h100"), position=5, max_seq=8)
    task = next(t for _, _, t in program.tasks() if t.op == op)
    lone = isolate(program, task)
    return lone, task_weights(lone, 0), random_state(lone, 1)


def test_twin_against_itself_passes_and_writes_every_declared_float():
    for op in ("gemv", "attention", "argmax", "token"):
        for sched in (Schedule(), Schedule(fuse_norm=False, fuse_rope=False, split_kv=3,
                                           fuse_argmax=False)):
            lone, w, inputs = _one(op, sched)
            twin = run_twin(lone, w, inputs)
            assert compare(inputs, twin, twin) == []


def test_compare_catches_unwritten_wrong_and_stray_writes():
    lone, w, inputs = _one("gemv", Schedule())
    twin = run_twin(lone, w, inputs)
    (name,) = [n for n, m in inputs.written.items() if m.any() and n not in ("tokens",)][:1]
    idx = np.flatnonzero(inputs.written[name])
    for corrupt, expect in ((np.nan, "not written"), (1e3, "max error")):
        bad = {k: v.copy() for k, v in twin.items()}
        bad[name][idx[0]] = corrupt
        assert any(expect in p for p in compare(inputs, bad, twin))
    outside = np.flatnonzero(~inputs.written[name])
    if outside.size:
        bad = {k: v.copy() for k, v in twin.items()}
        bad[name][outside[0]] += 1.0
        assert any("outside the declared writes" in p for p in compare(inputs, bad, twin))


def test_int8_tasks_get_int8_weights_of_the_declared_sizes():
    """What the GPU uploads for an int8 task (``ModelWeights.stored``) is exactly as big as
    the buffers the program declares, and the twin runs on the dequantised values."""
    program = lower(TINY, Schedule(), get_target("h100"), position=5, max_seq=8,
                    dtype="int8", quant_group=32)
    tiles = [t for _, _, t in program.tasks() if t.op == "gemv"]
    for task in (tiles[0], tiles[-1]):  # a QKV tile, an LM-head tile
        lone = isolate(program, task)
        w = task_weights(lone, 0)
        matrix = task.args["matrix"]
        assert {f"w.{matrix}", f"w.{matrix}.scale"} <= set(lone.buffers)
        for name, nbytes in lone.buffers.items():
            if name.startswith("w."):
                assert w.stored(name[2:]).nbytes == nbytes, name
        assert w.codes[matrix].dtype == np.int8 and w.scales[matrix].dtype == np.float32
        inputs = random_state(lone, 1)
        twin = run_twin(lone, w, inputs)
        assert compare(inputs, twin, twin) == []


def test_stage_only_keeps_a_roles_tiles_on_their_blocks_unsynchronised():
    """Loop 1 times a role through stage_only: the same tiles on the same blocks as the
    program placed them, no waits or signals, only the buffers they touch, and a launch
    the encoder (and so the kernel) accepts, empty queues included."""
    from vm import encoding
    from vm.isolated import stage_only

    program = lower(TINY, Schedule(), get_target("h100"), position=5, max_seq=8)
    ids = {t.id for _, _, t in program.tasks() if t.op == "gemv" and ".gu." in t.id}
    stage = stage_only(program, ids)
    kept = [(b, t.id) for b, _, t in stage.tasks()]
    assert sorted(kept) == sorted((b, t.id) for b, _, t in program.tasks() if t.id in ids)
    assert all(not t.wait and not t.signal for _, _, t in stage.tasks())
    assert stage.counters == {} and stage.launch == program.launch
    assert len(stage.queues) == len(program.queues) and any(not q for q in stage.queues)
    assert {"w.L0.wgu", "w.L1.wgu", "act.L0", "act.L1"} <= set(stage.buffers)
    assert not any(n.endswith(("wqkv", "wo", "wd")) for n in stage.buffers)
    enc = encoding.encode(stage, TINY)
    assert int(enc.offsets[-1]) == len(ids)

"""``fuse_down``: the down projection fused into the gate/up tiles, which add their parts
of the layer output into a vector the O tiles start with the residual (accumulating
writes, validator/races.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from amk_tune.errors import ScheduleError
from amk_tune.model.quantise import to_storage
from amk_tune.oracle import compare, hf_reference
from amk_tune.targets import get_target
from space.schedule import Schedule
from tests.conftest import TINY, tiny_weights
from validator.api import validate
from vm.decode import cpu_runner, greedy_generate
from vm.lowering import lower

H100 = get_target("h100")


def test_gate_up_tiles_accumulate_the_layer_output_the_o_tiles_start():
    p = lower(TINY, Schedule(fuse_down=True, tiles=5), H100, steps=2, position=3, max_seq=8)
    tasks = {t.id: t for _, _, t in p.tasks()}
    assert not any(".down." in tid for tid in tasks)
    hidden = TINY.hidden * 4
    gu = [t for tid, t in tasks.items() if tid.startswith("L0.gu.")]
    assert len(gu) == 5
    for t in gu:
        assert [(r.buffer, r.begin, r.end, r.accumulate) for r in t.write] == [
            ("x.L0", 0, hidden, True)]
        assert {s.counter for s in t.signal} == {"x.L0"}
        (a, b), _ = t.args["rows"]
        cols = TINY.hidden * 2
        assert any(r.buffer == "w.L0.wd_t" and (r.begin, r.end) == (a * cols, b * cols)
                   for r in t.read)
    o_writes = sorted((r.begin, r.end) for tid, t in tasks.items() if tid.startswith("L0.o.")
                      for r in t.write if r.buffer == "x.L0")
    assert o_writes[0][0] == 0 and o_writes[-1][1] == hidden  # every row started once
    assert all(x[1] == y[0] for x, y in itertools.pairwise(o_writes))
    assert p.counters["x.L0"] == 5
    assert validate(p).accepted


def test_the_validator_rejects_a_gate_up_tile_that_does_not_wait_for_the_o_tiles():
    """Without its wait on h.L0 a tile could add before an O tile wrote the start value."""
    from dataclasses import replace
    p = lower(TINY, Schedule(fuse_down=True, tiles=5), H100)
    queues = tuple(tuple(replace(t, wait=()) if t.id == "L0.gu.2" else t for t in q)
                   for q in p.queues)
    verdict = validate(replace(p, queues=queues))
    assert not verdict.accepted
    assert any(v.property == "race_free" and "L0.gu.2" in v.tasks for v in verdict.violations)


@pytest.mark.parametrize("sched", [Schedule(fuse_down=True, tiles=7, split_kv=2),
                                   Schedule(fuse_down=True, tiles=3, steps_per_launch=4,
                                            qkv_span=True)],
                         ids=["tiles7-split2", "tiles3-4steps-span"])
def test_the_reference_vm_matches_hf(sched):
    w = tiny_weights(TINY, seed=2)
    prompt = [5, 60, 2]
    gen = greedy_generate(w, sched, H100, prompt, 5, cpu_runner(w, seed=11))
    verdict = compare(hf_reference(w, prompt, 5), gen.tokens, gen.logits)
    assert verdict.passed, verdict.message


def test_the_transposed_view_is_derived_and_int8_keeps_the_base_scales():
    w = tiny_weights(TINY, seed=1)
    assert np.array_equal(w.tensor("L1.wd_t"), w.tensors["L1.wd"].T)
    assert "L1.wd_t" not in w.tensors
    q = to_storage(w, "int8", 16)
    assert np.array_equal(q.stored("L1.wd_t"), q.codes["L1.wd"].T.ravel())
    assert np.array_equal(q.tensor("L1.wd_t"), q.tensors["L1.wd"].T)  # dequantised values
    with pytest.raises(KeyError, match=r"read L1\.wd\.scale"):
        q.stored("L1.wd_t.scale")


@pytest.mark.parametrize("group", [0, 16])
def test_int8_tiles_read_the_codes_rows_and_every_scale_of_the_base(group):
    p = lower(TINY, Schedule(fuse_down=True, tiles=5), H100, dtype="int8", quant_group=group)
    inter, hidden = TINY.intermediate, TINY.hidden
    gu = [t for _, _, t in p.tasks() if t.id.startswith("L1.gu.")]
    for t in gu:
        (a, b), _ = t.args["rows"]
        reads = {(r.buffer, r.begin, r.end) for r in t.read}
        assert ("w.L1.wd_t", a * hidden, b * hidden) in reads
        assert ("w.L1.wd.scale", 0, hidden * (inter // (group or inter)) * 4) in reads
        assert t.args["epilogue"] | {} == {"kind": "silu_down", "dst": "x.L1",
                                           "down": "L1.wd_t", "dtype": "int8",
                                           "group": group or inter}
    assert p.buffers["w.L1.wd_t"] == inter * hidden
    assert validate(p).accepted


@pytest.mark.parametrize("group", [0, 16])
def test_int8_reference_vm_matches_hf_on_the_same_weights(group):
    w = to_storage(tiny_weights(TINY, seed=2), "int8", group)
    prompt = [5, 60, 2]
    sched = Schedule(fuse_down=True, tiles=6, steps_per_launch=2)
    gen = greedy_generate(w, sched, H100, prompt, 5, cpu_runner(w, seed=11))
    verdict = compare(hf_reference(w, prompt, 5), gen.tokens, gen.logits)
    assert verdict.passed, verdict.message


def test_what_fuse_down_needs_is_refused_with_the_fix():
    with pytest.raises(ScheduleError, match="needs fuse_silu = true and fuse_residual"):
        Schedule(fuse_down=True, fuse_silu=False)

"""``fuse_o``: attention fused with the O projection. Each task attends over its KV group
and adds one row range of O (over the group's columns) into the residual stream that the
QKV tiles start with the layer input (accumulating writes, validator/races.py)."""

from __future__ import annotations

import numpy as np
import pytest

from amk_tune.errors import ScheduleError
from amk_tune.oracle import compare, hf_reference
from amk_tune.targets import get_target
from space.schedule import Schedule
from tests.conftest import TINY, tiny_weights
from validator.api import validate
from vm.analysis import critical_stages
from vm.decode import cpu_runner, greedy_generate
from vm.lowering import lower

H100 = get_target("h100")


def test_no_o_stage_and_the_qkv_tiles_start_the_sums():
    p = lower(TINY, Schedule(fuse_o=True, fuse_down=True, tiles=6), H100, steps=2,
              position=3, max_seq=8)
    tasks = {t.id: t for _, _, t in p.tasks()}
    assert not any(".o." in tid for tid in tasks)
    qkv = [t for tid, t in tasks.items() if tid.startswith("L0.qkv.")]
    copied = sorted((r.begin, r.end) for t in qkv for r in t.write if r.buffer == "h.L0")
    assert copied[0][0] == 0 and copied[-1][1] == TINY.hidden * 4
    assert {s.counter for t in qkv for s in t.signal} == {"qkv.L0"}
    attn = [t for tid, t in tasks.items() if tid.startswith("L0.attn.")]
    assert len(attn) == TINY.kv_heads * (6 // TINY.kv_heads)
    for t in attn:
        assert [w.counter for w in t.wait] == ["qkv.L0"]
        assert {(r.buffer, r.accumulate) for r in t.write} == {("h.L0", True), ("x.L0", True)}
    assert p.counters["h.L0"] == len(attn)
    assert validate(p).accepted
    fused = critical_stages(p)
    assert fused == critical_stages(lower(TINY, Schedule(tiles=6), H100)) - 2 * TINY.layers


def test_the_grouped_view_is_o_cut_by_kv_group():
    w = tiny_weights(TINY, seed=1)
    view, wo = w.tensor("L0.wo_grp"), w.tensors["L0.wo"]
    cols = TINY.group * TINY.head_dim
    for g in range(TINY.kv_heads):
        assert np.array_equal(view[g * TINY.hidden : (g + 1) * TINY.hidden],
                              wo[:, g * cols : (g + 1) * cols])


@pytest.mark.parametrize("sched", [
    Schedule(fuse_o=True, tiles=6),
    Schedule(fuse_o=True, fuse_down=True, tiles=7, steps_per_launch=4),
    Schedule(fuse_o=True, fuse_down=True, qkv_span=True, tiles=5, fuse_norm=False),
], ids=["o", "o-down-4steps", "o-down-span-unfused-norm"])
def test_the_reference_vm_matches_hf(sched):
    w = tiny_weights(TINY, seed=2)
    prompt = [5, 60, 2]
    gen = greedy_generate(w, sched, H100, prompt, 5, cpu_runner(w, seed=11))
    verdict = compare(hf_reference(w, prompt, 5), gen.tokens, gen.logits)
    assert verdict.passed, verdict.message


def test_what_fuse_o_needs_is_refused_with_the_fix():
    with pytest.raises(ScheduleError, match="fuse_o = true needs"):
        Schedule(fuse_o=True, split_kv=2)
    with pytest.raises(ScheduleError, match="fuse_o = true with int8"):
        lower(TINY, Schedule(fuse_o=True), H100, dtype="int8", quant_group=16)

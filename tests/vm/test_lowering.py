"""Lowering: the program's shape, and that every knob really changes it."""

from __future__ import annotations

import itertools
import json

import pytest

from amk_tune.errors import ScheduleError
from amk_tune.targets import get_target
from space.schedule import Schedule
from tests.conftest import TINY, TINY_UNTIED
from vm.analysis import critical_stages, program_stats
from vm.lowering import lower, qkv_tiles, split
from vm.program import Program

H100 = get_target("h100")

KNOB_VARIANTS = {
    "tiles": Schedule(tiles=7),
    "lm_tiles": Schedule(lm_tiles=5),
    "sm_policy_rr": Schedule(sm_policy="round_robin"),
    "sm_policy_blocked": Schedule(sm_policy="blocked"),
    "split_kv": Schedule(split_kv=3),
    "fuse_norm": Schedule(fuse_norm=False),
    "fuse_rope": Schedule(fuse_rope=False),
    "fuse_residual": Schedule(fuse_residual=False),
    "fuse_silu": Schedule(fuse_silu=False),
    "fuse_argmax": Schedule(fuse_argmax=False),
    "steps_per_launch": Schedule(steps_per_launch=4),
    "blocks_per_sm": Schedule(blocks_per_sm=2),
    "threads": Schedule(threads=512),
    "smem_bytes": Schedule(smem_bytes=16384),
    "fuse_down": Schedule(fuse_down=True),
    "fuse_o": Schedule(fuse_o=True),
}


def test_split_covers_range_evenly():
    assert split(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert split(2, 5) == [(0, 1), (1, 2)]


def test_qkv_tiles_cover_every_head_closest_to_target():
    tiles = qkv_tiles(TINY, 40)  # 8 heads of 8 pairs: 32 or 64 tiles, 32 is closer
    assert len(tiles) == 32
    assert len(qkv_tiles(TINY, 48)) == 32  # a tie goes to fewer tiles
    assert len(qkv_tiles(TINY, 50)) == 64
    assert len(qkv_tiles(TINY, 1000)) == 8 * TINY.head_dim // 2  # at most one pair per tile
    for head in range(TINY.heads + 2 * TINY.kv_heads):
        pairs = sorted((a, b) for h, a, b in tiles if h == head)
        assert pairs[0][0] == 0 and pairs[-1][1] == TINY.head_dim // 2
        assert all(x[1] == y[0] for x, y in itertools.pairwise(pairs))


def test_default_program_shape():
    p = lower(TINY, Schedule(), H100)
    assert len(p.queues) == p.launch.blocks == H100.sms
    assert p.queues[0][0].op == "token" and p.queues[0][-1].op == "argmax"
    ids = [t.id for _, _, t in p.tasks()]
    assert len(ids) == len(set(ids))
    # every projection has at least one tile per block
    assert sum(t.id.startswith("L0.o.") for _, _, t in p.tasks()) == TINY.hidden  # rows < blocks
    # every counter's per_step equals its signals in one step
    adds: dict[str, int] = {}
    for _, _, t in p.tasks():
        for s in t.signal:
            adds[s.counter] = adds.get(s.counter, 0) + s.add
    assert adds == p.counters


def test_program_json_round_trip():
    p = lower(TINY_UNTIED, Schedule(split_kv=2, fuse_rope=False), H100, steps=3, position=5)
    again = Program.from_dict(json.loads(p.to_json()))
    assert again.to_dict() == p.to_dict()


@pytest.mark.parametrize("knob", sorted(KNOB_VARIANTS))
def test_every_knob_changes_the_program(knob):
    base = lower(TINY, Schedule(), H100).to_dict()
    varied = lower(TINY, KNOB_VARIANTS[knob], H100).to_dict()
    base.pop("extra", None)
    assert {k: v for k, v in varied.items() if k != "schedule"} != {
        k: v for k, v in base.items() if k != "schedule"
    }


def test_fusion_removes_stages():
    fused = critical_stages(lower(TINY, Schedule(), H100))
    unfused = critical_stages(lower(TINY, Schedule(fuse_norm=False, fuse_rope=False,
                                                   fuse_residual=False, fuse_silu=False), H100))
    # per layer fused: qkv, attn, o, gu, down = 5; + token, lm, argmax
    assert fused == 5 * TINY.layers + 3
    assert unfused == fused + 6 * TINY.layers + 1
    # fuse_down: the down projection rides in the gate/up tiles
    assert critical_stages(lower(TINY, Schedule(fuse_down=True), H100)) == fused - TINY.layers


def test_kv_append_has_a_row_stride():
    p = lower(TINY, Schedule(), H100, steps=4, position=7, max_seq=16)
    row = TINY.head_dim * 4
    appends = [r for _, _, t in p.tasks() for r in t.write if r.buffer.startswith("k_cache")]
    assert appends and all(r.stride == row for r in appends)
    assert min(r.begin for r in appends) >= 7 * row


@pytest.mark.parametrize("spec", [TINY, TINY_UNTIED], ids=lambda s: s.name)
def test_weight_bytes_match_the_model(spec):
    """Declared weight reads of one step = every weight once + one embedding row."""
    for sched in (Schedule(), Schedule(fuse_norm=False, tiles=3)):
        p = lower(spec, sched, H100)
        assert program_stats(p).weight_bytes == spec.weight_bytes_per_token(2)


def test_bad_positions_and_dtype_are_refused():
    with pytest.raises(ScheduleError, match="do not fit"):
        lower(TINY, Schedule(), H100, steps=4, position=10, max_seq=12)
    with pytest.raises(ScheduleError, match="int4"):
        lower(TINY, Schedule(), H100, dtype="int4")

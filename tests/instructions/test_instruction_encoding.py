"""Every instruction survives the task-args round trip, and the twins' math holds."""

from __future__ import annotations

import numpy as np
import pytest

from amk_tune.errors import ProgramError
from amk_tune.targets import get_target
from instructions import REGISTRY, decode
from instructions.reference_math import attend, attend_partial, combine_partials, rmsnorm
from space.schedule import Schedule
from tests.conftest import TINY
from vm.lowering import lower

UNFUSED = Schedule(fuse_norm=False, fuse_rope=False, fuse_residual=False, fuse_silu=False,
                   fuse_argmax=False)
MOST_FUSED = Schedule(fuse_o=True, fuse_down=True)


@pytest.mark.parametrize("sched", [Schedule(split_kv=2), UNFUSED, MOST_FUSED],
                         ids=["fused", "unfused", "most-fused"])
def test_args_round_trip(sched):
    p = lower(TINY, sched, get_target("a100"), steps=2)
    seen = set()
    for _, _, t in p.tasks():
        instr = decode(t.op, t.args)
        assert instr.to_args() == t.args
        assert decode(t.op, instr.to_args()) == instr
        seen.add(t.op)
    assert seen <= set(REGISTRY)


def test_the_schedules_cover_every_instruction():
    programs = [lower(TINY, s, get_target("t4")) for s in (Schedule(), UNFUSED, MOST_FUSED)]
    ops = {t.op for p in programs for _, _, t in p.tasks()}
    assert ops == set(REGISTRY)


def test_bad_args_are_program_errors():
    with pytest.raises(ProgramError, match="bad args for op 'attention'"):
        decode("attention", {"group": 0})
    with pytest.raises(ProgramError, match="no field"):
        decode("token", {"colour": 1})


def test_split_kv_partials_combine_to_full_attention():
    rng = np.random.default_rng(0)
    q = rng.standard_normal(16, dtype=np.float32)
    k = rng.standard_normal((37, 16), dtype=np.float32)
    v = rng.standard_normal((37, 16), dtype=np.float32)
    full = attend(q, k, v, 0.25)
    for parts in (1, 2, 5, 40):  # 40 > rows: some partitions are empty
        chunk = -(-37 // parts)
        rows = []
        for j in range(parts):
            lo, hi = min(37, j * chunk), min(37, (j + 1) * chunk)
            m, s, acc = attend_partial(q, k[lo:hi], v[lo:hi], 0.25)
            rows.append(np.concatenate([[m, s], acc]).astype(np.float32))
        np.testing.assert_allclose(combine_partials(np.stack(rows)), full, rtol=1e-5, atol=1e-6)


def test_rmsnorm_matches_definition():
    x = np.linspace(-2, 3, 64, dtype=np.float32)
    w = np.full(64, 0.5, np.float32)
    want = 0.5 * x / np.sqrt(np.mean(x.astype(np.float64) ** 2) + 1e-5)
    np.testing.assert_allclose(rmsnorm(x, w, 1e-5), want, rtol=1e-6)


@pytest.mark.parametrize("group", [0, 16])
def test_int8_gemv_args_round_trip(group):
    p = lower(TINY, UNFUSED, get_target("h100"), dtype="int8", quant_group=group)
    tiles = [t for _, _, t in p.tasks() if t.op == "gemv"]
    assert tiles
    for t in tiles:
        instr = decode(t.op, t.args)
        assert instr.to_args() == t.args and instr.dtype == "int8" and instr.group > 0


@pytest.mark.parametrize(("extra", "message"), [
    ({"dtype": "int4", "group": 16}, "gemv dtype 'int4'"),
    ({"dtype": "int8"}, "int8 weights need a group > 0"),
    ({"group": 16}, "bf16 weights take 0"),
])
def test_bad_gemv_weight_formats_are_program_errors(extra, message):
    p = lower(TINY, Schedule(), get_target("h100"))
    t = next(t for _, _, t in p.tasks() if t.op == "gemv")
    with pytest.raises(ProgramError, match=message):
        decode("gemv", {**t.args, **extra})

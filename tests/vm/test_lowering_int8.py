"""Lowering int8 weights: GEMV tiles read int8 codes and float32 scales (declared byte for
byte, so the floor counts them), the tied LM head is its own quantised tensor, bf16
programs are exactly what they were, and a group that does not fit is refused by name."""

from __future__ import annotations

import json
import math

import pytest

from amk_tune.errors import ScheduleError
from amk_tune.model.quantise import gemv_matrices
from amk_tune.model.weights import weight_shapes
from amk_tune.targets import get_target
from space.schedule import Schedule
from tests.conftest import TINY, TINY_UNTIED
from vm.analysis import program_stats
from vm.lowering import lower

H100 = get_target("h100")
SCHEDULES = [Schedule(), Schedule(fuse_norm=False, fuse_silu=False, tiles=3, smem_bytes=100)]


def _expected_weight_bytes(spec, group: int) -> int:
    """Every GEMV matrix once as int8 + its float32 scales, the norms as bf16, one bf16
    embedding row (the token lookup)."""
    shapes = weight_shapes(spec, "int8")
    total = 0
    for name in gemv_matrices(spec, "int8"):
        rows, cols = shapes[name]
        total += rows * cols + rows * (cols // (group or cols)) * 4
    norms = [n for n, s in shapes.items() if len(s) == 1]
    return total + sum(2 * shapes[n][0] for n in norms) + 2 * spec.hidden


@pytest.mark.parametrize("group", [0, 16])
@pytest.mark.parametrize("sched", range(len(SCHEDULES)))
@pytest.mark.parametrize("spec", [TINY, TINY_UNTIED], ids=lambda s: s.name)
def test_int8_tiles_read_codes_and_scales(spec, sched, group):
    p = lower(spec, SCHEDULES[sched], H100, dtype="int8", quant_group=group)
    assert p.extra["dtype"] == "int8" and p.extra["quant_group"] == group
    assert program_stats(p).weight_bytes == _expected_weight_bytes(spec, group)
    shapes = weight_shapes(spec, "int8")
    for name in gemv_matrices(spec, "int8"):
        rows, cols = shapes[name]
        assert p.buffers[f"w.{name}"] == rows * cols
        assert p.buffers[f"w.{name}.scale"] == rows * (cols // (group or cols)) * 4
    assert p.buffers["w.embed"] == math.prod(shapes["embed"]) * 2
    tiles = [t for _, _, t in p.tasks() if t.op == "gemv"]
    assert {t.args["matrix"] for t in tiles} == set(gemv_matrices(spec, "int8"))
    for t in tiles:
        cols = shapes[t.args["matrix"]][1]
        assert t.args["dtype"] == "int8" and t.args["group"] == (group or cols)
        rows = sum(b - a for a, b in t.args["rows"])
        assert t.smem_bytes == min(rows * cols, SCHEDULES[sched].smem_bytes)  # 1 byte a code
        codes = [r for r in t.read if r.buffer == f"w.{t.args['matrix']}"]
        scales = [r for r in t.read if r.buffer == f"w.{t.args['matrix']}.scale"]
        assert [(r.begin, r.end) for r in codes] == [(a * cols, b * cols)
                                                     for a, b in t.args["rows"]]
        per_row = cols // (group or cols) * 4
        assert [(r.begin, r.end) for r in scales] == [(a * per_row, b * per_row)
                                                      for a, b in t.args["rows"]]


def test_int8_reads_about_half_the_bytes_of_bf16():
    bf16 = program_stats(lower(TINY, Schedule(), H100)).weight_bytes
    int8 = program_stats(lower(TINY, Schedule(), H100, dtype="int8")).weight_bytes
    assert 0.5 < int8 / bf16 < 0.56


def test_bf16_programs_carry_no_weight_format_fields():
    p = json.loads(lower(TINY, Schedule(), H100).to_json())
    assert "quant_group" not in p and p["dtype"] == "bf16"
    gemv = [t for q in p["queues"] for t in q if t["op"] == "gemv"]
    assert gemv and all("dtype" not in t["args"] and "group" not in t["args"] for t in gemv)
    assert not any(b.endswith(".scale") for b in p["buffers"])
    assert "w.lm_head" not in p["buffers"]  # tied bf16: the LM head streams the embedding


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"dtype": "int8", "quant_group": 64}, r"quantisation group 64 does not fit 'tiny'.*"
                                           r"choose one of \[0, 16, 32\]"),
    ({"dtype": "int8", "quant_group": 24}, r"group 24"),
    ({"dtype": "bf16", "quant_group": 16}, r"quant_group = 16 for bf16 weights"),
])
def test_bad_quantisation_groups_are_refused(kwargs, message):
    with pytest.raises(ScheduleError, match=message):
        lower(TINY, Schedule(), H100, **kwargs)


def test_a_program_runs_only_on_weights_of_its_storage():
    from amk_tune.errors import VmError
    from amk_tune.model.quantise import quantise
    from tests.conftest import tiny_weights
    from vm.reference_vm import ReferenceVM

    bf16 = tiny_weights(TINY)
    int8 = lower(TINY, Schedule(), H100, dtype="int8", quant_group=16)
    with pytest.raises(VmError, match="lowered for int8, group 16 weights but these are bf16"):
        ReferenceVM(int8, bf16)
    with pytest.raises(VmError, match="but these are int8, per-channel scales"):
        ReferenceVM(int8, quantise(bf16, 0))
    ReferenceVM(int8, quantise(bf16, 16))

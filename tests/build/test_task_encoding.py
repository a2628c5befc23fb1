"""The task encoding: one registry for Python and CUDA, a lossless pack of every task."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from amk_tune.errors import BuildError
from amk_tune.targets import get_target
from space.schedule import Schedule
from tests.conftest import TINY, TINY_UNTIED
from vm import encoding
from vm.encoding import OP_CODES, OP_FIELDS, encode, header_text, offset
from vm.lowering import lower
from vm.program import Wait

H100 = get_target("h100")
SCHEDULES = [
    Schedule(),
    Schedule(split_kv=2, tiles=6, lm_tiles=5, sm_policy="blocked", steps_per_launch=3),
    Schedule(fuse_norm=False, fuse_rope=False, fuse_residual=False, fuse_silu=False,
             fuse_argmax=False, split_kv=3, sm_policy="round_robin"),
    Schedule(qkv_span=True, tiles=7),
    Schedule(fuse_down=True, tiles=5),
    Schedule(fuse_o=True, fuse_down=True, tiles=6),
]


def test_header_constants_are_the_python_layout():
    text = header_text()
    for op, code in OP_CODES.items():
        assert f"constexpr int OP_{op.upper()} = {code};" in text
        body = re.search(rf"namespace {op} {{(.*?)}}", text).group(1)
        found = dict(re.findall(r"constexpr int (\w+) = (\d+);", body))
        assert found == {f.upper(): str(offset(op, f)) for f in OP_FIELDS[op]}
    assert f"constexpr int kRecordInts = {encoding.RECORD_INTS};" in text
    for dtype, code in encoding.WDTYPE_CODES.items():
        assert f"constexpr int WDT_{dtype.upper()} = {code};" in text


FORMATS = {"bf16": {}, "int8": {"dtype": "int8"}, "int8-g16": {"dtype": "int8", "quant_group": 16}}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("spec", [TINY, TINY_UNTIED], ids=lambda s: s.name)
@pytest.mark.parametrize("sched", range(len(SCHEDULES)))
def test_every_task_round_trips(spec, sched, fmt):
    if SCHEDULES[sched].fuse_o and fmt != "bf16":
        pytest.skip("fuse_o is bf16 only (tests/vm/test_fuse_o.py checks the refusal)")
    program = lower(spec, SCHEDULES[sched], H100, position=4, max_seq=16, **FORMATS[fmt])
    enc = encode(program, spec)
    assert enc.buffers[:2] == ("tokens", "out_tokens")
    assert enc.offsets[-1] == program.task_count == len(enc.table)
    for row, (b, _, task) in enumerate(program.tasks()):
        assert enc.offsets[b] <= row < enc.offsets[b + 1]
        assert enc.task_ids[row] == task.id
        assert encoding.OP_NAMES[enc.field(row, "op")] == task.op
        waits = [(enc.counters[enc.field(row, f"w{i}_counter")], enc.field(row, f"w{i}_value"),
                  enc.field(row, f"w{i}_per_step")) for i in range(enc.field(row, "n_wait"))]
        assert waits == [(w.counter, w.value, program.counters[w.counter]) for w in task.wait]
        signals = [(enc.counters[enc.field(row, f"s{i}_counter")], enc.field(row, f"s{i}_add"))
                   for i in range(enc.field(row, "n_signal"))]
        assert signals == [(s.counter, s.add) for s in task.signal]
        _check_args(enc, row, task, spec)


def _name(enc, row, field):
    return enc.buffers[enc.field(row, field)]


def _check_args(enc, row, task, spec):
    a = task.args
    if task.op == "gemv":
        assert _name(enc, row, "matrix") == f"w.{a['matrix']}"
        segs = [(enc.field(row, "s0a"), enc.field(row, "s0b")),
                (enc.field(row, "s1a"), enc.field(row, "s1b"))][: enc.field(row, "nseg")]
        assert segs == [tuple(r) for r in a["rows"]]
        assert enc.field(row, "src_n") == a["src"]["n"]
        norm = enc.field(row, "norm")
        assert (norm == -1) == (a["norm"] is None)
        dtype = a.get("dtype", "bf16")
        assert enc.field(row, "wdtype") == encoding.WDTYPE_CODES[dtype]
        if dtype == "int8":
            assert _name(enc, row, "scale") == f"w.{a['matrix']}.scale"
            assert enc.field(row, "qgroup") == a["group"]
        else:
            assert (enc.field(row, "scale"), enc.field(row, "qgroup")) == (-1, 0)
        e = a["epilogue"]
        assert enc.field(row, "epi") == encoding.EPILOGUE_CODES[e["kind"]]
        dst = e.get("dst", e.get("logits"))
        if dst:
            assert _name(enc, row, "dst") == dst
        if e["kind"] == "qkv_rope":
            assert (enc.field(row, "head"), enc.field(row, "p0"), enc.field(row, "p1")) == (
                e["head"], e["p0"], e["p1"])
            assert _name(enc, row, "k_cache") == e["k_cache"]
        if e["kind"] == "qkv_span":  # the flattened pair range rides in p0 / p1
            assert (enc.field(row, "head"), enc.field(row, "p0"), enc.field(row, "p1")) == (
                0, e["f0"], e["f1"])
            assert _name(enc, row, "v_cache") == e["v_cache"]
        if e["kind"] == "silu_down":
            assert _name(enc, row, "down") == f"w.{e['down']}"
            assert enc.field(row, "down_cols") == spec.hidden
        cp = a.get("copy")
        assert (enc.field(row, "cp_r0"), enc.field(row, "cp_r1")) == (
            (cp["r0"], cp["r1"]) if cp else (0, 0))
        if cp:
            assert _name(enc, row, "cp_dst0") == cp["dsts"][0]
            assert enc.field(row, "cp_kind") == encoding.SRC_CODES[cp["src"]["kind"]]
    elif task.op == "attn_o":
        for f in ("group", "part", "parts", "heads", "kv_heads", "head_dim", "max_seq", "r0",
                  "r1"):
            assert enc.field(row, f) == a[f]
        assert enc.field(row, "out") == -1
        assert enc.field(row, "vrow0") == a["group"] * spec.hidden + a["r0"]
        assert [_name(enc, row, f"dst{i}") for i in range(len(a["dsts"]))] == a["dsts"]
    elif task.op == "attention":
        for f in ("group", "part", "parts", "heads", "kv_heads", "head_dim", "max_seq"):
            assert enc.field(row, f) == a[f]
        assert _name(enc, row, "out") == a["out"]
    elif task.op == "argmax":
        assert (_name(enc, row, "src"), enc.field(row, "tiles")) == (a["src"], a["tiles"])
    elif task.op == "token":
        assert enc.field(row, "vocab") == spec.vocab


def test_lowered_args_do_not_depend_on_the_position():
    """The kernel takes the position as an argument: one build (and the same task records)
    serves every launch of a generation."""
    a = lower(TINY, Schedule(), H100, position=0, max_seq=40)
    b = lower(TINY, Schedule(), H100, position=33, max_seq=40)
    assert np.array_equal(encode(a, TINY).table, encode(b, TINY).table)


def test_what_the_kernel_cannot_run_is_a_build_error():
    p = lower(TINY, Schedule(), H100)
    t = p.queues[0][0]
    too_many = dataclasses.replace(t, wait=tuple(Wait("lm", 1) for _ in range(5)))
    bad = dataclasses.replace(p, queues=((too_many, *p.queues[0][1:]), *p.queues[1:]))
    with pytest.raises(BuildError, match="5 waits"):
        encode(bad, TINY)
    unknown = dataclasses.replace(t, op="fft", instr=None)
    bad = dataclasses.replace(p, queues=((unknown, *p.queues[0][1:]), *p.queues[1:]))
    with pytest.raises(BuildError, match="op 'fft'"):
        encode(bad, TINY)
    missing = dataclasses.replace(p, buffers={k: v for k, v in p.buffers.items()
                                              if k != "out_tokens"})
    with pytest.raises(BuildError, match="out_tokens"):
        encode(missing, TINY)


def test_an_int8_tile_the_kernel_cannot_load_is_a_build_error():
    p = lower(TINY, Schedule(), H100, dtype="int8", quant_group=16)
    b, i, t = next((b, i, t) for b, _, t in p.tasks() if t.op == "gemv"
                   for i in [p.queues[b].index(t)])
    odd = dataclasses.replace(t, instr=dataclasses.replace(t.instr, group=24))
    q = list(p.queues[b])
    q[i] = odd
    bad = dataclasses.replace(p, queues=(*p.queues[:b], tuple(q), *p.queues[b + 1:]))
    with pytest.raises(BuildError, match="group 24 must be multiples of 16"):
        encode(bad, TINY)

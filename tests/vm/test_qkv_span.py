"""``qkv_span``: QKV tiles of equal RoPE-pair ranges that cross heads and KV groups, read
from the halves view of the fused QKV rows (amk_tune/model/weights.py)."""

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
from vm.lowering import lower, qkv_spans

H100 = get_target("h100")
PAIRS = (TINY.heads + 2 * TINY.kv_heads) * TINY.head_dim // 2  # 8 heads x 8 pairs


def _qkv_tasks(program, layer: int = 0):
    return [t for _, _, t in program.tasks() if t.id.startswith(f"L{layer}.qkv.")]


def test_spans_cover_every_pair_once_in_equal_ranges():
    spans = qkv_spans(TINY, 7)
    assert spans[0][0] == 0 and spans[-1][1] == PAIRS
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert {b - a for a, b in spans} == {9, 10}
    assert len(qkv_spans(TINY, 1000)) == PAIRS  # at most one pair per tile


def test_a_tile_signals_every_kv_group_it_writes():
    """TINY's heads in [q; k; v] order are q0 q1 (group 0) q2 q3 (group 1) k0 k1 v0 v1:
    a tile across q1 | q2 writes both groups, so both attention groups wait for it."""
    p = lower(TINY, Schedule(qkv_span=True, tiles=7), H100)
    half, tasks = TINY.head_dim // 2, _qkv_tasks(p)
    assert {t.args["matrix"] for t in tasks} == {"L0.wqkv_halves"}
    for t in tasks:
        e = t.args["epilogue"]
        heads = range(e["f0"] // half, (e["f1"] - 1) // half + 1)
        groups = {h // TINY.group if h < TINY.heads else (h - TINY.heads) % TINY.kv_heads
                  for h in heads}
        assert {s.counter for s in t.signal} == {f"qkv.L0.g{g}" for g in groups}
        assert t.args["rows"] == [[e["f0"], e["f1"]], [PAIRS + e["f0"], PAIRS + e["f1"]]]
    assert any(len(t.signal) == 2 for t in tasks)
    for g in range(TINY.kv_heads):
        assert p.counters[f"qkv.L0.g{g}"] == sum(
            any(s.counter == f"qkv.L0.g{g}" for s in t.signal) for t in tasks)


def test_the_writes_are_the_head_tiles_writes():
    """Same bytes of q and both caches as one-head tiles write, each exactly once."""
    def writes(sched):
        p = lower(TINY, sched, H100, steps=2, position=3, max_seq=8)
        out = [(r.buffer, r.begin, r.end, r.stride) for t in _qkv_tasks(p) for r in t.write]
        return out, p

    span, p = writes(Schedule(qkv_span=True, tiles=7))
    heads, _ = writes(Schedule(tiles=7))
    assert len(span) == len(set(span))

    def covered(ranges):
        return {(b, i, s) for b, lo, hi, s in ranges for i in range(lo, hi, 4)}
    assert covered(span) == covered(heads)
    assert validate(p).accepted


@pytest.mark.parametrize("sched", [Schedule(qkv_span=True, tiles=7, split_kv=2),
                                   Schedule(qkv_span=True, tiles=3, steps_per_launch=4)],
                         ids=["tiles7-split2", "tiles3-4steps"])
def test_the_reference_vm_matches_hf(sched):
    w = tiny_weights(TINY, seed=2)
    prompt = [5, 60, 2]
    gen = greedy_generate(w, sched, H100, prompt, 5, cpu_runner(w, seed=11))
    verdict = compare(hf_reference(w, prompt, 5), gen.tokens, gen.logits)
    assert verdict.passed, verdict.message


def test_the_halves_view_permutes_rows_values_codes_and_scales():
    w = to_storage(tiny_weights(TINY, seed=1), "int8", 16)
    half, d = TINY.head_dim // 2, TINY.head_dim
    base, view = w.tensors["L1.wqkv"], w.tensor("L1.wqkv_halves")
    for f in (0, half - 1, half, PAIRS - 1):
        h, p = divmod(f, half)
        assert np.array_equal(view[f], base[h * d + p])
        assert np.array_equal(view[PAIRS + f], base[h * d + half + p])
    codes, scales = w.codes["L1.wqkv"], w.scales["L1.wqkv"]
    order = [h * d + o + p for o in (0, half) for h in range(8) for p in range(half)]
    assert np.array_equal(w.stored("L1.wqkv_halves"), codes[order].ravel())
    assert np.array_equal(w.stored("L1.wqkv_halves.scale"), scales[order].ravel())
    assert "L1.wqkv_halves" not in w.tensors  # a view is derived, never stored or hashed
    with pytest.raises(KeyError):
        w.tensor("L1.wo_halves")


def test_span_without_fused_rope_is_refused_with_the_fix():
    with pytest.raises(ScheduleError, match="qkv_span = true needs fuse_rope = true"):
        Schedule(qkv_span=True, fuse_rope=False)

"""The real SmolLM2-135M-Instruct with int8 weights, end to end on the CPU reference VM,
against HF eager float32 on the same dequantised weights: 64 greedy tokens from a real
prompt equal to HF ``generate``, and the logits of every step within the oracle's usual
tolerance, with one scale per output channel and with groups of 64 columns.

The schedules are cheap on purpose (few tiles: a few hundred tasks a step instead of
thousands), so each 64-token run takes seconds on a CI core; the GPU test
(tests/gpu/test_gpu_real_smollm2_int8.py) runs the default schedules.
"""

from __future__ import annotations

import numpy as np
import pytest

from amk_tune.model.quantise import dequantise
from amk_tune.oracle import compare
from amk_tune.targets import get_target
from space.schedule import Schedule
from tests.conftest import INT8_NEW_TOKENS as NEW_TOKENS
from vm.decode import cpu_runner, greedy_generate

CHEAP = Schedule(tiles=4, lm_tiles=4, steps_per_launch=8)
CHEAP_UNFUSED = Schedule(tiles=3, lm_tiles=5, split_kv=2, fuse_norm=False, fuse_rope=False,
                         fuse_residual=False, fuse_silu=False, fuse_argmax=False,
                         sm_policy="blocked", steps_per_launch=16)


def test_the_weights_are_int8(smollm2_int8, smollm2_real):
    weights, _, _ = smollm2_int8
    bf16 = smollm2_real.weights.tensors
    head = weights.tensors["lm_head"]  # tied model: the LM head is quantised on its own
    np.testing.assert_array_equal(head, dequantise(weights.codes["lm_head"],
                                                   weights.scales["lm_head"]))
    assert weights.tensors["embed"] is bf16["embed"]  # the token lookup stays bf16
    assert not np.array_equal(head, bf16["embed"])
    assert np.abs(weights.codes["L7.wgu"]).max() == 127


@pytest.mark.parametrize("sched", [CHEAP, CHEAP_UNFUSED], ids=["fused", "unfused"])
def test_real_int8_model_matches_hf(smollm2_int8, sched):
    weights, ids, ref = smollm2_int8
    gen = greedy_generate(weights, sched, get_target("h100"), ids, NEW_TOKENS,
                          cpu_runner(weights, seed=11))
    verdict = compare(ref, gen.tokens, gen.logits)
    assert verdict.passed, verdict.message
    assert len(gen.tokens) == NEW_TOKENS and verdict.steps == len(ids) + NEW_TOKENS - 1

"""The real SmolLM2-135M-Instruct with int8 weights on the GPU: 64 greedy tokens from a real
prompt equal to HF generate on the same dequantised weights, logits within the oracle's
tolerance at every step, with one scale per output channel and with groups of 64 columns,
under three schedules, with 1-step and 8-step launches."""

from __future__ import annotations

import pytest

from amk_tune.targets import get_target
from tests.conftest import INT8_NEW_TOKENS as NEW_TOKENS
from tests.gpu.test_gpu_real_smollm2 import SCHEDULES
from vm.decode import greedy_generate
from vm.gpu_runner import gpu_runner

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("steps", [8, 1])
@pytest.mark.parametrize("sched", sorted(SCHEDULES))
def test_real_int8_model_matches_hf(smollm2_int8, smollm2_real, sched, steps):
    from amk_tune.oracle import compare

    weights, ids, ref = smollm2_int8
    schedule = SCHEDULES[sched].replace(steps_per_launch=steps)
    gen = greedy_generate(weights, schedule, get_target("h100"), ids, NEW_TOKENS,
                          gpu_runner(weights))
    verdict = compare(ref, gen.tokens, gen.logits)
    print(f"smollm2-135m-instruct {weights.storage} {sched} steps={steps}: {verdict.message}")
    print("text:", smollm2_real.tokenizer.decode(gen.tokens))
    assert verdict.passed, verdict.message
    assert len(gen.tokens) == NEW_TOKENS

"""The real SmolLM2-135M-Instruct, end to end on the CPU reference VM, against HF eager.

The prompt goes through the decode program token by token; then 32 greedy tokens must equal
HF ``generate(do_sample=False)`` and the logits of every step must be within tolerance,
under the default schedule and two very different ones.
"""

from __future__ import annotations

import pytest

from amk_tune.oracle import compare, hf_model, hf_reference
from amk_tune.targets import get_target
from space.schedule import Schedule
from vm.decode import cpu_runner, greedy_generate

NEW_TOKENS = 32
PROMPTS = {
    "short": "The capital of France is",
    "long": "Write a short story about a lighthouse keeper who finds a message in a bottle. "
    "It should be sad but end with hope, and it must mention the sea at night.",
}
SCHEDULES = {
    "default": Schedule(steps_per_launch=8),
    "split-kv": Schedule(split_kv=3, tiles=64, lm_tiles=40, sm_policy="round_robin",
                         steps_per_launch=4),
    "unfused": Schedule(fuse_norm=False, fuse_rope=False, fuse_residual=False,
                        fuse_silu=False, fuse_argmax=False, sm_policy="blocked",
                        steps_per_launch=8, blocks_per_sm=2),
}


@pytest.fixture(scope="module")
def real(smollm2_real):
    return smollm2_real


@pytest.fixture(scope="module")
def references(real):
    model = hf_model(real.weights)
    out = {}
    for name, text in PROMPTS.items():
        ids = real.tokenizer.encode(text, add_special_tokens=False)
        out[name] = (ids, hf_reference(model, ids, NEW_TOKENS))
    return out


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_short_prompt_matches_hf(real, references, schedule):
    ids, ref = references["short"]
    gen = greedy_generate(real.weights, SCHEDULES[schedule], get_target("h100"), ids,
                          NEW_TOKENS, cpu_runner(real.weights, seed=7))
    verdict = compare(ref, gen.tokens, gen.logits)
    assert verdict.passed, verdict.message
    assert len(gen.tokens) == NEW_TOKENS


def test_long_prompt_matches_hf(real, references):
    ids, ref = references["long"]
    assert len(ids) > 25
    gen = greedy_generate(real.weights, SCHEDULES["default"], get_target("h200"), ids,
                          NEW_TOKENS, cpu_runner(real.weights))
    verdict = compare(ref, gen.tokens, gen.logits)
    assert verdict.passed, verdict.message
    assert real.tokenizer.decode(gen.tokens).strip()

"""The real SmolLM2-135M-Instruct on the GPU: 64 greedy tokens from a real prompt equal to
HF generate, logits within the oracle's tolerance at every step, under three schedules,
with 1-step and 8-step launches."""

from __future__ import annotations

import pytest

from amk_tune.targets import get_target
from space.schedule import Schedule
from vm.decode import greedy_generate
from vm.gpu_runner import gpu_runner

pytestmark = pytest.mark.gpu
NEW_TOKENS = 64
PROMPT = "The three primary colours of light are red, green and"
SCHEDULES = {
    "default": Schedule(),
    "split-kv": Schedule(split_kv=3, tiles=64, lm_tiles=40, sm_policy="round_robin",
                         threads=512, smem_bytes=32768),
    "unfused": Schedule(fuse_norm=False, fuse_rope=False, fuse_residual=False,
                        fuse_silu=False, fuse_argmax=False, sm_policy="blocked",
                        blocks_per_sm=2),
    "qkv-span": Schedule(qkv_span=True, smem_bytes=131072, steps_per_launch=8),
    "fuse-down": Schedule(fuse_down=True, smem_bytes=131072, steps_per_launch=8),
    "fuse-o-down": Schedule(fuse_o=True, fuse_down=True, smem_bytes=131072,
                            steps_per_launch=8),
}


@pytest.fixture(scope="module")
def real(smollm2_real):
    return smollm2_real


@pytest.fixture(scope="module")
def reference(real):
    from amk_tune.oracle import hf_reference

    ids = [int(t) for t in real.tokenizer.encode(PROMPT, add_special_tokens=False)]
    return ids, hf_reference(real.weights, ids, NEW_TOKENS)


@pytest.mark.parametrize("steps", [8, 1])
@pytest.mark.parametrize("sched", sorted(SCHEDULES))
def test_real_model_matches_hf(real, reference, sched, steps):
    from amk_tune.oracle import compare

    ids, ref = reference
    schedule = SCHEDULES[sched].replace(steps_per_launch=steps)
    gen = greedy_generate(real.weights, schedule, get_target("h100"), ids, NEW_TOKENS,
                          gpu_runner(real.weights))
    verdict = compare(ref, gen.tokens, gen.logits)
    print(f"smollm2-135m-instruct {sched} steps={steps}: {verdict.message}")
    print("text:", real.tokenizer.decode(gen.tokens))
    assert verdict.passed, verdict.message
    assert len(gen.tokens) == NEW_TOKENS


@pytest.mark.parametrize(("prefill", "evict_first", "bulk"),
                         [(False, False, False), (True, False, False), (True, True, False),
                          (True, True, True)],
                         ids=["plain", "prefill", "prefill-evict-first", "prefill-evict-bulk"])
def test_real_model_matches_hf_with_k_split_and_the_lm_ring(real, reference, prefill,
                                                             evict_first, bulk):
    """The two kernel knobs that change how a row is read: split over warps (the sums
    added in another order) and the LM head streamed through its cp.async ring; with
    ``ring_prefill`` the ring's first 3 items (chunk blocks of 576-long rows) are issued with
    the prefetched weights; with ``weights_evict_first`` the ring's copies and the layer
    tiles' register loads carry the L2 evict-first hint; with ``bulk_stage`` the layer
    tiles' staged rows come by TMA bulk copies (two slots, so each mbarrier turns phases)."""
    from amk_tune.oracle import compare
    from space.kernel_knobs import KernelKnobs

    ids, ref = reference
    knobs = KernelKnobs(rows_per_warp=2, unroll=2, k_split=2, prefetch=2, lm_rows_per_warp=4,
                        lm_ring=4, ring_prefill=prefill, weights_evict_first=evict_first,
                        bulk_stage=bulk)
    gen = greedy_generate(real.weights, Schedule(steps_per_launch=8, smem_bytes=131072),
                          get_target("h100"), ids, NEW_TOKENS,
                          gpu_runner(real.weights, knobs=knobs))
    verdict = compare(ref, gen.tokens, gen.logits)
    print(f"smollm2-135m-instruct k_split 2 + lm_ring 4 (prefill {prefill}, evict-first "
          f"{evict_first}, bulk {bulk}): {verdict.message}")
    assert verdict.passed, verdict.message

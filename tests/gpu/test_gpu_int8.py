"""int8 weights (W8A16) on the GPU, whole programs: equal to the reference VM under every
kind of schedule and the GEMV kernel knobs (rows per warp, unroll, prefetch: the staged and
the unstaged int8 rows; k_split and the LM ring, plain and prefilled), and random presets
against HF float32 on the dequantised weights.
Each int8 GEMV tile alone against its twin: tests/gpu/test_gpu_instructions.py."""

from __future__ import annotations

import numpy as np
import pytest

from amk_tune.model.presets import preset_spec, random_weights
from amk_tune.model.quantise import to_storage
from amk_tune.targets import get_target
from space.kernel_knobs import KernelKnobs
from space.schedule import Schedule
from tests.conftest import TINY, TINY_UNTIED, tiny_weights
from vm.decode import cpu_runner, greedy_generate
from vm.gpu_runner import gpu_runner

pytestmark = pytest.mark.gpu
H100 = get_target("h100")
PROMPT = [3, 17, 5, 42]
SCHEDULES = {
    "default": Schedule(steps_per_launch=4),
    "split": Schedule(split_kv=3, tiles=40, lm_tiles=9, sm_policy="round_robin", threads=512,
                      steps_per_launch=4),
    "unfused-little-smem": Schedule(fuse_norm=False, fuse_rope=False, fuse_residual=False,
                                    fuse_silu=False, fuse_argmax=False, sm_policy="blocked",
                                    blocks_per_sm=2, threads=128, smem_bytes=1024,
                                    steps_per_launch=4),
    "no-staging": Schedule(smem_bytes=0, threads=1024, steps_per_launch=4),
    "qkv-span": Schedule(qkv_span=True, tiles=7, steps_per_launch=4),  # the halves view's codes
    # the transposed down codes, staged (tiles=7) and from the L2 (no slot)
    "fuse-down": Schedule(fuse_down=True, tiles=7, steps_per_launch=4),
    "fuse-down-unstaged": Schedule(fuse_down=True, tiles=5, smem_bytes=0, steps_per_launch=4),
}
KNOBS = {"plain": KernelKnobs(), "2x2": KernelKnobs(rows_per_warp=2, unroll=2),
         "4x4-prefetch": KernelKnobs(rows_per_warp=4, unroll=4, prefetch=3),
         "ksplit-ring": KernelKnobs(rows_per_warp=2, k_split=2, lm_ring=2),
         "ksplit-ring-prefill": KernelKnobs(rows_per_warp=2, k_split=2, lm_ring=4,
                                            ring_prefill=True),
         "evict-first": KernelKnobs(rows_per_warp=2, unroll=2, weights_evict_first=True),
         "bulk-stage": KernelKnobs(rows_per_warp=2, unroll=2, weights_evict_first=True,
                                   bulk_stage=True)}
GROUPS = {TINY.name: (0, 16, 32), TINY_UNTIED.name: (0, 16)}
# no-staging's 16 KiB slot cannot hold a 1024-thread LM ring (test_study_space: refused)
PAIRS = [(s, k) for s in sorted(SCHEDULES) for k in sorted(KNOBS)
         if not (s == "no-staging" and KNOBS[k].lm_ring)]


@pytest.mark.parametrize(("sched", "knobs"), PAIRS)
@pytest.mark.parametrize("spec", [TINY, TINY_UNTIED], ids=lambda s: s.name)
def test_int8_generation_equals_the_reference_vm(spec, sched, knobs):
    for group in GROUPS[spec.name]:
        w = to_storage(tiny_weights(spec, seed=3), "int8", group)
        s = SCHEDULES[sched]
        ref = greedy_generate(w, s, H100, PROMPT, 9, cpu_runner(w))
        gpu = greedy_generate(w, s, H100, PROMPT, 9, gpu_runner(w, knobs=KNOBS[knobs]))
        assert gpu.tokens == ref.tokens, f"group {group}"
        scale = np.abs(ref.logits).max(axis=1, keepdims=True)
        assert np.all(np.abs(gpu.logits - ref.logits) <= 1e-5 + 2e-5 * scale), f"group {group}"


@pytest.mark.parametrize(("preset", "group"), [("smollm2-360m", 0), ("llama-3.2-1b", 128),
                                               ("tinyllama-1.1b", 64)])
def test_int8_random_presets_pass_the_oracle(preset, group):
    from amk_tune.oracle import compare, hf_reference

    spec = preset_spec(preset)
    weights = random_weights(spec, seed=0, dtype="int8", quant_group=group)
    prompt = [int(t) for t in np.random.default_rng(1).integers(0, spec.vocab, 6)]
    ref = hf_reference(weights, prompt, 16)
    gen = greedy_generate(weights, Schedule(steps_per_launch=8, split_kv=2), H100, prompt, 16,
                          gpu_runner(weights))
    verdict = compare(ref, gen.tokens, gen.logits)
    print(f"{preset} int8 group {group}: {verdict.message}")
    assert verdict.passed, verdict.message

"""Whole programs on the GPU: equal to the reference VM over multi-step launches, the
watchdog turning a bad schedule into an error naming the task and counter, the loader
refusing grids that cannot be co-resident, and the random presets against HF."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from amk_tune.errors import VmDeadlock, VmError
from amk_tune.model.presets import random_weights
from amk_tune.targets import get_target
from space.schedule import Schedule
from tests.conftest import TINY, TINY_UNTIED, tiny_weights
from vm.decode import cpu_runner, greedy_generate
from vm.gpu_runner import GpuMachine, gpu_runner
from vm.lowering import lower
from vm.program import Wait

pytestmark = pytest.mark.gpu
H100 = get_target("h100")
PROMPT = [3, 17, 5, 42]
SCHEDULES = {
    "default": Schedule(),
    "split": Schedule(split_kv=3, tiles=40, lm_tiles=9, sm_policy="round_robin", threads=512),
    "unfused": Schedule(fuse_norm=False, fuse_rope=False, fuse_residual=False, fuse_silu=False,
                        fuse_argmax=False, sm_policy="blocked", blocks_per_sm=2, threads=128,
                        smem_bytes=4096),
}


@pytest.mark.parametrize("steps", [1, 4])
@pytest.mark.parametrize("sched", sorted(SCHEDULES))
@pytest.mark.parametrize("spec", [TINY, TINY_UNTIED], ids=lambda s: s.name)
def test_generation_equals_the_reference_vm(spec, sched, steps):
    w = tiny_weights(spec, seed=3)
    s = SCHEDULES[sched].replace(steps_per_launch=steps)
    ref = greedy_generate(w, s, H100, PROMPT, 9, cpu_runner(w))
    gpu = greedy_generate(w, s, H100, PROMPT, 9, gpu_runner(w))
    assert gpu.tokens == ref.tokens
    scale = np.abs(ref.logits).max(axis=1, keepdims=True)
    assert np.all(np.abs(gpu.logits - ref.logits) <= 1e-5 + 2e-5 * scale)


def _with_token_wait(program, wait):
    q0 = list(program.queues[0])
    q0[0] = dataclasses.replace(q0[0], wait=(wait,))
    return dataclasses.replace(program, queues=(tuple(q0), *program.queues[1:]))


def test_watchdog_names_the_task_and_counter_and_the_gpu_lives_on():
    w = tiny_weights(TINY)
    good = lower(TINY, Schedule(steps_per_launch=2), H100, steps=2)
    m = GpuMachine(w, watchdog_s=0.25)
    # a cycle: the token waits for the LM head, which waits (transitively) for the token
    cyclic = _with_token_wait(good, Wait("lm", good.counters["lm"]))
    t0 = time.perf_counter()
    with pytest.raises(VmDeadlock, match=r"GPU watchdog: task '.+' \(block \d+, step 0\) "
                       r"waited on counter '.+' >= \d+ but it stayed at \d+") as e:
        m.launch(cyclic, [3])
    assert "block 0 task 'token' (step 0) waits lm >= " in str(e.value)
    assert time.perf_counter() - t0 < 10
    # a threshold no step can reach (more than the counter's per-step total)
    greedy = _with_token_wait(good, Wait("tok", 5))
    with pytest.raises(VmDeadlock, match="block 0 task 'token' \\(step 0\\) waits tok >= 5, has 0"):
        m.launch(greedy, [3])
    # the device is fine afterwards: the good program still matches the reference VM
    out = m.launch(good, [3])
    assert out.tokens.tolist() == cpu_runner(w)(good, [3]).tokens.tolist()


def test_a_grid_that_cannot_be_resident_is_refused():
    w = tiny_weights(TINY)
    too_many = lower(TINY, Schedule(threads=1024, blocks_per_sm=3), H100)  # 3072 threads/SM
    with pytest.raises(VmError, match="refusing to launch 396 blocks"):
        GpuMachine(w).launch(too_many, [3])


def test_a_token_outside_the_vocabulary_is_an_error():
    w = tiny_weights(TINY)
    with pytest.raises(VmError, match="outside the vocabulary"):
        GpuMachine(w).launch(lower(TINY, Schedule(), H100), [TINY.vocab])


@pytest.mark.parametrize("preset", ["smollm2-360m", "llama-3.2-1b", "tinyllama-1.1b"])
def test_random_presets_pass_the_oracle(preset):
    from amk_tune.model.presets import preset_spec
    from amk_tune.oracle import compare, hf_reference

    spec = preset_spec(preset)
    weights = random_weights(spec, seed=0)
    prompt = [int(t) for t in np.random.default_rng(1).integers(0, spec.vocab, 6)]
    ref = hf_reference(weights, prompt, 16)
    gen = greedy_generate(weights, Schedule(steps_per_launch=8, split_kv=2), H100, prompt, 16,
                          gpu_runner(weights))
    verdict = compare(ref, gen.tokens, gen.logits)
    print(f"{preset}: {verdict.message}")
    assert verdict.passed, verdict.message

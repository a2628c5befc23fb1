"""Every preset's exact shape (reduced to 2 layers, random weights) passes the oracle
under several schedules and random block interleavings."""

from __future__ import annotations

import gc

import pytest

from amk_tune.model.loaders import load_model
from amk_tune.model.presets import PRESETS
from amk_tune.oracle import compare, hf_model, hf_reference
from amk_tune.targets import get_target
from space.schedule import Schedule
from vm.decode import cpu_runner, greedy_generate

PROMPT = [11, 400, 7, 29]
NEW = 4
SCHEDULES = [
    (Schedule(steps_per_launch=4), None, "h100"),
    (Schedule(split_kv=2, tiles=48, sm_policy="round_robin", fuse_rope=False,
              fuse_argmax=False, steps_per_launch=3), 1, "a100"),
    (Schedule(fuse_norm=False, fuse_residual=False, fuse_silu=False, sm_policy="blocked",
              lm_tiles=17, steps_per_launch=2), 2, "l4"),
]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_shape_passes_the_oracle(preset):
    model = load_model(preset, layers=2, seed=3)
    ref = hf_reference(hf_model(model.weights), PROMPT, NEW)
    for sched, seed, gpu in SCHEDULES:
        gen = greedy_generate(model.weights, sched, get_target(gpu), PROMPT, NEW,
                              cpu_runner(model.weights, seed))
        verdict = compare(ref, gen.tokens, gen.logits)
        assert verdict.passed, f"{preset} {sched}: {verdict.message}"
    del model, ref
    gc.collect()

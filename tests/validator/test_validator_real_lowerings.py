"""Every real lowering is ACCEPTED: every preset at full depth, and a broad sample of the
search space (schedules, steps per launch, positions, GPU targets). A rejection here is a
lowering bug or a validator bug; the ground-truth tests say which."""

from __future__ import annotations

import random

import pytest

from amk_tune.model.presets import PRESETS, preset_spec
from amk_tune.targets import get_target, target_names
from space.schedule import SM_POLICIES, Schedule
from tests.conftest import TINY, TINY_UNTIED
from validator import validate
from validator.mutants import feasible_schedule
from validator.verdict import CO_RESIDENT
from vm.lowering import lower


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_at_full_depth(name):
    rng = random.Random(name)
    target = get_target(rng.choice(target_names()))
    schedule = feasible_schedule(rng, target, target.sms)
    program = lower(preset_spec(name), schedule, target, steps=rng.randint(1, 2),
                    position=rng.choice([0, 37]))
    verdict = validate(program)
    assert verdict.accepted, (target.name, schedule, verdict.describe())


def test_a_broad_sample_of_the_search_space():
    rng = random.Random(7)
    names = sorted(PRESETS)
    for _ in range(120):
        target = get_target(rng.choice(target_names()))
        schedule = feasible_schedule(rng, target, target.sms)
        spec = preset_spec(rng.choice(names), layers=rng.randint(1, 2))
        steps = rng.randint(1, 4)
        program = lower(spec, schedule, target, steps=steps, position=rng.choice([0, 5, 300]))
        verdict = validate(program)
        assert verdict.accepted, (spec.name, target.name, steps, schedule, verdict.describe())


@pytest.mark.parametrize("knobs", [
    {}, {"tiles": 1}, {"tiles": 7}, {"tiles": 300}, {"lm_tiles": 1}, {"lm_tiles": 5},
    *({"sm_policy": p} for p in SM_POLICIES), {"split_kv": 2}, {"split_kv": 5},
    {"fuse_norm": False}, {"fuse_rope": False}, {"fuse_residual": False},
    {"fuse_silu": False}, {"fuse_argmax": False},
    {"fuse_norm": False, "fuse_rope": False, "fuse_residual": False, "fuse_silu": False,
     "fuse_argmax": False, "split_kv": 3},
    {"blocks_per_sm": 2, "threads": 512, "smem_bytes": 98304},
    {"qkv_span": True}, {"qkv_span": True, "tiles": 7, "split_kv": 2},
    {"fuse_down": True}, {"fuse_down": True, "tiles": 300, "split_kv": 2, "qkv_span": True},
    {"fuse_o": True}, {"fuse_o": True, "fuse_down": True, "tiles": 5, "qkv_span": True},
])
@pytest.mark.parametrize("spec", [TINY, TINY_UNTIED], ids=["tiny", "tiny-untied"])
def test_every_knob_over_several_steps(knobs, spec):
    program = lower(spec, Schedule(**knobs), get_target("h100"), steps=3, position=2)
    verdict = validate(program)
    assert verdict.accepted, verdict.describe()


def test_the_study_search_space():
    """Candidates as a study samples them (space.search_space, every knob, 1-8 steps per
    launch, every GPU profile). The space leaves co-residency to the validator: a point
    whose launch fits the GPU is ACCEPTED, one that does not is rejected for that alone."""
    optuna = pytest.importorskip("optuna")
    from space.search_space import suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    names, gpus = sorted(PRESETS), target_names()
    fits = 0
    for i in range(70):
        target = get_target(gpus[i % len(gpus)])
        s = suggest(study.ask(), target).schedule
        program = lower(preset_spec(names[i % len(names)], layers=1 + i % 2), s, target)
        resident = (s.blocks_per_sm <= target.max_blocks_per_sm
                    and s.blocks_per_sm * s.threads <= target.max_threads_per_sm
                    and s.blocks_per_sm * s.smem_bytes <= target.smem_per_sm
                    and s.smem_bytes <= target.smem_per_block)
        verdict = validate(program)
        assert verdict.failed == (set() if resident else {CO_RESIDENT}), (
            target.name, s, verdict.describe())
        fits += resident
    assert 20 < fits < 70

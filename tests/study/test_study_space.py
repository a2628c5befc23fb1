"""The search space: every knob changes the lowered program or the CUDA build; the default
is reachable; conditional knobs appear only under their parent choice; TPE is seeded; a
study opens only its own weight formats."""

from __future__ import annotations

import dataclasses
import hashlib

import optuna
import pytest

from amk_tune.errors import BuildError, ScheduleError
from amk_tune.model.presets import preset_spec
from amk_tune.targets import get_target
from space import search_space as ss
from space.kernel_knobs import (
    K_SPLIT,
    LM_RING,
    PREFETCH,
    RING,
    ROWS_PER_WARP,
    SPIN_SLEEP_NS,
    UNROLL,
    KernelKnobs,
)
from space.schedule import SM_POLICIES, Schedule
from space.weight_format import QUANT_GROUPS, WeightChoices, WeightFormat
from tests.conftest import TINY
from vm import build
from vm.lowering import lower

H100 = get_target("h100")
# TINY with row lengths every quantisation group of the space divides
WIDE = dataclasses.replace(TINY, name="tiny-wide", hidden=128, head_dim=32, intermediate=256)


def _fingerprint(params: dict) -> tuple[str, str]:
    """(program JSON hash, assembled kernel source hash) of a parameter set on WIDE."""
    cand = ss.candidate_of(params, H100)
    fmt = cand.weights
    program = lower(WIDE, cand.schedule, H100, dtype=fmt.dtype, quant_group=fmt.quant_group)
    source = build.assemble(build.config_for(program, WIDE, cand.knobs))
    return (hashlib.sha256(program.to_json().encode()).hexdigest(),
            hashlib.sha256(source.encode()).hexdigest())


def test_default_params_are_the_default_schedule_and_knobs():
    cand = ss.candidate_of(ss.default_params(), H100)
    assert cand.schedule == Schedule() and cand.knobs == KernelKnobs()
    assert cand.weights == WeightFormat("bf16", 0)


# (parameter changes on top of the defaults) for every knob of the space, each value
# that is not the default
VARIANTS = [
    *({"tiles_mode": ss.CUSTOM, "tiles": n} for n in (16, 40, 300)),
    *({"lm_tiles_mode": ss.CUSTOM, "lm_tiles": n} for n in (33, 100, 700)),
    *({"fusion": ss.CUSTOM, **{f: f != off for f in ss.FUSIONS}} for off in ss.FUSIONS),
    *({"sm_policy": p} for p in SM_POLICIES if p != Schedule().sm_policy),
    *({"split_kv": n} for n in ss.SPLIT_KV if n != 1),
    *({"steps_per_launch": n} for n in ss.STEPS_PER_LAUNCH if n != 1),
    *({"blocks_per_sm": n} for n in ss.BLOCKS_PER_SM if n != 1),
    *({"threads": n} for n in ss.THREADS if n != 256),
    *({"smem_bytes": n} for n in ss.SMEM_BYTES if n != 65536),
    *({"rows_per_warp": n} for n in ROWS_PER_WARP if n != 1),
    *({"unroll": n} for n in UNROLL if n != 1),
    *({"spin_sleep_ns": n} for n in SPIN_SLEEP_NS if n != 64),
    *({"prefetch": n} for n in PREFETCH if n != KernelKnobs().prefetch),
    *({"lm_rows_per_warp": n} for n in ROWS_PER_WARP if n != 1),
    *({"lm_unroll": n} for n in UNROLL if n != 1),
    *({"k_split": n} for n in K_SPLIT if n != 1),
    *({"lm_ring": n, "ring_prefill": False} for n in LM_RING if n != 0),
    *({"ring": n, "ring_pairs": False, "ring_prefill": False} for n in RING if n != 0),
    {"ring": 2, "ring_pairs": True, "ring_prefill": False},
    {"lm_ring": 2, "ring_prefill": True},
    {"ring": 2, "ring_pairs": False, "ring_prefill": True},
    {"weights_evict_first": True},
    {"bulk_stage": True},
    {"qkv_span": True},
    {"fuse_down": True},
    {"fuse_down": True, "down_slot": True},
    {"fuse_o": True},
    *({"dtype": "int8", "quant_group": g} for g in QUANT_GROUPS),
]


@pytest.mark.parametrize("change", VARIANTS, ids=lambda c: ",".join(f"{k}={v}" for k, v in
                                                                  c.items() if k != "fusion"))
def test_every_knob_changes_the_program_or_the_build(change):
    base = _fingerprint(ss.default_params())
    other = _fingerprint({**ss.default_params(), **change})
    assert other != base


def test_every_parameter_of_the_space_has_a_variant():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: len(ss.suggest(t, H100).to_dict()), n_trials=60)
    seen = {name for t in study.trials for name in t.params}
    varied = {name for change in VARIANTS for name in change}
    assert seen == varied


def test_kernel_knobs_reach_the_header_and_the_cache_key():
    program = lower(TINY, Schedule(), H100)
    knobs = KernelKnobs(rows_per_warp=4, unroll=2, spin_sleep_ns=0)
    src = build.assemble(build.config_for(program, TINY, knobs))
    for line in ("kRowsPerWarp = 4;", "kUnroll = 2;", "kSpinSleepNs = 0u;",
                 "kMinBlocksPerSm = 1;"):
        assert line in src
    two = lower(TINY, Schedule(blocks_per_sm=2, threads=128), H100)
    assert "kMinBlocksPerSm = 2;" in build.assemble(build.config_for(two, TINY))


def test_kernel_knobs_change_the_compiled_binary(tmp_path, monkeypatch):
    try:
        build.compiler()
    except BuildError as e:
        pytest.skip(str(e))
    monkeypatch.setenv("AMK_CACHE", str(tmp_path))
    program = lower(TINY, Schedule(), H100)
    keys, cubins = set(), set()
    variants = (KernelKnobs(), KernelKnobs(rows_per_warp=2, unroll=2),
                KernelKnobs(spin_sleep_ns=0), KernelKnobs(prefetch=3), KernelKnobs(k_split=2),
                KernelKnobs(lm_ring=4), KernelKnobs(ring=2),
                KernelKnobs(ring=2, ring_pairs=True), KernelKnobs(lm_ring=4, ring_prefill=True),
                KernelKnobs(ring=2, ring_prefill=True),
                KernelKnobs(ring=2, ring_pairs=True, ring_prefill=True),
                KernelKnobs(weights_evict_first=True), KernelKnobs(bulk_stage=True))
    for knobs in variants:
        built = build.build(build.config_for(program, TINY, knobs), "sm_90")
        keys.add(built.key)
        cubins.add(built.cubin.read_bytes())
    assert len(keys) == len(variants) and len(cubins) == len(variants)


@pytest.mark.parametrize(("schedule", "knobs", "message"), [
    (Schedule(threads=128), KernelKnobs(k_split=8),
     r"k_split = 8 does not divide the 4 warps of a 128-thread block"),
    (Schedule(threads=1024, smem_bytes=0), KernelKnobs(lm_ring=2),
     r"lm_ring = 2 needs 32768 B of a prefetch slot .* a slot has 16384 B"),
    (Schedule(smem_bytes=65536), KernelKnobs(lm_ring=8, lm_rows_per_warp=4, prefetch=2),
     r"lm_ring = 8 needs 131072 B .* a slot has 32768 B: lower lm_ring"),
    (Schedule(threads=512, smem_bytes=65536), KernelKnobs(ring=8, rows_per_warp=2),
     r"ring = 8 needs 131072 B .*16 warps x 8 stages x 2 rows .* lower ring or rows_per_warp"),
    (Schedule(smem_bytes=65536), KernelKnobs(ring=8, rows_per_warp=2, ring_pairs=True),
     r"ring = 8 needs 131072 B .*8 warps x 8 stages x 2 rows x 2 \(ring_pairs\) x 512 B"),
])
def test_kernel_knobs_that_do_not_fit_the_launch_are_named(schedule, knobs, message):
    program = lower(TINY, schedule, H100)
    with pytest.raises(ScheduleError, match=message):
        build.config_for(program, TINY, knobs)


@pytest.mark.parametrize(("schedule", "asked", "used"), [
    # a study's ring depth is an upper bound: halved until it fits, else off
    (Schedule(threads=512, smem_bytes=65536), KernelKnobs(ring=8, rows_per_warp=2),
     KernelKnobs(ring=4, rows_per_warp=2)),
    (Schedule(smem_bytes=65536), KernelKnobs(lm_ring=8, lm_rows_per_warp=4, prefetch=2),
     KernelKnobs(lm_ring=2, lm_rows_per_warp=4, prefetch=2)),
    (Schedule(threads=1024, smem_bytes=0),
     KernelKnobs(lm_ring=2, ring=2, ring_pairs=True, ring_prefill=True), KernelKnobs()),
    (Schedule(smem_bytes=196608), KernelKnobs(lm_ring=4, ring=4, ring_pairs=True,
                                              rows_per_warp=2, ring_prefill=True), None),
])
def test_a_study_fits_its_rings_to_the_slot(schedule, asked, used):
    program = lower(TINY, schedule, H100)
    fitted = build.fit_rings(program, TINY, asked)
    assert fitted == (used or asked)  # None: it fits as asked
    build.config_for(program, TINY, fitted)  # fits now
    if used is not None:
        with pytest.raises(ScheduleError, match=r"needs .* B of a prefetch slot"):
            build.config_for(program, TINY, asked)  # a knob file means what it says


def test_conditional_knobs_only_under_their_parent():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(lambda t: len(ss.suggest(t, H100).to_dict()), n_trials=80)
    for t in study.trials:
        assert ("tiles" in t.params) == (t.params["tiles_mode"] == ss.CUSTOM)
        assert ("lm_tiles" in t.params) == (t.params["lm_tiles_mode"] == ss.CUSTOM)
        assert all((f in t.params) == (t.params["fusion"] == ss.CUSTOM) for f in ss.FUSIONS)
        assert ("quant_group" in t.params) == (t.params["dtype"] == "int8")
        assert ("ring_pairs" in t.params) == (t.params["ring"] > 0)
        assert ("ring_prefill" in t.params) == (t.params["ring"] > 0 or t.params["lm_ring"] > 0)
        assert ("qkv_span" in t.params) == (t.params["fusion"] == "all"
                                            or t.params["fuse_rope"])
        on = {f: t.params.get(f, True) for f in ss.FUSIONS}  # fusion "all": every flag on
        assert ("fuse_down" in t.params) == (on["fuse_silu"] and on["fuse_residual"])
        assert ("down_slot" in t.params) == t.params.get("fuse_down", False)
        assert ("fuse_o" in t.params) == (on["fuse_rope"] and on["fuse_residual"]
                                          and t.params["split_kv"] == 1
                                          and t.params["dtype"] == "bf16")


def test_params_of_inverts_suggest():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    study.optimize(lambda t: len(ss.suggest(t, H100).to_dict()), n_trials=80)
    for t in study.trials:
        cand = ss.candidate_of(t.params, H100)
        assert ss.candidate_of(ss.params_of(cand), H100) == cand
        if t.params["fusion"] == "all" or not all(t.params[f] for f in ss.FUSIONS):
            assert ss.params_of(cand) == t.params  # (custom fusion with every flag on is "all")


def test_a_study_opens_only_its_own_weight_formats():
    smol = preset_spec("smollm2-135m")  # row lengths 576 and 1536: groups 128 does not fit
    assert WeightChoices.for_study(smol, "bf16", None) == WeightChoices(("bf16",), (0,))
    searched = WeightChoices.for_study(smol, "int8", None)
    assert searched == WeightChoices(("int8",), (0, 32, 64))
    assert WeightChoices.for_study(smol, "int8", 192).quant_groups == (192,)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    study.optimize(lambda t: len(ss.suggest(t, H100, searched).to_dict()), n_trials=30)
    formats = {ss.candidate_of(t.params, H100).weights for t in study.trials}
    assert formats == {WeightFormat("int8", g) for g in (0, 32, 64)}
    first = ss.candidate_of(ss.default_params(searched), H100)
    assert first.schedule == Schedule() and first.weights == WeightFormat("int8", 0)


@pytest.mark.parametrize(("dtype", "group", "message"), [
    ("int8", 128, r"--quant-group 128 does not fit 'smollm2-135m'; choose one of \[0, 16, 32, "
                  r"48, 64, 96, 192\]"),
    ("bf16", 64, r"quant_group = 64 for bf16 weights"),
    ("fp8", None, r"weight dtype 'fp8'"),
    ("int8", -16, r"quant_group = -16"),
])
def test_bad_weight_formats_are_named(dtype, group, message):
    with pytest.raises(ScheduleError, match=message):
        WeightChoices.for_study(preset_spec("smollm2-135m"), dtype, group)


def test_seeded_tpe_repeats_itself():
    def run(seed: int) -> list[dict]:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=3, multivariate=True, group=True))
        study.optimize(lambda t: float(ss.suggest(t, H100).schedule.threads), n_trials=8)
        return [t.params for t in study.trials]

    assert run(5) == run(5)
    assert run(5) != run(6)


@pytest.mark.parametrize(("knobs", "message"), [
    ({"rows_per_warp": 3}, r"rows_per_warp = 3: choose one of \(1, 2, 4\)"),
    ({"unroll": True}, r"unroll = True"),
    ({"spin_sleep_ns": -1}, r"spin_sleep_ns = -1"),
    ({"vector": 8}, r"unknown kernel knob\(s\) \['vector'\]"),
    ({"k_split": 3}, r"k_split = 3: choose one of \(1, 2, 4, 8\)"),
    ({"ring_pairs": 1, "ring": 2}, r"ring_pairs = 1: true or false"),
    ({"ring_pairs": True}, r"ring_pairs = true needs ring > 0"),
    ({"ring_prefill": 1, "ring": 2}, r"ring_prefill = 1: true or false"),
    ({"ring_prefill": True},
     r"ring_prefill = true needs ring > 0 or lm_ring > 0: .*set ring_prefill = false"),
])
def test_bad_kernel_knobs_are_named(knobs, message):
    with pytest.raises(ScheduleError, match=message):
        KernelKnobs.from_dict(knobs)


def test_ring_prefill_takes_either_ring_and_reaches_the_header():
    program = lower(TINY, Schedule(), H100)
    for knobs in (KernelKnobs(ring=2, ring_prefill=True),
                  KernelKnobs(lm_ring=2, ring_prefill=True)):
        assert "kRingPrefill = true;" in build.assemble(build.config_for(program, TINY, knobs))
    assert "kRingPrefill = false;" in build.assemble(build.config_for(program, TINY))


def test_bulk_stage_is_asked_only_where_the_gpu_has_bulk_copies():
    """An A100 (sm_80) has no TMA bulk copies: no trial there asks ``bulk_stage`` or gets it,
    and its enqueued parameters leave it out; on an H100 both values come up."""
    for target, expect in ((get_target("a100"), {False}), (H100, {False, True})):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        study.optimize(lambda t, target=target: float(ss.suggest(t, target).knobs.bulk_stage),
                       n_trials=20)
        assert {bool(t.value) for t in study.trials} == expect
        assert ("bulk_stage" in study.trials[0].params) == (target is H100)
        # params_of, suggest's inverse, names it exactly where suggest asks it
        assert ("bulk_stage" in ss.default_params(target=target)) == (target is H100)

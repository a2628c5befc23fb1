"""The --simulate cost model: never under the bandwidth floor, and it responds to the knobs
(so a simulated study has something to optimise)."""

from __future__ import annotations

import optuna
import pytest

from amk_tune.model.presets import preset_spec
from amk_tune.study.cost_model import predict
from amk_tune.targets import get_target, target_names
from space.kernel_knobs import KernelKnobs
from space.schedule import Schedule
from space.search_space import suggest
from vm.analysis import program_stats
from vm.lowering import lower


def _stats(preset: str, schedule: Schedule, target) -> dict[str, int]:
    st = program_stats(lower(preset_spec(preset, 2), schedule, target))
    return {"weight_bytes": st.weight_bytes, "critical_stages": st.critical_stages,
            "busiest_block_tasks": st.busiest_block_tasks}


@pytest.mark.parametrize("target", target_names())
def test_never_under_the_bandwidth_floor(target):
    t = get_target(target)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    for _ in range(40):
        trial = study.ask()
        cand = suggest(trial, t)
        for stats in ({"weight_bytes": 10**9, "critical_stages": 0, "busiest_block_tasks": 0},
                      {"weight_bytes": 270_000_000, "critical_stages": 153,
                       "busiest_block_tasks": 200}):
            cost = predict(stats, cand.schedule, cand.knobs, t)
            assert cost.total_us >= t.floor_us(stats["weight_bytes"])
            assert min(cost.to_dict().values()) >= 0
        study.tell(trial, 0.0)


def test_knobs_move_the_estimate():
    t = get_target("h100")
    base = Schedule()
    stats = _stats("smollm2-135m", base, t)
    ref = predict(stats, base, KernelKnobs(), t).total_us
    faster = [
        predict(stats, base.replace(threads=1024), KernelKnobs(), t),
        predict(stats, base, KernelKnobs(rows_per_warp=4), t),
        predict(stats, base, KernelKnobs(unroll=4), t),
        predict(stats, base, KernelKnobs(spin_sleep_ns=0), t),
        predict(stats, base.replace(steps_per_launch=8), KernelKnobs(), t),
    ]
    assert all(c.total_us < ref for c in faster)
    unfused = base.replace(fuse_norm=False, fuse_silu=False)
    slower = predict(_stats("smollm2-135m", unfused, t), unfused, KernelKnobs(), t)
    assert slower.total_us > ref

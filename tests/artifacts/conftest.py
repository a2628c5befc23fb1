"""A real lowering of a tiny model, made into trial bundles and stored in a SQLite study."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import optuna
import pytest

from amk_tune.artifacts import store_trial_bundle, weights_sha256
from amk_tune.model.loaders import LoadedModel, load_model
from amk_tune.targets import get_target
from space.kernel_knobs import KernelKnobs
from space.schedule import Schedule
from vm.lowering import lower

MODEL = "smollm2-135m"
LAYERS = 2


@pytest.fixture(scope="session")
def model() -> LoadedModel:
    return load_model(MODEL, layers=LAYERS)


def _make_bundle(model: LoadedModel, schedule: Schedule, *, latency_us: float = 100.0,
                position: int = 3, binary: bytes | None = None, arch: str | None = None,
                weights_hash: str | None = None) -> dict[str, Any]:
    """What the study's objective hands over for a trial (simulated unless ``binary``)."""
    program = lower(model.spec, schedule, get_target("h100"), position=position,
                    max_seq=position + schedule.steps_per_launch + 8)
    return {
        "program": program.to_dict(),
        "schedule": schedule.to_dict(),
        "kernel_knobs": KernelKnobs().to_dict(),
        "cuda_source": "// kernel source\n" if binary else None,
        "binary": binary,
        "arch": arch,
        "model": {"source": MODEL, "spec": dataclasses.asdict(model.spec),
                  "weights_sha256": weights_hash or weights_sha256(model.weights), "seed": 0},
        "gpu": "h100",
        "measured": binary is not None,
        "oracle": {"passed": True, "message": "PASS (test)"},
        "latency_us": latency_us,
        "versions": {"amk-tune": "test", "optuna": optuna.__version__},
    }


def _make_study(model: LoadedModel, tmp_path: Path, name: str = "s",
               latencies: tuple[float, ...] = (300.0, 120.0, 200.0), **kw) -> str:
    """A SQLite study with one stored artifact per trial; trial i uses split_kv = i + 1.
    Returns the storage URL (artifacts go to tmp_path/artifacts)."""
    url = f"sqlite:///{tmp_path / 'amk.db'}"
    study = optuna.create_study(study_name=name, storage=url)

    def objective(trial: optuna.Trial) -> float:
        latency = latencies[trial.number]
        schedule = Schedule(split_kv=trial.number + 1, steps_per_launch=2)
        store_trial_bundle(study, trial, _make_bundle(model, schedule, latency_us=latency, **kw))
        return latency

    study.optimize(objective, n_trials=len(latencies))
    return url


@pytest.fixture
def make_bundle(model):
    """``make_bundle(schedule, **kw)``: a trial bundle of the tiny model."""
    return functools.partial(_make_bundle, model)


@pytest.fixture
def make_study(model, tmp_path):
    """``make_study(name="s", latencies=(...), **bundle_kw)``: a stored study's URL."""
    return functools.partial(_make_study, model, tmp_path)


"""benchmarks/configs: every candidate the speed table would time parses, lowers at its
model's shapes and builds a kernel config (its rings fit their slots), on the CPU, before
any device time is spent on it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from amk_tune.model.loaders import inspect_model
from amk_tune.targets import get_target
from vm.build import config_for
from vm.lowering import lower

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("speed_table",
                                               ROOT / "benchmarks" / "speed_table.py")
speed_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(speed_table)
FILES = sorted((ROOT / "benchmarks" / "configs").glob("*.json"))


def _model_and_dtype(path: Path) -> tuple[str, str]:
    """``<model>.json`` (bf16) or ``<model>.int8.json``; model names hold dots too."""
    stem = path.name.removesuffix(".json")
    return (stem.removesuffix(".int8"), "int8") if stem.endswith(".int8") else (stem, "bf16")


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_candidate_lowers_and_fits_its_kernel(path):
    model, dtype = _model_and_dtype(path)
    assert speed_table.config_path(model, dtype) == path
    spec, target = inspect_model(model), get_target("h200")
    found = speed_table.candidates(model, dtype)
    assert found
    for schedule, knobs in found:
        steps = speed_table.STEPS
        program = lower(spec, schedule.replace(steps_per_launch=steps), target, steps=steps,
                        dtype=dtype)
        config_for(program, spec, knobs)  # raises ScheduleError if a ring does not fit


def test_a_dtype_without_its_own_file_takes_the_models():
    assert speed_table.config_path("llama-3.2-3b", "int8").name == "llama-3.2-3b.json"
    assert speed_table.config_path("llama-3.2-1b", "int8").name == "llama-3.2-1b.int8.json"
    assert speed_table.config_path("llama-3.2-1b").name == "llama-3.2-1b.json"

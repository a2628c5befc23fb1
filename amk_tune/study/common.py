"""What both worker backends share: loading the study's model, reading a trial request."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
from dataclasses import dataclass
from typing import Any

from amk_tune.artifacts.manifest import weights_sha256
from amk_tune.bench import prompt_ids
from amk_tune.model.loaders import load_model
from amk_tune.model.presets import with_layers
from amk_tune.model.weights import ModelWeights
from amk_tune.study.worker import WorkerSpec
from space.kernel_knobs import KernelKnobs
from space.schedule import Schedule


@dataclass(frozen=True)
class StudyModel:
    """The study's weights as a worker holds them."""

    weights: ModelWeights
    sha256: str
    prompt: list[int]
    source: str  # one human line: where the weights came from


def load_study_model(spec: WorkerSpec) -> StudyModel:
    model = load_model(spec.model, dtype=spec.dtype, layers=spec.layers, seed=spec.weights_seed)
    prompt = prompt_ids(model.weights, model.tokenizer, spec.prompt_len)
    return StudyModel(model.weights, weights_sha256(model.weights), prompt, model.source)


def first_layers(weights: ModelWeights, layers: int) -> ModelWeights:
    """The same weights cut to their first ``layers`` layers (shared arrays, no copy)."""
    spec = with_layers(weights.spec, layers)
    keep = {name: a for name, a in weights.tensors.items()
            if not name.startswith("L") or int(name[1:].split(".")[0]) < layers}
    return ModelWeights(spec, weights.dtype, keep)


def trial_knobs(request: dict[str, Any]) -> tuple[Schedule, KernelKnobs]:
    return Schedule.from_dict(request["schedule"]), KernelKnobs.from_dict(request["kernel_knobs"])


def versions(**extra: str) -> dict[str, str]:
    """Versions of what produced a result (stored with every trial's artifact)."""
    out = {"python": platform.python_version()}
    for dist in ("amk-tune", "optuna", "torch", "transformers", "numpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return {**out, **extra}


def spec_dict(weights: ModelWeights) -> dict[str, Any]:
    return dataclasses.asdict(weights.spec)

"""What both worker backends share: loading the study's model, reading a trial request.

A worker loads the study's weights once in bf16 and makes each trial's weight format from
them on first use (int8 with the trial's quantisation group: amk_tune/model/quantise.py),
keeping every format it made: a study tries a handful at most."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
from dataclasses import dataclass
from typing import Any

import numpy as np

from amk_tune.artifacts.manifest import weights_sha256
from amk_tune.bench import prompt_ids
from amk_tune.model.loaders import load_model
from amk_tune.model.presets import with_layers
from amk_tune.model.quantise import to_storage
from amk_tune.model.weights import ModelWeights
from amk_tune.study.worker import WorkerSpec
from space.kernel_knobs import KernelKnobs
from space.schedule import Schedule
from space.weight_format import WeightFormat


@dataclass(frozen=True)
class FormatWeights:
    """The weights of one format, with their identity (``weights_sha256``)."""

    weights: ModelWeights
    sha256: str


@dataclass
class StudyModel:
    """The study's weights as a worker holds them: bf16 as loaded, and each format made."""

    bf16: ModelWeights
    prompt: list[int]
    source: str  # one human line: where the weights came from
    made: dict[WeightFormat, FormatWeights] = dataclasses.field(default_factory=dict)

    def weights(self, fmt: WeightFormat) -> FormatWeights:
        """The weights in format ``fmt``, made from the bf16 ones the first time."""
        if fmt not in self.made:
            w = to_storage(self.bf16, fmt.dtype, fmt.quant_group)
            self.made[fmt] = FormatWeights(w, weights_sha256(w))
        return self.made[fmt]


def load_study_model(spec: WorkerSpec) -> StudyModel:
    model = load_model(spec.model, layers=spec.layers, seed=spec.weights_seed)
    prompt = prompt_ids(model.weights, model.tokenizer, spec.prompt_len)
    return StudyModel(model.weights, prompt, model.source)


def worker_format(spec: WorkerSpec) -> WeightFormat:
    """The format a worker prepares at start (the study's default trial's)."""
    return WeightFormat(spec.dtype, spec.quant_group)


def first_layers(weights: ModelWeights, layers: int) -> ModelWeights:
    """The same weights cut to their first ``layers`` layers (shared arrays, no copy)."""
    def keep(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: a for name, a in arrays.items()
                if not name.startswith("L") or int(name[1:].split(".")[0]) < layers}

    return dataclasses.replace(weights, spec=with_layers(weights.spec, layers),
                               tensors=keep(weights.tensors), codes=keep(weights.codes),
                               scales=keep(weights.scales))


def trial_knobs(request: dict[str, Any]) -> tuple[Schedule, KernelKnobs]:
    return Schedule.from_dict(request["schedule"]), KernelKnobs.from_dict(request["kernel_knobs"])


def trial_format(request: dict[str, Any], default: WeightFormat) -> WeightFormat:
    """The weight format a trial asks for (``default`` when it names none)."""
    return WeightFormat.from_dict(request["weights"]) if "weights" in request else default


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

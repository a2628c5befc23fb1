"""The weight-format knobs of the search space: storage dtype and int8 quantisation group.

Unlike the schedule and kernel knobs these change the numbers, not only the program: an
int8 trial runs on weights quantised with its own group (amk_tune/model/quantise.py), and
its oracle is HF float32 on exactly those dequantised weights. ``quant_group`` is asked for
only when ``dtype`` is int8.

A study searches one storage dtype (one study per model, GPU and dtype: DESIGN.md), because
int8 trades quality for speed and the oracle cannot judge quality (BENCHMARKS.md reports it
separately). ``WeightChoices.for_study`` is the part of the space a study opens: its dtype,
and for int8 either the ``--quant-group`` it was given or every group of ``QUANT_GROUPS``
that fits the model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import optuna

from amk_tune.errors import ScheduleError
from amk_tune.model.quantise import allowed_groups
from amk_tune.model.spec import ModelSpec
from amk_tune.model.weights import STORAGE_DTYPES

DTYPES = STORAGE_DTYPES
QUANT_GROUPS = (0, 32, 64, 128)  # input columns per scale; 0 = one scale per output channel


@dataclass(frozen=True)
class WeightFormat:
    """How a trial's weights are stored: ``dtype``, and for int8 its ``quant_group``."""

    dtype: str = "bf16"
    quant_group: int = 0

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ScheduleError(f"weight dtype {self.dtype!r}: choose one of {DTYPES}")
        g = self.quant_group
        if isinstance(g, bool) or not isinstance(g, int) or g < 0:
            raise ScheduleError(f"quant_group = {g!r}: 0 (one scale per output channel) or a "
                                "positive multiple of 16")
        if self.dtype != "int8" and g:
            raise ScheduleError(f"quant_group = {g!r} for {self.dtype} weights: a group only "
                                "applies to int8 (use dtype int8, or leave the group out)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: Any) -> WeightFormat:
        if not isinstance(d, dict):
            raise ScheduleError(f"a weight format is a JSON object, got {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(WeightFormat)})
        if unknown:
            raise ScheduleError(f"unknown weight format field(s) {unknown}; known: "
                                "['dtype', 'quant_group']")
        return WeightFormat(**d)


@dataclass(frozen=True)
class WeightChoices:
    """The weight formats a search may pick from (default: the whole space)."""

    dtypes: tuple[str, ...] = DTYPES
    quant_groups: tuple[int, ...] = QUANT_GROUPS

    @staticmethod
    def for_study(spec: ModelSpec, dtype: str, quant_group: int | None) -> WeightChoices:
        """A study's choices: its ``dtype``; for int8 the fixed ``quant_group``, or (None)
        every group of QUANT_GROUPS that fits ``spec``."""
        WeightFormat(dtype, quant_group or 0)  # refuses a bad dtype or group early
        if dtype != "int8":
            return WeightChoices((dtype,), (0,))
        fits = allowed_groups(spec)
        if quant_group is not None:
            if quant_group not in fits:
                raise ScheduleError(f"--quant-group {quant_group} does not fit {spec.name!r}; "
                                    f"choose one of {list(fits)}")
            return WeightChoices(("int8",), (quant_group,))
        return WeightChoices(("int8",), tuple(g for g in QUANT_GROUPS if g in fits))

    def suggest(self, trial: optuna.Trial) -> WeightFormat:
        dtype = trial.suggest_categorical("dtype", self.dtypes)
        if dtype != "int8":
            return WeightFormat(dtype)
        return WeightFormat(dtype, trial.suggest_categorical("quant_group", self.quant_groups))

    def first(self) -> WeightFormat:
        """The default format of these choices (bf16 in the whole space)."""
        dtype = self.dtypes[0]
        return WeightFormat(dtype, self.quant_groups[0] if dtype == "int8" else 0)

    def default_params(self) -> dict[str, Any]:
        """The trial parameters of ``first()``."""
        f = self.first()
        return {"dtype": f.dtype, **({"quant_group": f.quant_group} if f.dtype == "int8" else {})}


WHOLE_SPACE = WeightChoices()  # every dtype and group: the default of the search space
BF16 = WeightFormat()

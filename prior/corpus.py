"""The corpus of trials the prior learns from: one CSV row per trial.

A row says what was tried (every knob, and the weight format: ``dtype`` and int8
``quant_group``), on what (the model's shape, the GPU profile) and what came of it:
``state`` is ``complete`` (feasible, timed), ``infeasible`` (timed but the oracle failed),
``pruned`` (rejected by the validator) or ``fail``, with the ``reason``; ``us_per_token``
and ``floor_us`` where the trial was timed; ``measurement`` is ``measured`` or
``simulated``. The committed corpus (``studies/corpus.csv``) holds measured trials;
``add_study`` refuses a simulated study unless asked, and never adds a (study, trial) pair
twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from amk_tune.errors import StudyError
from amk_tune.model.spec import ModelSpec
from amk_tune.targets import Target, get_target
from space.kernel_knobs import KernelKnobs
from space.schedule import Schedule
from space.search_space import LATER_KNOBS, Candidate, candidate_of
from space.weight_format import WeightFormat

CORPUS_PATH = Path(__file__).resolve().parents[1] / "studies" / "corpus.csv"
MODEL_FIELDS = ("hidden", "layers", "heads", "kv_heads", "head_dim", "intermediate", "vocab",
                "tie_embeddings")
GPU_FIELDS = ("sms", "measured_gbps", "smem_per_sm")
KNOB_FIELDS = (*(f for f in Schedule.__dataclass_fields__),
               *(f for f in KernelKnobs.__dataclass_fields__))
COLUMNS = ("study", "trial", "model", *MODEL_FIELDS, "gpu", *GPU_FIELDS, "dtype",
           *KNOB_FIELDS, "quant_group", "state", "reason", "us_per_token", "floor_us",
           "measurement", "date")
# columns a corpus written before them lacks, and what its rows mean there (bf16: no group;
# kernels before k_split and the rings: one warp per row, every tile through registers)
LATER_COLUMNS = {"quant_group": 0, **LATER_KNOBS}
STATES = ("complete", "infeasible", "pruned", "fail")


@dataclass(frozen=True)
class AddResult:
    """What ``add_study`` did: rows added, rows already there (same study and trial)."""

    added: int
    skipped: int
    simulated: bool
    path: Path


def context_fields(spec: ModelSpec, target: Target, dtype: str) -> dict[str, Any]:
    """The model, GPU and dtype columns of a row."""
    return {"model": spec.name, **{f: getattr(spec, f) for f in MODEL_FIELDS},
            "gpu": target.name, **{f: getattr(target, f) for f in GPU_FIELDS}, "dtype": dtype}


def knob_fields(cand: Candidate) -> dict[str, Any]:
    """The knob columns of a row: every Schedule and KernelKnobs field, the weight format."""
    return {**cand.schedule.to_dict(), **cand.knobs.to_dict(), **cand.weights.to_dict()}


def _plain(value: Any) -> Any:
    """A CSV cell as the Python value a knob holds: NaN -> None (no explicit tile count),
    numpy scalars -> int / bool (130.0 -> 130: a column with NaN in it is float)."""
    if pd.isna(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return int(value)
    return value


def candidate_of_row(row: pd.Series) -> Candidate:
    """The candidate a corpus row stands for: the inverse of ``knob_fields``."""
    return Candidate(
        Schedule.from_dict({f: _plain(row[f]) for f in Schedule.__dataclass_fields__}),
        KernelKnobs.from_dict({f: _plain(row[f]) for f in KernelKnobs.__dataclass_fields__}),
        WeightFormat(str(row["dtype"]), _plain(row["quant_group"]) or 0))


def _state(t: FrozenTrial) -> tuple[str, str]:
    """(state, reason) of a finished trial."""
    a = t.user_attrs
    if t.state == TrialState.PRUNED:
        found = a.get("reject") or []
        return "pruned", "; ".join(f"{v['property']}: {v['message']}" for v in found[:2])
    if t.state == TrialState.FAIL:
        return "fail", str(a.get("fail_reason", "unknown"))
    if a.get("feasible") is True:
        return "complete", ""
    return "infeasible", str(a.get("oracle", "oracle failed"))


def _candidate(t: FrozenTrial, target: Target) -> Candidate:
    a = t.user_attrs
    if "schedule" in a and "kernel_knobs" in a:
        return Candidate(Schedule.from_dict(a["schedule"]),
                         KernelKnobs.from_dict(a["kernel_knobs"]),
                         WeightFormat.from_dict(a.get("weights", {})))
    return candidate_of(t.params, target)


def study_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per finished trial of an amk-tune study (running and waiting ones are left)."""
    from amk_tune.model.loaders import inspect_model
    from amk_tune.model.presets import with_layers

    attrs = study.user_attrs
    missing = [k for k in ("model", "layers", "gpu", "dtype", "simulated") if k not in attrs]
    if missing:
        raise StudyError(f"study {study.study_name!r} lacks the user attrs {missing}: it was not "
                         "made by `amk-tune study`")
    spec = with_layers(inspect_model(attrs["model"]), attrs["layers"])
    target = get_target(attrs["gpu"])
    context = context_fields(spec, target, attrs["dtype"])
    rows = []
    for t in study.get_trials(deepcopy=False,
                              states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)):
        state, reason = _state(t)
        a = t.user_attrs
        rows.append({
            "study": study.study_name, "trial": t.number, **context,
            **knob_fields(_candidate(t, target)), "state": state, "reason": reason,
            "us_per_token": a.get("us_per_token"), "floor_us": a.get("floor_us"),
            "measurement": a.get("measurement",
                                 "simulated" if attrs["simulated"] else "measured"),
            "date": t.datetime_start.date().isoformat() if t.datetime_start else "",
        })
    return rows


def read_corpus(path: str | Path = CORPUS_PATH) -> pd.DataFrame:
    """The corpus as a DataFrame with the columns of ``COLUMNS`` (empty if no file)."""
    p = Path(path)
    if not p.exists():
        return pd.DataFrame(columns=list(COLUMNS))
    df = pd.read_csv(p)
    for column, value in LATER_COLUMNS.items():
        if column not in df.columns:
            df[column] = value
    missing = sorted(set(COLUMNS) - set(df.columns))
    if missing:
        raise StudyError(f"corpus {str(p)!r} lacks the columns {missing}: it was written by "
                         "another version; rebuild it with `amk-tune corpus add`")
    return df


def _same_result(a: pd.DataFrame, b: pd.DataFrame) -> pd.Series:
    """Row by row, whether two frames (same index) say the same of a trial: its state and
    its latency (NaN for an untimed one)."""
    lat_a, lat_b = a["us_per_token"].astype(float), b["us_per_token"].astype(float)
    same_lat = (lat_a.isna() & lat_b.isna()) | ((lat_a - lat_b).abs() <= 1e-6 * lat_b.abs())
    return (a["state"].astype(str) == b["state"].astype(str)) & same_lat


def add_study(storage: str, name: str, path: str | Path = CORPUS_PATH, *,
              allow_simulated: bool = False, label: str | None = None) -> AddResult:
    """Append study ``name``'s finished trials to the corpus at ``path``, under ``label``
    (default: the study's name); rows whose (study, trial) are there already are skipped.
    If such a row says something else of its trial, the corpus holds another study of the
    same name (another storage, another session): refused, pass a ``label``. A simulated
    study is refused unless ``allow_simulated`` (its rows then say ``measurement =
    simulated``)."""
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise StudyError(f"no study {name!r} in {storage!r}; it holds {names}") from None
    simulated = bool(study.user_attrs.get("simulated"))
    if simulated and not allow_simulated:
        raise StudyError(f"study {name!r} is simulated (analytic cost model, not a measurement): "
                         "the corpus holds measured trials; pass --allow-simulated to add it "
                         "anyway (its rows are flagged simulated)")
    label = label or name
    new = pd.DataFrame(study_rows(study), columns=list(COLUMNS)).assign(study=label)
    old = read_corpus(path)
    key = ["study", "trial"]
    both = new.astype({"trial": int}).merge(old.astype({"study": str, "trial": int}), on=key,
                                            how="inner", suffixes=("", "_old"))
    if len(both):
        theirs = both[["state_old", "us_per_token_old"]].set_axis(["state", "us_per_token"],
                                                                  axis=1)
        if not _same_result(both, theirs).all():
            raise StudyError(f"the corpus {str(path)!r} already holds a study {label!r} with other "
                             f"results for the same trial numbers (another run under the same "
                             f"name): add this one under a name of its own with --as NAME")
    have = set(zip(old["study"].astype(str), old["trial"].astype(int), strict=True))
    fresh = new[[(s, int(n)) not in have for s, n in zip(new["study"], new["trial"], strict=True)]]
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    out = fresh if old.empty else pd.concat([old, fresh], ignore_index=True)
    out = out.astype({"tiles": "Int64", "lm_tiles": "Int64"})  # 130, not 130.0
    out.to_csv(p, index=False)
    return AddResult(len(fresh), len(new) - len(fresh), simulated, p)

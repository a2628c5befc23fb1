"""A study's report: a CSV of every trial and a PNG of its optimisation history.

The PNG plots us/token per completed trial (infeasible ones greyed), the best-so-far line of
the feasible ones, and horizontal lines for the baselines and the bandwidth floor the study
recorded (see ``reference_lines``). A simulated study says "simulated" in the title.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from amk_tune.artifacts.store import feasible


@dataclass(frozen=True)
class Report:
    csv: Path
    png: Path
    title: str
    trials: int
    best_us: float | None


def safe_name(text: str) -> str:
    """``text`` as a file name stem (study names may hold anything)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "study"


def _cell(value: Any) -> Any:
    """A CSV cell: scalars as they are, lists and dicts as JSON."""
    return json.dumps(value, sort_keys=True) if isinstance(value, list | dict | tuple) else value


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, us_per_token, duration_s, feasible, every knob
    (``param.<name>``) and every user attr (``attr.<name>``: reject/fail reasons, ...)."""
    trials = study.get_trials(deepcopy=False)
    params = sorted({k for t in trials for k in t.params})
    attrs = sorted({k for t in trials for k in t.user_attrs})
    rows = []
    for t in trials:
        done = t.state == TrialState.COMPLETE
        rows.append({
            "number": t.number,
            "state": t.state.name,
            "us_per_token": t.values[0] if done and t.values else None,
            "duration_s": t.duration.total_seconds() if t.duration else None,
            "feasible": feasible(t) if done else None,
            **{f"param.{k}": _cell(t.params.get(k)) for k in params},
            **{f"attr.{k}": _cell(t.user_attrs.get(k)) for k in attrs},
        })
    columns = ["number", "state", "us_per_token", "duration_s", "feasible",
               *(f"param.{k}" for k in params), *(f"attr.{k}" for k in attrs)]
    return pd.DataFrame(rows, columns=columns)


def is_simulated(study: optuna.Study) -> bool:
    """True when the study says so, or any trial's latency was simulated."""
    if isinstance(study.user_attrs.get("simulated"), bool):
        return study.user_attrs["simulated"]
    return any(t.user_attrs.get("measurement") == "simulated"
               for t in study.get_trials(deepcopy=False))


def _us(value: Any) -> float | None:
    """A finite us/token from a number or a timing dict (``median_us``)."""
    if isinstance(value, dict):
        value = value.get("median_us")
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def reference_lines(study: optuna.Study) -> list[tuple[str, float]]:
    """(label, us/token) of every baseline and of the bandwidth floor: from the study's user
    attrs ``baselines`` and ``floor_us``, else from its trials' ``baseline``/``baseline_us``
    and ``floor_us``."""
    attrs = study.user_attrs
    trials = [t.user_attrs for t in study.get_trials(deepcopy=False)]
    baselines = attrs.get("baselines") if isinstance(attrs.get("baselines"), dict) else {
        a["baseline"]: a.get("baseline_us") for a in trials if isinstance(a.get("baseline"), str)}
    lines = [(str(name), us) for name, v in sorted(baselines.items())
             if (us := _us(v)) is not None]
    floors = [us for us in (_us(attrs.get("floor_us")), *(_us(a.get("floor_us")) for a in trials))
              if us is not None]
    if floors:
        lines.append(("bandwidth floor", floors[0]))
    return lines


def title_of(study: optuna.Study) -> str:
    tag = " (simulated)" if is_simulated(study) else ""
    return f"{study.study_name}: optimisation history{tag}"


def plot_history(study: optuna.Study, frame: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = frame[frame["state"] == "COMPLETE"].dropna(subset=["us_per_token"])
    ok = done[done["feasible"].astype(bool)]
    bad = done[~done["feasible"].astype(bool)]
    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    ax.scatter(ok["number"], ok["us_per_token"], s=18, color="tab:blue", label="trial")
    if len(bad):
        ax.scatter(bad["number"], bad["us_per_token"], s=18, marker="x", color="0.6",
                   label="infeasible")
    if len(ok):
        ax.step(ok["number"], ok["us_per_token"].cummin(), where="post", color="tab:orange",
                label="best so far")
    colors = iter(["tab:green", "tab:purple", "tab:brown", "tab:olive", "tab:cyan"])
    for label, us in reference_lines(study):
        floor = label == "bandwidth floor"
        ax.axhline(us, linestyle="--" if floor else ":", linewidth=1.3,
                   color="tab:red" if floor else next(colors, "0.3"),
                   label=f"{label} ({us:.1f} us)")
    ax.set_title(title_of(study))
    ax.set_xlabel("trial")
    ax.set_ylabel("us/token" + (" (simulated)" if is_simulated(study) else ""))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(study: optuna.Study, out: Path) -> Report:
    """Write ``<study>_trials.csv`` and ``<study>_history.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    stem = safe_name(study.study_name)
    frame = trials_frame(study)
    csv, png = out / f"{stem}_trials.csv", out / f"{stem}_history.png"
    frame.to_csv(csv, index=False)
    plot_history(study, frame, png)
    feasible_done = frame[(frame["state"] == "COMPLETE") & frame["feasible"].astype(bool)]
    best = feasible_done["us_per_token"].min() if len(feasible_done) else None
    return Report(csv, png, title_of(study), len(frame), None if best is None else float(best))

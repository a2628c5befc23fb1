"""The closing summary: best trial vs the first (the default schedule) vs the baselines vs
the bandwidth floor, as a Markdown table (it goes into BENCHMARKS.md as printed).

The baselines are the ones the worker timed in this run, in its own process, on the same
weights. A simulated study shows no baseline (nothing was measured) and says "simulated"
in its title and on every latency row.
"""

from __future__ import annotations

import datetime
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from amk_tune.study.progress import best_feasible, counts, feasible
from space.kernel_knobs import KernelKnobs
from space.schedule import Schedule
from space.weight_format import BF16


def changed_knobs(t: FrozenTrial) -> str:
    """The knobs of ``t`` that differ from the defaults (``default`` when none)."""
    defaults = {**Schedule().to_dict(), **KernelKnobs().to_dict(), **BF16.to_dict()}
    knobs = {**t.user_attrs.get("schedule", {}), **t.user_attrs.get("kernel_knobs", {}),
             **t.user_attrs.get("weights", {})}
    diff = [f"{k}={v}" for k, v in knobs.items() if defaults.get(k) != v]
    return ", ".join(diff) or "default"


def _trial_row(label: str, t: FrozenTrial, first_us: float | None, kind: str) -> str:
    a = t.user_attrs
    spread = a.get("spread_us")
    spread_text = f"{spread[0]:.1f}-{spread[1]:.1f}" if spread else "n/a"
    ratio = f"{first_us / t.value:.2f}x" if first_us else "-"
    oracle = "PASS" if a.get("oracle_passed") else "FAIL"
    return (f"| {label} (#{t.number}) | {t.value:.1f} ({kind}) | {spread_text} | {ratio} | "
            f"{a.get('pct_of_floor', 0):.1f}% | oracle {oracle}, "
            f"max abs dlogit {a.get('oracle_max_abs_err', float('nan')):.1e}; "
            f"{changed_knobs(t)} |")


def summary(study: optuna.Study, info: dict[str, Any], *, simulated: bool,
            session_trials: int, elapsed_s: float) -> str:
    trials = study.get_trials(deepcopy=False)
    c = counts(trials)
    kind = "simulated" if simulated else "measured"
    title = "SIMULATED (analytic cost model, no GPU: not a measurement)" if simulated else (
        "measured")
    lines = [
        f"## amk-tune study {study.study_name}: {title}",
        "",
        f"device: {info['device']}; date {datetime.date.today().isoformat()}; "
        f"oracle: {info['oracle_scope']}",
        f"trials: {len(trials)} in the study ({session_trials} in this run, "
        f"{elapsed_s / 60:.1f} min): {c['complete']} complete ({c['infeasible']} infeasible), "
        f"{c['pruned']} pruned by the validator, {c['failed']} failed",
        "",
        "| what | us/token | p10-p90 | vs first | floor / us | note |",
        "|---|---|---|---|---|---|",
    ]
    first = next((t for t in trials if t.number == 0), None)
    first_us = first.value if first is not None and feasible(first) else None
    best = best_feasible(trials)
    if first is not None and feasible(first):
        lines.append(_trial_row("first trial, default schedule", first, first_us, kind))
    elif first is not None:
        lines.append(f"| first trial (#0) | - | - | - | - | {first.state.name}, "
                     f"not feasible |")
    if best is not None:
        lines.append(_trial_row("best trial", best, first_us, kind))
    floor = best.user_attrs.get("floor_us") if best else None
    for name, t in (info.get("baselines") or {}).items():
        if isinstance(t, dict):
            ratio = f"{first_us / t['median_us']:.2f}x" if first_us else "-"
            pct = f"{100 * floor / t['median_us']:.1f}%" if floor else "-"
            lines.append(f"| {name} | {t['median_us']:.1f} | {t['p10_us']:.1f}-"
                         f"{t['p90_us']:.1f} | {ratio} | {pct} | same process, same weights |")
        else:
            lines.append(f"| {name} | - | - | - | - | {t} |")
    if simulated:
        lines.append("| torch baselines | - | - | - | - | not measured: simulated study |")
    elif info.get("baselines") is None:
        lines.append("| torch baselines | - | - | - | - | not measured: --no-baselines |")
    if floor:
        wb = best.user_attrs.get("weight_bytes", 0)
        lines.append(f"| bandwidth floor | {floor:.1f} | - | - | 100% | "
                     f"{wb / 1e6:.0f} MB per token at the profile's read rate |")
    if best is not None and first_us:
        lines += ["", f"best vs first: {first_us / best.value:.2f}x faster ({kind})"]
        if best.user_attrs.get("baseline_ratio"):
            lines.append(f"best vs {best.user_attrs['baseline']}: "
                         f"{best.user_attrs['baseline_ratio']:.2f}x (> 1: the megakernel is "
                         "faster)")
    elif best is None:
        lines += ["", "no feasible trial yet"]
    return "\n".join(lines)

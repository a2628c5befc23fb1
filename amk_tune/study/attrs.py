"""The user attrs of a completed trial, from the worker's result (plain JSON values).

``us_per_token`` (median), ``spread_us`` ([p10, p90]; None when simulated), ``floor_us`` and
``pct_of_floor`` (floor / latency), ``baseline`` / ``baseline_us`` / ``baseline_ratio``
(baseline / latency: > 1 means faster than it; None when no baseline was measured),
``compile_s``, ``registers``, ``spills``, ``smem_bytes``, the oracle's verdict
(``oracle_passed``, ``oracle_max_abs_err``, ``oracle_max_rel_err``, ``oracle``, its scope),
``feasible``, ``weights_sha256`` (the weights the oracle judged: the trial's own format),
the program's shape, and ``measurement``: "measured" or "simulated". A measured latency
under the bandwidth floor is a bug and fails the trial.
"""

from __future__ import annotations

from typing import Any

from amk_tune.targets import Target
from vm.analysis import ProgramStats

BASELINE_ORDER = ("torch.compile + CUDA graph", "torch CUDA graph", "torch eager")


def reference_baseline(baselines: dict[str, Any] | None) -> tuple[str, float] | None:
    """The strongest baseline that was measured: (name, us/token)."""
    for name in BASELINE_ORDER:
        t = (baselines or {}).get(name)
        if isinstance(t, dict):
            return name, float(t["median_us"])
    return None


def result_attrs(result: dict[str, Any], stats: ProgramStats, target: Target,
                 baselines: dict[str, Any] | None) -> dict[str, Any]:
    latency = float(result["latency_us"])
    floor = target.floor_us(stats.weight_bytes)
    oracle = result["oracle"]
    measured = bool(result["measured"])
    base = reference_baseline(baselines) if measured else None
    spread = ([result["p10_us"], result["p90_us"]] if result.get("p10_us") is not None
              else None)
    fail = None
    if latency < floor:
        fail = (f"measured {latency:.2f} us/token is under the bandwidth floor {floor:.2f} us "
                f"({stats.weight_bytes} B at {target.measured_gbps} GB/s): a timing bug, "
                "not a result")
    return {
        "measurement": "measured" if measured else "simulated",
        "us_per_token": latency,
        "spread_us": spread,
        "floor_us": floor,
        "pct_of_floor": 100.0 * floor / latency,
        "baseline": base[0] if base else None,
        "baseline_us": base[1] if base else None,
        "baseline_ratio": base[1] / latency if base else None,
        "compile_s": result.get("compile_s"),
        "build_cached": result.get("build_cached"),
        "registers": result.get("registers"),
        "spills": result.get("spills"),
        "smem_bytes": result.get("smem_bytes"),
        "oracle_passed": bool(oracle["passed"]),
        "oracle_max_abs_err": oracle["max_abs_err"],
        "oracle_max_rel_err": oracle["max_rel_err"],
        "oracle": oracle["message"],
        "oracle_scope": result.get("oracle_scope"),
        "feasible": bool(oracle["passed"]),
        "weights_sha256": result.get("weights_sha256"),
        "cost_terms": result.get("cost_terms"),
        "critical_stages": stats.critical_stages,
        "tasks_per_step": stats.tasks_per_step,
        "busiest_block_tasks": stats.busiest_block_tasks,
        "weight_bytes": stats.weight_bytes,
        "fail_reason": fail,
    }

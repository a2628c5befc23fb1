"""Loop 1 (``amk-tune study --loop instruction``): each GEMV role's kernel knobs, alone.

Roles are the GEMV kinds of a decode step: ``qkv``, ``o``, ``gu``, ``down`` (tuned by
``rows_per_warp`` x ``unroll``) and ``lm`` (``lm_rows_per_warp`` x ``lm_unroll``). The
default Schedule is lowered once at the study's model shapes and weight format. For each
role, the first tile (layer 0's, the LM head's first) is cut out by ``vm.isolate`` into a
one-block program, and the role's tiles of the first layers (up to STAGE_BYTES of weights;
the LM head: all its tiles) are kept on their blocks, unsynchronised, by
``vm.stage_only``. Each role is one Optuna study in the main study's storage, named
``<main study>.loop1.<role>``, whose GridSampler walks the role's 3 x 3 knob grid. A trial:

1. runs the tile on fresh random inputs and checks every declared write against the NumPy
   twin (``vm.isolated.compare``); a mismatch completes the trial infeasible (value inf,
   ``feasible = False``, the problems in ``twin_problems``), like an oracle failure;
2. times the stage program: median us of launches that each start with a cold L2
   (``bench.time_launch(cold=True)``: weights stream from memory, as inside the
   megakernel), divided by the layers it holds: us per stage, every block at work as in
   the megakernel, one launch's overhead spread over those layers. ``--simulate`` times
   nothing: the tile's weight bytes at its SM's share of the target's bandwidth, over an
   efficiency from the 16-byte loads in flight (as ``cost_model`` does), never under that
   floor, times the tiles one block runs per stage; every result is marked simulated.

The GPU work runs in this process, not in the study's worker subprocess: neither launch has
a wait, and the GPU watchdog stops a kernel that spins anyway.
Simulated, the device's output is the twin's own (no device exists): the twin still runs
and ``compare`` still checks that it wrote every declared float.

``loop1_best`` turns the finished loop-1 studies into the kernel knobs loop 2 (the schedule
study, ``run.py``) enqueues right after its default trial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from amk_tune.errors import AmkError, TrialFailed
from amk_tune.model.spec import ModelSpec
from amk_tune.study.cost_model import (
    HBM_LATENCY_US,
    LOAD_BYTES,
    REGISTERS_PER_SM,
    TASK_US,
    registers_per_thread,
)
from amk_tune.targets import Target
from space.kernel_knobs import ROWS_PER_WARP, UNROLL, KernelKnobs
from space.schedule import Schedule
from vm.analysis import weight_bytes
from vm.isolated import (
    compare,
    isolate,
    random_state,
    run_gpu,
    run_twin,
    stage_only,
    task_weights,
)
from vm.lowering import lower
from vm.program import Program

LAYER_ROLES = ("qkv", "o", "gu", "down")
ROLES = (*LAYER_ROLES, "lm")
STAGE_BYTES = 512 << 20  # weights of one role's stage program at most (random, on the host)


def role_knobs(role: str) -> tuple[str, str]:
    """The two KernelKnobs fields a role is tuned by."""
    return ("lm_rows_per_warp", "lm_unroll") if role == "lm" else ("rows_per_warp", "unroll")


def loop1_name(main_study: str, role: str) -> str:
    return f"{main_study}.loop1.{role}"


@dataclass(frozen=True)
class RoleTask:
    role: str
    task_id: str  # the representative tile in the default program
    per_step: int  # the role's stages per decode step (the layers; the LM head: 1)
    program: Program  # that tile alone (``vm.isolate``), checked against its twin
    stage: Program  # the role's tiles of the first ``stages`` layers (``vm.stage_only``)
    stages: int


def role_tasks(spec: ModelSpec, target: Target, dtype: str = "bf16",
               quant_group: int = 0) -> dict[str, RoleTask]:
    """Per role of the default Schedule's program: its first tile alone, and its stages."""
    program = lower(spec, Schedule(), target, steps=1, dtype=dtype, quant_group=quant_group)
    tasks = {t.id: t for _, _, t in program.tasks() if t.op == "gemv"}
    layers: dict[str, dict[str, set[str]]] = {role: {} for role in ROLES}
    for task_id in tasks:  # "L3.gu.17" -> role gu, layer L3; "lm.7" -> role lm, layer lm
        parts = task_id.split(".")
        layers[parts[-2]].setdefault(parts[0], set()).add(task_id)
    out = {}
    for role in ROLES:
        task_id = "lm.0" if role == "lm" else f"L0.{role}.0"
        stages = list(layers[role].values())  # in program (layer) order
        per_layer = max(1, weight_bytes(stage_only(program, stages[0])))
        k = max(1, min(len(stages), STAGE_BYTES // per_layer))
        out[role] = RoleTask(role, task_id, len(stages), isolate(program, tasks[task_id]),
                             stage_only(program, set().union(*stages[:k])), k)
    return out


def estimate_us(rt: RoleTask, knobs: KernelKnobs, target: Target) -> float:
    """Simulated us of one stage of the role (never a measurement, never under its floor):
    the tile on one SM, times the tiles the busiest block runs per stage."""
    (task,) = rt.program.queues[0]
    rpw, unroll = (getattr(knobs, k) for k in role_knobs(rt.role))
    nbytes = weight_bytes(rt.program)
    rows = sum(b - a for a, b in task.instr.rows)
    chunks = max(1, math.ceil(nbytes / rows / LOAD_BYTES))  # 16-byte loads per lane per row
    threads = rt.program.launch.threads
    in_flight = min(rows, threads // 32 * rpw) * min(unroll, chunks) * LOAD_BYTES
    share = target.measured_gbps * 1e3 / target.sms  # bytes per us of one SM
    efficiency = min(1.0, in_flight / (share * HBM_LATENCY_US))
    if registers_per_thread(KernelKnobs(rows_per_warp=rpw, unroll=unroll)) * threads \
            > REGISTERS_PER_SM:
        efficiency /= 2
    floor = nbytes / share
    per_block = math.ceil(max(len(q) for q in rt.stage.queues) / rt.stages)
    return (floor / efficiency + TASK_US) * per_block


class Evaluator:
    """Checks and times one role's tile under given knobs (simulated: estimates)."""

    def __init__(self, target: Target, simulated: bool, iters: int, seed: int) -> None:
        self.target, self.simulated, self.iters, self.seed = target, simulated, iters, seed
        self._weights: dict[str, object] = {}

    def __call__(self, rt: RoleTask, knobs: KernelKnobs, number: int) -> dict:
        weights = self._weights.get(rt.role)
        if weights is None:  # the stage's weights hold the tile's too
            weights = self._weights[rt.role] = task_weights(rt.stage, self.seed)
        inputs = random_state(rt.program, self.seed + 1 + number)
        twin = run_twin(rt.program, weights, inputs)
        if self.simulated:
            problems = compare(inputs, run_twin(rt.program, weights, inputs), twin)
            return {"problems": problems, "us": estimate_us(rt, knobs, self.target),
                    "spread_us": None, "registers": None, "spills": None}
        from amk_tune.bench import time_launch
        from vm.gpu_runner import GpuMachine

        machine = GpuMachine(weights, knobs=knobs)
        problems = compare(inputs, run_gpu(rt.program, weights, inputs, machine), twin)
        if problems:
            return {"problems": problems, "us": math.inf, "spread_us": None,
                    "registers": None, "spills": None}
        prepared = machine.prepare(rt.stage, [inputs.token])
        t = time_launch(machine, prepared, self.iters, cold=True)
        k = rt.stages
        return {"problems": [], "us": t.median_us / k, "spread_us": [t.p10_us / k, t.p90_us / k],
                "registers": prepared.kernel.registers, "spills": prepared.kernel.spills}


def objective(rt: RoleTask, evaluate: Evaluator):
    first, second = role_knobs(rt.role)

    def run(trial: optuna.Trial) -> float:
        knobs = KernelKnobs(**{first: trial.suggest_categorical(first, ROWS_PER_WARP),
                               second: trial.suggest_categorical(second, UNROLL)})
        trial.set_user_attr("measurement", "simulated" if evaluate.simulated else "measured")
        trial.set_user_attr("kernel_knobs", knobs.to_dict())
        try:
            r = evaluate(rt, knobs, trial.number)
        except AmkError as e:  # a build error, a crash, the watchdog
            trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}")
            raise TrialFailed(f"{rt.role} trial {trial.number}: {e}") from e
        ok = not r["problems"]
        trial.set_user_attr("feasible", ok)
        trial.set_user_attr("us_per_stage", r["us"] if ok else None)
        for key in ("spread_us", "registers", "spills"):
            trial.set_user_attr(key, r[key])
        if not ok:
            trial.set_user_attr("twin_problems", r["problems"][:10])
        trial.set_constraint("twin", 0.0 if ok else 1.0)
        return float(r["us"]) if ok else math.inf

    return run


def grid_sampler(role: str, seed: int) -> optuna.samplers.GridSampler:
    first, second = role_knobs(role)
    return optuna.samplers.GridSampler({first: list(ROWS_PER_WARP), second: list(UNROLL)},
                                       seed=seed)


GRID = len(ROWS_PER_WARP) * len(UNROLL)


def per_pair(study: optuna.Study) -> dict[tuple[int, int], float]:
    """(first knob, second knob) -> the best feasible us/stage of a loop-1 study."""
    first, second = role_knobs(study.user_attrs["loop1_role"])
    best: dict[tuple[int, int], float] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("feasible") is True:
            pair = (t.params[first], t.params[second])
            best[pair] = min(best.get(pair, math.inf), float(t.value))
    return best


def loop1_studies(storage: str, main_study: str) -> dict[str, optuna.Study]:
    names = set(optuna.get_all_study_names(storage))
    return {role: optuna.load_study(study_name=loop1_name(main_study, role), storage=storage)
            for role in ROLES if loop1_name(main_study, role) in names}


def loop1_best(storage: str, main_study: str) -> KernelKnobs | None:
    """The knobs loop 2 starts from: (rows_per_warp, unroll) minimising the layer roles'
    measured us/stage summed, each weighted by its stages per step (the stages run one
    after another), over the pairs every tuned layer role has; and the lm role's best
    (lm_rows_per_warp, lm_unroll). None without a feasible loop-1 result."""
    studies = loop1_studies(storage, main_study)
    found = {role: per_pair(s) for role, s in studies.items()}
    kw: dict[str, int] = {}
    layer = [r for r in LAYER_ROLES if found.get(r)]
    pairs = set.intersection(*(set(found[r]) for r in layer)) if layer else set()
    if pairs:
        weight = {r: studies[r].user_attrs["stages_per_step"] for r in layer}
        best = min(sorted(pairs), key=lambda p: sum(weight[r] * found[r][p] for r in layer))
        kw["rows_per_warp"], kw["unroll"] = best
    if found.get("lm"):
        kw["lm_rows_per_warp"], kw["lm_unroll"] = min(sorted(found["lm"]),
                                                      key=found["lm"].__getitem__)
    return KernelKnobs(**kw) if kw else None

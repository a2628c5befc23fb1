"""Loop 1 (``amk-tune study --loop instruction``): each GEMV role's kernel knobs, alone.

Roles are the GEMV kinds of a decode step: ``qkv``, ``o``, ``gu``, ``down`` (tuned by
``rows_per_warp`` x ``unroll`` x ``ring``) and ``lm`` (``lm_rows_per_warp`` x
``lm_unroll`` x ``lm_ring``). The default Schedule is lowered once at the study's model
shapes and weight format. For each role, the first tile (layer 0's, the LM head's first)
is cut out by ``vm.isolate`` into a one-block program, and the role's tiles of the first
layers (up to STAGE_BYTES of weights; the LM head: all its tiles) are kept on their
blocks, unsynchronised, by ``vm.stage_only``. Each role is one Optuna study in the main
study's storage, named ``<main study>.loop1.<role>``, whose GridSampler walks the role's
grid (``RoleTask.grid``): rows per warp x unroll (3 x 3), times a ring depth in RINGS
where that tile takes the ring in this kernel (``vm.build.takes_ring``): the LM head
whenever its ring fits the slot; a layer tile when its rows outgrow the slot, with
``ring_pairs`` for the two-segment tiles (QKV, gate/up). A ring trial runs the ring with
``ring_prefill`` (and ``ring_pairs`` for a layer role); its depth is an upper bound, fitted
to the slot (``vm.build.fit_rings``; ``kernel_knobs`` records what ran). A trial:

1. runs the tile on fresh random inputs and checks every declared write against the NumPy
   twin (``vm.isolated.compare``); a mismatch completes the trial infeasible (value inf,
   ``feasible = False``, the problems in ``twin_problems``), like an oracle failure;
2. times the stage program: median us of launches that each start with a cold L2
   (``bench.time_launch(cold=True)``: weights stream from memory, as inside the
   megakernel), divided by the layers it holds: us per stage, every block at work as in
   the megakernel, one launch's overhead spread over those layers. ``--simulate`` times
   nothing: the tile's weight bytes at its SM's share of the target's bandwidth, over an
   efficiency from the 16-byte loads in flight (as ``cost_model`` does: registers' rows x
   unroll, or a ringed tile's ring stages x rows, at no register cost), never under that
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
from vm.build import config_for, fit_rings, takes_ring
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
RINGS = (0, 4)  # the ring depths of a role whose tile takes the ring (4: an upper bound)

Config = tuple[int, int, int]  # (rows per warp, unroll, ring depth) of a role


def role_knobs(role: str) -> tuple[str, str, str]:
    """The KernelKnobs fields a role is tuned by: rows per warp, unroll, ring depth."""
    if role == "lm":
        return "lm_rows_per_warp", "lm_unroll", "lm_ring"
    return "rows_per_warp", "unroll", "ring"


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
    spec: ModelSpec
    grid: dict[str, list[int]]  # knob -> its values: the role's GridSampler search space

    @property
    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid.values())


def role_tasks(spec: ModelSpec, target: Target, dtype: str = "bf16",
               quant_group: int = 0) -> dict[str, RoleTask]:
    """Per role of the default Schedule's program: its first tile alone, its stages, and
    its grid (``role_grid``)."""
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
        tile = isolate(program, tasks[task_id])
        stage = stage_only(program, set().union(*stages[:k]))
        out[role] = RoleTask(role, task_id, len(stages), tile, stage, k, spec,
                             role_grid(role, tile, stage, spec))
    return out


def ring_knobs(role: str, depth: int) -> dict[str, int | bool]:
    """The KernelKnobs fields of a role's ring of ``depth`` stages (0: none): a layer ring
    takes the two-segment tiles too (``ring_pairs``); either ring is prefilled."""
    if role == "lm":
        return {"lm_ring": depth, "ring_prefill": depth > 0}
    return {"ring": depth, "ring_pairs": depth > 0, "ring_prefill": depth > 0}


def role_grid(role: str, tile: Program, stage: Program, spec: ModelSpec) -> dict[str, list[int]]:
    """A role's search space: rows per warp x unroll, and its ring depth over RINGS when
    its tile (the one task of ``tile``) takes a ring of RINGS[-1] stages, fitted at one row
    per warp, in the kernel built for ``stage``; a tile that does not never runs a ring."""
    rpw, unroll, ring = role_knobs(role)
    grid = {rpw: list(ROWS_PER_WARP), unroll: list(UNROLL)}
    knobs = fit_rings(stage, spec, KernelKnobs(**ring_knobs(role, RINGS[-1])))
    (task,) = tile.queues[0]
    if takes_ring(task, config_for(stage, spec, knobs)):
        grid[ring] = list(RINGS)
    return grid


def trial_knobs(rt: RoleTask, params: dict[str, int]) -> KernelKnobs:
    """The knobs of a grid point: the role's two knobs and its ring (0 without a ring
    dimension), the ring fitted to the stage's slot (``vm.build.fit_rings``)."""
    rpw, unroll, ring = role_knobs(rt.role)
    knobs = KernelKnobs(**{rpw: params[rpw], unroll: params[unroll]},
                        **ring_knobs(rt.role, params.get(ring, 0)))
    return fit_rings(rt.stage, rt.spec, knobs)


def estimate_us(rt: RoleTask, knobs: KernelKnobs, target: Target) -> float:
    """Simulated us of one stage of the role (never a measurement, never under its floor):
    the tile on one SM, times the tiles the busiest block runs per stage. A warp keeps
    rows per warp x unroll 16-byte loads per lane in flight through registers, or, ringed,
    ring stages x rows per warp (x 2 segments for a layer ring's row pairs) at no register
    cost."""
    (task,) = rt.program.queues[0]
    rpw, unroll, _ = (getattr(knobs, k) for k in role_knobs(rt.role))
    nbytes = weight_bytes(rt.program)
    rows = sum(b - a for a, b in task.instr.rows)
    chunks = max(1, math.ceil(nbytes / rows / LOAD_BYTES))  # warp-wide loads per row
    threads = rt.program.launch.threads
    cfg = config_for(rt.stage, rt.spec, knobs)
    if takes_ring(task, cfg):
        segments = 1 if rt.role == "lm" else len(task.instr.rows)
        depth = cfg.lm_ring if rt.role == "lm" else cfg.ring
        loads = min(rows * chunks, threads // 32 * depth * rpw * segments)
        spills = False
    else:
        loads = min(rows, threads // 32 * rpw) * min(unroll, chunks)
        spills = (registers_per_thread(KernelKnobs(rows_per_warp=rpw, unroll=unroll)) * threads
                  > REGISTERS_PER_SM)
    share = target.measured_gbps * 1e3 / target.sms  # bytes per us of one SM
    efficiency = min(1.0, loads * LOAD_BYTES / (share * HBM_LATENCY_US))
    if spills:
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
    def run(trial: optuna.Trial) -> float:
        params = {k: trial.suggest_categorical(k, v) for k, v in rt.grid.items()}
        knobs = trial_knobs(rt, params)
        trial.set_user_attr("measurement", "simulated" if evaluate.simulated else "measured")
        trial.set_user_attr("kernel_knobs", knobs.to_dict())
        ring = role_knobs(rt.role)[2]
        if params.get(ring, 0) != getattr(knobs, ring):  # what was asked, what runs
            trial.set_user_attr("knobs_fitted", {ring: [params[ring], getattr(knobs, ring)]})
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


def grid_sampler(rt: RoleTask, seed: int) -> optuna.samplers.GridSampler:
    return optuna.samplers.GridSampler(rt.grid, seed=seed)


def per_config(study: optuna.Study) -> dict[Config, float]:
    """(rows per warp, unroll, ring depth) -> the best feasible us/stage of a loop-1 study;
    ring 0 for a trial without the ring parameter (its role's grid had no ring)."""
    first, second, ring = role_knobs(study.user_attrs["loop1_role"])
    best: dict[Config, float] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("feasible") is True:
            config = (t.params[first], t.params[second], t.params.get(ring, 0))
            best[config] = min(best.get(config, math.inf), float(t.value))
    return best


def has_ring(study: optuna.Study) -> bool:
    """Whether a loop-1 study's grid has the ring dimension (every trial of such a grid
    has the ring parameter; the grid of a tile that takes no ring has none)."""
    ring = role_knobs(study.user_attrs["loop1_role"])[2]
    return any(ring in t.params for t in study.get_trials(deepcopy=False))


def loop1_studies(storage: str, main_study: str) -> dict[str, optuna.Study]:
    names = set(optuna.get_all_study_names(storage))
    return {role: optuna.load_study(study_name=loop1_name(main_study, role), storage=storage)
            for role in ROLES if loop1_name(main_study, role) in names}


def loop1_best(storage: str, main_study: str) -> KernelKnobs | None:
    """The knobs loop 2 starts from. The layer roles share one (rows_per_warp, unroll,
    ring): the one minimising their measured us/stage summed, each weighted by its stages
    per step (the stages run one after another), over the configurations every tuned layer
    role has. A role without a ring dimension (its tile takes no ring, so the ring leaves
    its code as it is) counts its ring-0 result at every depth of RINGS; a tie goes to the
    lowest (rows_per_warp, unroll, ring), so a ring that changes nothing is left off. The
    lm role gives its best (lm_rows_per_warp, lm_unroll, lm_ring). ``ring_pairs`` is set
    with a layer ring, ``ring_prefill`` with either ring. None without a feasible loop-1
    result."""
    studies = loop1_studies(storage, main_study)
    found = {role: per_config(s) for role, s in studies.items()}
    for role, study in studies.items():
        if role != "lm" and not has_ring(study):
            found[role] = {(p, u, d): us for (p, u, _), us in found[role].items() for d in RINGS}
    kw: dict[str, int] = {}
    layer = [r for r in LAYER_ROLES if found.get(r)]
    configs = set.intersection(*(set(found[r]) for r in layer)) if layer else set()
    if configs:
        weight = {r: studies[r].user_attrs["stages_per_step"] for r in layer}
        best = min(sorted(configs), key=lambda c: sum(weight[r] * found[r][c] for r in layer))
        kw["rows_per_warp"], kw["unroll"], kw["ring"] = best
    if found.get("lm"):
        kw["lm_rows_per_warp"], kw["lm_unroll"], kw["lm_ring"] = min(
            sorted(found["lm"]), key=found["lm"].__getitem__)
    if not kw:
        return None
    ring, lm_ring = kw.get("ring", 0), kw.get("lm_ring", 0)
    return KernelKnobs(**kw, ring_pairs=ring > 0, ring_prefill=ring > 0 or lm_ring > 0)

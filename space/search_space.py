"""The Optuna search space: a trial's parameters -> (Schedule, KernelKnobs, WeightFormat).

Define-by-run with conditional knobs: an explicit tile count is asked for only when the
trial leaves ``tiles_mode = "per_block"``, and the five fusion flags only when it leaves
``fusion = "all"``; ``qkv_span`` only with ``fuse_rope``; ``ring_pairs`` only when
``ring`` > 0; ``ring_prefill`` only when ``ring`` or ``lm_ring`` > 0; ``bulk_stage`` only
on a GPU with TMA bulk copies (sm_90 and newer); ``fuse_down`` only with ``fuse_silu`` and
``fuse_residual``, and ``down_slot`` only with ``fuse_down``; ``fuse_o`` only with
``fuse_rope``, ``fuse_residual``, ``split_kv`` = 1 and bf16; the int8 quantisation group
only when ``dtype`` is int8 (the weight knobs and what part of them a study opens:
space/weight_format.py). Every knob changes the lowered program or the CUDA build
(tests/study/test_study_space.py proves it for each). The choices keep the default
Schedule and KernelKnobs reachable (``default_params``), so a study can start from them.

Nothing here filters unsafe or non-resident points: that is the validator's job, and its
rejections are pruned before any GPU work.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import optuna

from amk_tune.targets import Target
from space.kernel_knobs import (
    K_SPLIT,
    LM_RING,
    PREFETCH,
    RING,
    ROWS_PER_WARP,
    SPIN_SLEEP_NS,
    UNROLL,
    KernelKnobs,
    has_bulk_copies,
)
from space.schedule import SM_POLICIES, Schedule, fuse_down_possible, fuse_o_possible
from space.weight_format import BF16, WHOLE_SPACE, WeightChoices, WeightFormat

PER_BLOCK, CUSTOM = "per_block", "custom"
FUSIONS = ("fuse_norm", "fuse_rope", "fuse_residual", "fuse_silu", "fuse_argmax")
SPLIT_KV = (1, 2, 3, 4)
STEPS_PER_LAUNCH = (1, 2, 4, 8)
BLOCKS_PER_SM = (1, 2)
THREADS = (128, 256, 512, 1024)
SMEM_BYTES = (0, 16384, 32768, 65536, 131072, 196608)  # GEMV weight staging per block


@dataclass(frozen=True)
class Candidate:
    """What one trial evaluates: the lowering knobs, the kernel knobs, the weight format."""

    schedule: Schedule
    knobs: KernelKnobs
    weights: WeightFormat = BF16

    def to_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule.to_dict(), "kernel_knobs": self.knobs.to_dict(),
                "weights": self.weights.to_dict()}


def suggest(trial: optuna.Trial, target: Target,
            weights: WeightChoices = WHOLE_SPACE) -> Candidate:
    """Sample one candidate for ``target`` (its SM count bounds the explicit tile counts),
    its weight format among ``weights`` (a study's: ``WeightChoices.for_study``)."""
    blocks = target.sms
    tiles = lm_tiles = None
    if trial.suggest_categorical("tiles_mode", (PER_BLOCK, CUSTOM)) == CUSTOM:
        tiles = trial.suggest_int("tiles", max(8, blocks // 8), 4 * blocks, log=True)
    if trial.suggest_categorical("lm_tiles_mode", (PER_BLOCK, CUSTOM)) == CUSTOM:
        lm_tiles = trial.suggest_int("lm_tiles", max(8, blocks // 4), 8 * blocks, log=True)
    fusion = {name: True for name in FUSIONS}
    if trial.suggest_categorical("fusion", ("all", CUSTOM)) == CUSTOM:
        fusion = {name: trial.suggest_categorical(name, (True, False)) for name in FUSIONS}
    qkv_span = (trial.suggest_categorical("qkv_span", (False, True)) if fusion["fuse_rope"]
                else False)
    fmt = weights.suggest(trial)
    split_kv = trial.suggest_categorical("split_kv", SPLIT_KV)
    fuse_down = (trial.suggest_categorical("fuse_down", (False, True))
                 if fuse_down_possible(fusion["fuse_silu"], fusion["fuse_residual"]) else False)
    fuse_o = (trial.suggest_categorical("fuse_o", (False, True))
              if _fuse_o_asked(fusion["fuse_rope"], fusion["fuse_residual"], split_kv, fmt)
              else False)
    schedule = Schedule(
        tiles=tiles,
        lm_tiles=lm_tiles,
        sm_policy=trial.suggest_categorical("sm_policy", SM_POLICIES),
        split_kv=split_kv,
        steps_per_launch=trial.suggest_categorical("steps_per_launch", STEPS_PER_LAUNCH),
        blocks_per_sm=trial.suggest_categorical("blocks_per_sm", BLOCKS_PER_SM),
        threads=trial.suggest_categorical("threads", THREADS),
        smem_bytes=trial.suggest_categorical("smem_bytes", SMEM_BYTES),
        qkv_span=qkv_span,
        fuse_down=fuse_down,
        fuse_o=fuse_o,
        **fusion,
    )
    ring = trial.suggest_categorical("ring", RING)
    lm_ring = trial.suggest_categorical("lm_ring", LM_RING)
    knobs = KernelKnobs(
        rows_per_warp=trial.suggest_categorical("rows_per_warp", ROWS_PER_WARP),
        unroll=trial.suggest_categorical("unroll", UNROLL),
        spin_sleep_ns=trial.suggest_categorical("spin_sleep_ns", SPIN_SLEEP_NS),
        prefetch=trial.suggest_categorical("prefetch", PREFETCH),
        lm_rows_per_warp=trial.suggest_categorical("lm_rows_per_warp", ROWS_PER_WARP),
        lm_unroll=trial.suggest_categorical("lm_unroll", UNROLL),
        k_split=trial.suggest_categorical("k_split", K_SPLIT),
        lm_ring=lm_ring,
        ring=ring,
        ring_pairs=trial.suggest_categorical("ring_pairs", (False, True)) if ring else False,
        ring_prefill=(trial.suggest_categorical("ring_prefill", (False, True))
                      if ring or lm_ring else False),
        weights_evict_first=trial.suggest_categorical("weights_evict_first", (False, True)),
        bulk_stage=(trial.suggest_categorical("bulk_stage", (False, True))
                    if has_bulk_copies(target.arch) else False),
        down_slot=(trial.suggest_categorical("down_slot", (False, True)) if fuse_down
                   else False),
    )
    return Candidate(schedule, knobs, fmt)


def _fuse_o_asked(fuse_rope: bool, fuse_residual: bool, split_kv: int,
                  fmt: WeightFormat) -> bool:
    """Whether a trial asks ``fuse_o``: the schedule allows it, and the weights are bf16
    (the lowering refuses it on int8)."""
    return fuse_o_possible(fuse_rope, fuse_residual, split_kv) and fmt.dtype == "bf16"


def params_of(cand: Candidate, target: Target | None = None) -> dict[str, Any]:
    """The trial parameters that make ``suggest`` return ``cand`` on ``target``: its
    inverse, for enqueue_trial (the default, a remembered configuration). Conditional knobs
    appear only where ``suggest`` asks them (``bulk_stage`` where ``target`` has bulk
    copies; with no target, as on an H100)."""
    s, k, fmt = cand.schedule, cand.knobs, cand.weights
    fused = all(getattr(s, name) for name in FUSIONS)
    return {
        "dtype": fmt.dtype, **({"quant_group": fmt.quant_group} if fmt.dtype == "int8" else {}),
        "tiles_mode": PER_BLOCK if s.tiles is None else CUSTOM,
        **({} if s.tiles is None else {"tiles": s.tiles}),
        "lm_tiles_mode": PER_BLOCK if s.lm_tiles is None else CUSTOM,
        **({} if s.lm_tiles is None else {"lm_tiles": s.lm_tiles}),
        "fusion": "all" if fused else CUSTOM,
        **({} if fused else {name: getattr(s, name) for name in FUSIONS}),
        **({"qkv_span": s.qkv_span} if s.fuse_rope else {}),
        **({"fuse_down": s.fuse_down} if fuse_down_possible(s.fuse_silu, s.fuse_residual)
           else {}),
        **({"fuse_o": s.fuse_o}
           if _fuse_o_asked(s.fuse_rope, s.fuse_residual, s.split_kv, fmt) else {}),
        "sm_policy": s.sm_policy, "split_kv": s.split_kv,
        "steps_per_launch": s.steps_per_launch, "blocks_per_sm": s.blocks_per_sm,
        "threads": s.threads, "smem_bytes": s.smem_bytes, "rows_per_warp": k.rows_per_warp,
        "unroll": k.unroll, "spin_sleep_ns": k.spin_sleep_ns, "prefetch": k.prefetch,
        "lm_rows_per_warp": k.lm_rows_per_warp, "lm_unroll": k.lm_unroll,
        "k_split": k.k_split, "lm_ring": k.lm_ring, "ring": k.ring,
        **({"ring_pairs": k.ring_pairs} if k.ring else {}),
        **({"ring_prefill": k.ring_prefill} if k.ring or k.lm_ring else {}),
        "weights_evict_first": k.weights_evict_first,
        **({"bulk_stage": k.bulk_stage} if target is None or has_bulk_copies(target.arch)
           else {}),
        **({"down_slot": k.down_slot} if s.fuse_down else {}),
    }


def params_key(params: dict[str, Any]) -> tuple:
    """A hashable key of trial parameters: the same point of the space, the same key."""
    return tuple(sorted(params.items()))


def default_params(weights: WeightChoices = WHOLE_SPACE,
                   target: Target | None = None) -> dict[str, Any]:
    """The trial parameters of the default Schedule and KernelKnobs with the first weight
    format of ``weights`` (bf16 in the whole space) on ``target``, for enqueue_trial."""
    return params_of(Candidate(Schedule(), KernelKnobs(), weights.first()), target)


# Knobs added after the first studies, and what a trial from before them ran with (one
# warp per row, every tile through registers, one head per QKV tile; prior/corpus.py's
# LATER_COLUMNS too)
LATER_KNOBS = {"k_split": 1, "lm_ring": 0, "ring": 0, "ring_pairs": False,
               "ring_prefill": False, "weights_evict_first": False, "bulk_stage": False,
               "qkv_span": False, "fuse_down": False, "fuse_o": False, "down_slot": False}


def candidate_of(params: dict[str, Any], target: Target) -> Candidate:
    """The candidate a finished trial's ``params`` stand for (a FixedTrial replays them;
    params from before the weight knobs mean bf16, from before a kernel knob its
    ``LATER_KNOBS`` value)."""
    fmt = WeightFormat(params.get("dtype", "bf16"), params.get("quant_group", 0))
    own = WeightChoices((fmt.dtype,), (fmt.quant_group,))
    fixed = {**own.default_params(), **LATER_KNOBS, **params}
    return suggest(optuna.trial.FixedTrial(fixed), target, own)


def in_space(params: dict[str, Any], target: Target) -> bool:
    """Whether ``target``'s space holds ``params``: every value one ``suggest`` can take
    (a FixedTrial only warns of an integer out of its range, so the warning decides)."""
    own = WeightChoices((params.get("dtype", "bf16"),), (params.get("quant_group", 0),))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            suggest(optuna.trial.FixedTrial(params), target, own)
        except (ValueError, UserWarning):
            return False
    return True

"""The Schedule: every knob of the lowered program, with a good default.

A Schedule is plain data (JSON round trip, strict parsing); ``vm.lowering`` turns
ModelSpec + Schedule into a Program. Every knob changes the program (tests/space prove it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amk_tune.errors import ScheduleError
from amk_tune.json_file import read_json

SM_POLICIES = ("rotate", "round_robin", "blocked")


def fuse_down_possible(fuse_silu: bool, fuse_residual: bool) -> bool:
    """What ``fuse_down`` needs: the gate/up tiles apply SiLU-mul, and the O tiles start
    the output vector with the residual."""
    return fuse_silu and fuse_residual


def fuse_o_possible(fuse_rope: bool, fuse_residual: bool, split_kv: int) -> bool:
    """What ``fuse_o`` needs of the schedule (the lowering also wants bf16 weights): each
    fused task attends over every position and adds into the residual stream the QKV tiles
    start."""
    return fuse_rope and fuse_residual and split_kv == 1


@dataclass(frozen=True)
class Schedule:
    """Knobs of the lowering.

    - ``tiles``: target tiles per projection (QKV, O, gate/up, down); ``None`` = one per
      block, so no projection leaves blocks idle.
    - ``lm_tiles``: tiles of the LM head; ``None`` = one per block.
    - ``sm_policy``: how a stage's tasks map to blocks: ``rotate`` (continue from the
      block after the previous stage's last one), ``round_robin`` (every stage starts at
      block 0), ``blocked`` (contiguous runs of tasks per block).
    - ``split_kv``: KV partitions per KV head in attention (flash-decoding); partials
      are merged in the O-projection's prologue.
    - ``fuse_*``: fold RMSNorm into the consuming GEMV; RoPE + KV append into the QKV
      epilogue; residual adds into the O/down epilogue; SiLU-mul into gate/up; the
      argmax into LM-head partials. Off = a separate single-task stage.
    - ``qkv_span``: QKV tiles are equal ranges of RoPE pairs over all heads, crossing
      heads (a tile of two KV groups signals both), read from the halves view of the
      fused QKV rows, as many as ``tiles`` less the attention tasks (whose blocks are
      then free when their group is written); off = every head split into the same
      number of pair ranges, which leaves blocks idle or runs two tiles on some when the
      head count does not divide the tile count. Needs ``fuse_rope``.
    - ``fuse_down``: the down projection fused into the gate/up tiles: each tile takes
      its intermediate rows' columns of the down matrix (the transposed view
      ``L{l}.wd_t``) and adds its part of the layer's output with atomic adds into a
      vector the O tiles start with the residual (``Residual.copy``). One stage and its
      hop fewer per layer. Needs ``fuse_silu`` and ``fuse_residual``.
    - ``fuse_o``: attention fused with the O projection: ``tiles / kv_heads`` tasks per KV
      group each compute the group's attention and add one row range of O (over the
      group's columns, view ``L{l}.wo_grp``) into the residual stream with atomic adds;
      the QKV tiles start that vector (and, with ``fuse_down``, the layer output) with
      the layer input (``RowCopy``). No O stage, no hop between attention and O. Needs
      ``fuse_rope`` and ``fuse_residual``, ``split_kv = 1``; bf16 weights only.
    - ``steps_per_launch``: decode steps one launch runs (argmax feeds the next step).
    - ``blocks_per_sm``, ``threads``, ``smem_bytes``: the launch shape.
    """

    tiles: int | None = None
    lm_tiles: int | None = None
    sm_policy: str = "rotate"
    split_kv: int = 1
    fuse_norm: bool = True
    fuse_rope: bool = True
    fuse_residual: bool = True
    fuse_silu: bool = True
    fuse_argmax: bool = True
    qkv_span: bool = False
    fuse_down: bool = False
    fuse_o: bool = False
    steps_per_launch: int = 1
    blocks_per_sm: int = 1
    threads: int = 256
    smem_bytes: int = 65536

    def __post_init__(self) -> None:
        for name in ("tiles", "lm_tiles"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ScheduleError(f"{name} = {v!r}: must be >= 1 (or null for one per block)")
        if self.sm_policy not in SM_POLICIES:
            raise ScheduleError(f"sm_policy = {self.sm_policy!r}: choose one of {SM_POLICIES}")
        for name in ("split_kv", "steps_per_launch", "blocks_per_sm"):
            if getattr(self, name) < 1:
                raise ScheduleError(f"{name} = {getattr(self, name)!r}: must be >= 1")
        if not (32 <= self.threads <= 1024 and self.threads % 32 == 0):
            raise ScheduleError(f"threads = {self.threads!r}: a multiple of 32 from 32 to 1024")
        if self.qkv_span and not self.fuse_rope:
            raise ScheduleError("qkv_span = true needs fuse_rope = true: a QKV tile that "
                                "crosses heads applies RoPE in its epilogue (set one of them "
                                "differently)")
        if self.fuse_down and not fuse_down_possible(self.fuse_silu, self.fuse_residual):
            raise ScheduleError("fuse_down = true needs fuse_silu = true and fuse_residual = "
                                "true: the gate/up tile applies SiLU-mul, and the O tiles "
                                "start the output vector with the residual (set fuse_down "
                                "to false, or both of them to true)")
        if self.fuse_o and not fuse_o_possible(self.fuse_rope, self.fuse_residual,
                                               self.split_kv):
            raise ScheduleError(f"fuse_o = true needs fuse_rope = true, fuse_residual = true and "
                                f"split_kv = 1 (got fuse_rope = {self.fuse_rope}, fuse_residual "
                                f"= {self.fuse_residual}, split_kv = {self.split_kv}): each "
                                "fused task attends over every position and adds into the "
                                "residual stream the QKV tiles start (set fuse_o to false, or "
                                "those knobs)")
        if self.smem_bytes < 0:
            raise ScheduleError(f"smem_bytes = {self.smem_bytes!r}: must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Schedule:
        return dataclasses.replace(self, **changes)

    @staticmethod
    def from_dict(d: Any) -> Schedule:
        if not isinstance(d, dict):
            raise ScheduleError(f"a schedule is a JSON object of knobs, got {type(d).__name__}")
        fields = {f.name: f for f in dataclasses.fields(Schedule)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ScheduleError(f"unknown schedule knob(s) {unknown}; known: {sorted(fields)}")
        defaults = Schedule()
        for name, value in d.items():
            want = type(getattr(defaults, name))
            if name in ("tiles", "lm_tiles"):
                ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
            elif want is bool:
                ok = isinstance(value, bool)
            elif want is int:
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:
                ok = isinstance(value, want)
            if not ok:
                raise ScheduleError(
                    f"schedule knob {name} = {value!r} has the wrong type "
                    f"(expected {'int or null' if name.endswith('tiles') else want.__name__})"
                )
        return Schedule(**d)

    @staticmethod
    def load(path: str | Path) -> Schedule:
        return Schedule.from_dict(read_json(path, "schedule", ScheduleError))

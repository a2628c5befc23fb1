"""Attention fused with its share of the O projection (``fuse_o``): no hop between them."""

from __future__ import annotations

from dataclasses import dataclass

from instructions.attention import Attention
from instructions.base import F32, ExecContext, Geometry, register
from vm.program import Range


@dataclass(frozen=True)
class AttnO(Attention):
    """The attention of KV group ``group`` (all positions, ``parts == 1``), then rows
    ``[r0, r1)`` of the O projection restricted to the group's columns, added into every
    buffer of ``dsts`` (accumulating writes: the KV groups' tasks of the same rows add in
    any order). ``matrix`` is the grouped view ``L{l}.wo_grp`` [kv_heads * hidden, G * D]
    (amk_tune/model/weights.py): its row ``group * hidden + r`` is row ``r`` of O over the
    group's columns. Every task of a group recomputes the group's attention: the price of
    starting the O rows without a hop. ``out`` is unused (the attention output stays in
    shared memory): empty."""

    op = "attn_o"
    matrix: str = ""
    r0: int = 0
    r1: int = 0
    dsts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.parts != 1 or not 1 <= len(self.dsts) <= 2 or not 0 <= self.r0 < self.r1:
            raise ValueError(f"attn_o: one KV partition (got {self.parts}), one or two targets "
                             f"(got {self.dsts}), rows r0 < r1 (got {self.r0}, {self.r1})")

    def _view_rows(self, geom: Geometry) -> tuple[int, int]:
        hidden = geom.weight_shapes[self.matrix][0] // self.kv_heads
        return self.group * hidden + self.r0, self.group * hidden + self.r1

    def accesses(self, geom: Geometry) -> tuple[list[Range], list[Range]]:
        reads, _ = super().accesses(geom)
        reads.append(geom.weight_rows(self.matrix, *self._view_rows(geom)))
        writes = [Range(d, self.r0 * F32, self.r1 * F32, accumulate=True) for d in self.dsts]
        return reads, writes

    def run(self, ctx: ExecContext, step: int) -> None:
        a = self.group_output(ctx, step)
        w = ctx.weight(self.matrix)
        hidden = w.shape[0] // self.kv_heads
        y = w[self.group * hidden + self.r0 : self.group * hidden + self.r1] @ a
        for dst in self.dsts:
            ctx.f32(dst)[self.r0 : self.r1] += y

    def to_args(self) -> dict:
        return super().to_args() | {"dsts": list(self.dsts)}


register(AttnO)

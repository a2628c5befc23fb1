"""Rows of a vector copied into other buffers, riding in a GEMV tile (``fuse_o``): the
starting values of the vectors that fused attention tasks then add into. The rows are
loaded with the tile's epilogue operands, in the prologue's one batch of loads, and
stored after its rows (instructions/cuda/gemv.cuh)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from instructions.base import F32, NESTED, ExecContext, Geometry, plain
from instructions.vec_source import VecSource
from vm.program import Range


@dataclass(frozen=True)
class RowCopy:
    """``dst[r0:r1] = src[r0:r1]`` for every ``dst`` of ``dsts`` (one or two)."""

    src: VecSource
    r0: int
    r1: int
    dsts: tuple[str, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.dsts) <= 2 or not 0 <= self.r0 < self.r1 <= self.src.n:
            raise ValueError(f"row copy of rows [{self.r0}, {self.r1}) of a {self.src.n}-vector "
                             f"into {self.dsts}: one or two targets, rows inside the vector")
        if self.src.kind == "attn_partials":
            raise ValueError("a row copy reads a plain vector or the embedding row, not "
                             "attention partials")

    def accesses(self, geom: Geometry) -> tuple[list[Range], list[Range]]:
        if self.src.kind == "buffer":
            reads = [Range(self.src.buffer, self.r0 * F32, self.r1 * F32)]
        else:
            reads = self.src.accesses(geom)
        return reads, [Range(d, self.r0 * F32, self.r1 * F32) for d in self.dsts]

    def apply(self, ctx: ExecContext, step: int) -> None:
        rows = self.src.load(ctx, step)[self.r0 : self.r1]
        for d in self.dsts:
            ctx.f32(d)[self.r0 : self.r1] = rows

    def to_args(self) -> dict[str, Any]:
        return {"src": plain(self.src), "r0": self.r0, "r1": self.r1, "dsts": list(self.dsts)}

    @staticmethod
    def from_args(args: dict) -> RowCopy:
        return RowCopy(VecSource.from_args(args["src"]), int(args["r0"]), int(args["r1"]),
                       tuple(args["dsts"]))


NESTED[("Gemv", "copy")] = lambda a: None if a is None else RowCopy.from_args(a)

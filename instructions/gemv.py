"""The GEMV tile: prologue (input vector, optional folded RMSNorm), dot products over the
tile's weight rows, fused epilogue. Every projection of the model is one of these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from instructions.base import NESTED, ExecContext, Geometry, Instruction, plain, register
from instructions.epilogues import Epilogue, Rows, decode_epilogue
from instructions.reference_math import rmsnorm
from instructions.row_copy import RowCopy
from instructions.vec_source import VecSource
from vm.program import Range

GEMV_DTYPES = ("bf16", "int8")


@dataclass(frozen=True)
class Gemv(Instruction):
    """``y = W[rows] @ norm?(src)`` then ``epilogue(y)``.

    ``matrix`` names a weight tensor [out, in]; ``rows`` are half-open row segments;
    ``norm`` names an RMSNorm weight folded into the prologue (each tile recomputes the
    norm of the whole input: hidden floats from L2 are cheaper than a grid-wide stage).

    ``dtype`` is how ``matrix`` is stored: ``bf16``, or ``int8`` codes (one byte each) with
    a float32 scale per row and ``group`` consecutive columns (``group`` = K: one scale per
    row) in buffer ``w.<matrix>.scale``. ``W`` is then ``float32(code) * scale``
    (amk_tune/model/quantise.py): the twin multiplies those values, which the context
    serves as the matrix; the CUDA side dequantises in registers. ``group`` is 0 for bf16.

    ``copy``: rows of another vector the tile also copies (``RowCopy``, ``fuse_o``).
    """

    op = "gemv"
    matrix: str
    rows: Rows
    src: VecSource
    norm: str | None
    epilogue: Epilogue
    dtype: str = "bf16"
    group: int = 0
    copy: RowCopy | None = None

    def __post_init__(self) -> None:
        if self.dtype not in GEMV_DTYPES:
            raise ValueError(f"gemv dtype {self.dtype!r} is not one of {GEMV_DTYPES}")
        if (self.dtype == "int8") != (self.group > 0):
            raise ValueError(f"gemv group {self.group!r}: int8 weights need a group > 0 "
                             "(columns per scale), bf16 weights take 0")

    def accesses(self, geom: Geometry) -> tuple[list[Range], list[Range]]:
        if self.dtype == "int8":
            reads = [r for a, b in self.rows
                     for r in geom.int8_rows(self.matrix, a, b, self.group)]
        else:
            reads = [geom.weight_rows(self.matrix, a, b) for a, b in self.rows]
        reads += self.src.accesses(geom)
        if self.norm is not None:
            reads.append(geom.weight_all(self.norm))
        ep_reads, ep_writes = self.epilogue.accesses(geom, self.rows)
        if self.copy is not None:
            cp_reads, cp_writes = self.copy.accesses(geom)
            ep_reads, ep_writes = ep_reads + cp_reads, ep_writes + cp_writes
        return reads + ep_reads, ep_writes

    def run(self, ctx: ExecContext, step: int) -> None:
        x = self.src.load(ctx, step)
        if self.norm is not None:
            x = rmsnorm(x, ctx.weight(self.norm), ctx.rms_eps())
        w = ctx.weight(self.matrix)
        y = np.concatenate([w[a:b] @ x for a, b in self.rows])
        self.epilogue.apply(ctx, step, self.rows, y)
        if self.copy is not None:
            self.copy.apply(ctx, step)

    def to_args(self) -> dict[str, Any]:
        args = {
            "matrix": self.matrix,
            "rows": [list(r) for r in self.rows],
            "src": plain(self.src),
            "norm": self.norm,
            "epilogue": self.epilogue.to_args(),
        }
        if self.dtype != "bf16":  # bf16 programs stay exactly what they were
            args |= {"dtype": self.dtype, "group": self.group}
        if self.copy is not None:
            args["copy"] = self.copy.to_args()
        return args


NESTED[("Gemv", "src")] = VecSource.from_args
NESTED[("Gemv", "epilogue")] = decode_epilogue
NESTED[("Gemv", "rows")] = lambda rows: tuple((int(a), int(b)) for a, b in rows)
register(Gemv)

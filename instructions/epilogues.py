"""What a GEMV tile does with its output rows: the fused epilogues of DESIGN.md.

A tile computes ``y = W[rows] @ x`` for its row segments (concatenated in order); the
epilogue stores ``y`` somewhere, possibly after RoPE, a residual add, SiLU-mul or a partial
argmax. Each epilogue declares the bytes it touches and has its NumPy twin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from amk_tune.model.weights import view_base
from instructions.base import (
    F32,
    INT8,
    ExecContext,
    Geometry,
    build_dataclass,
    field_names,
    plain,
    scale_buffer,
)
from instructions.reference_math import rope_pairs, silu
from instructions.vec_source import VecSource
from vm.program import Range

Rows = tuple[tuple[int, int], ...]


class Epilogue:
    kind: ClassVar[str]

    def accesses(self, geom: Geometry, rows: Rows) -> tuple[list[Range], list[Range]]:
        raise NotImplementedError

    def apply(self, ctx: ExecContext, step: int, rows: Rows, y: np.ndarray) -> None:
        raise NotImplementedError

    def to_args(self) -> dict[str, Any]:
        return {"kind": self.kind} | {
            name: plain(getattr(self, name)) for name in field_names(type(self))
        }


def _row_ranges(buffer: str, rows: Rows) -> list[Range]:
    return [Range(buffer, a * F32, b * F32) for a, b in rows]


@dataclass(frozen=True)
class Store(Epilogue):
    """``dst[r] = y_r`` for every row ``r`` of the tile (same index as the weight row)."""

    kind: ClassVar[str] = "store"
    dst: str

    def accesses(self, geom: Geometry, rows: Rows) -> tuple[list[Range], list[Range]]:
        return [], _row_ranges(self.dst, rows)

    def apply(self, ctx: ExecContext, step: int, rows: Rows, y: np.ndarray) -> None:
        out, i = ctx.f32(self.dst), 0
        for a, b in rows:
            out[a:b] = y[i : i + b - a]
            i += b - a


@dataclass(frozen=True)
class Residual(Epilogue):
    """``dst[r] = res[r] + y_r``: the O-projection / down-projection residual add. With
    ``copy``, the same rows go to buffer ``copy`` too: the starting value of a vector that
    ``SiluDown`` tiles then accumulate into (``fuse_down``)."""

    kind: ClassVar[str] = "residual"
    dst: str
    res: VecSource
    copy: str = ""

    def accesses(self, geom: Geometry, rows: Rows) -> tuple[list[Range], list[Range]]:
        writes = _row_ranges(self.dst, rows)
        if self.copy:
            writes += _row_ranges(self.copy, rows)
        return self.res.accesses(geom), writes

    def apply(self, ctx: ExecContext, step: int, rows: Rows, y: np.ndarray) -> None:
        res = self.res.load(ctx, step)
        outs, i = [ctx.f32(b) for b in (self.dst, self.copy) if b], 0
        for a, b in rows:
            for out in outs:
                out[a:b] = res[a:b] + y[i : i + b - a]
            i += b - a

    def to_args(self) -> dict[str, Any]:
        args = super().to_args()
        if not self.copy:  # programs without it stay exactly what they were
            del args["copy"]
        return args


@dataclass(frozen=True)
class SiluMul(Epilogue):
    """Rows ``[(r0, r1), (I + r0, I + r1)]`` of [gate; up]: ``dst[r] = silu(gate_r) * up_r``."""

    kind: ClassVar[str] = "silu_mul"
    dst: str

    def accesses(self, geom: Geometry, rows: Rows) -> tuple[list[Range], list[Range]]:
        (a, b), _ = rows
        return [], [Range(self.dst, a * F32, b * F32)]

    def apply(self, ctx: ExecContext, step: int, rows: Rows, y: np.ndarray) -> None:
        (a, b), _ = rows
        n = b - a
        ctx.f32(self.dst)[a:b] = silu(y[:n]) * y[n:]


@dataclass(frozen=True)
class SiluDown(Epilogue):
    """Rows ``[(r0, r1), (I + r0, I + r1)]`` of [gate; up], and the down projection of
    those intermediate rows fused after them (``fuse_down``): ``a = silu(gate) * up`` for
    the tile's rows, then ``dst += a @ down[r0:r1]`` over the whole ``dst`` vector, an
    accumulating write (atomic adds: every tile of the stage adds its part, in any order).
    ``down`` is the transposed down matrix ``L{l}.wd_t`` [I, hidden]: bf16, or int8 codes
    whose scales stay those of ``L{l}.wd`` (one per output row and ``group`` intermediate
    columns; amk_tune/model/weights.py), all read."""

    kind: ClassVar[str] = "silu_down"
    dst: str
    down: str
    dtype: str = "bf16"
    group: int = 0

    def accesses(self, geom: Geometry, rows: Rows) -> tuple[list[Range], list[Range]]:
        (a, b), _ = rows
        inter, hidden = geom.weight_shapes[self.down]
        writes = [Range(self.dst, 0, hidden * F32, accumulate=True)]
        if self.dtype == "bf16":
            return [geom.weight_rows(self.down, a, b)], writes
        base = view_base(self.down) or self.down
        return [Range(f"w.{self.down}", a * hidden * INT8, b * hidden * INT8),
                Range(scale_buffer(base), 0, hidden * (inter // self.group) * F32)], writes

    def to_args(self) -> dict[str, Any]:
        args = super().to_args()
        if self.dtype == "bf16":
            del args["dtype"], args["group"]
        return args

    def apply(self, ctx: ExecContext, step: int, rows: Rows, y: np.ndarray) -> None:
        (a, b), _ = rows
        n = b - a
        act = silu(y[:n]) * y[n:]
        ctx.f32(self.dst)[:] += act @ ctx.weight(self.down)[a:b]


@dataclass(frozen=True)
class QkvRope(Epilogue):
    """Rows of head ``head`` of [q; k; v], dims ``[p0, p1)`` and ``[D/2 + p0, D/2 + p1)``.

    Query heads get RoPE and go to ``q``; key heads get RoPE and are appended to
    ``k_cache`` [kv_heads, max_seq, D] at the step's position; value heads are appended
    to ``v_cache``. The append ranges carry a stride of one cache row per step.
    """

    kind: ClassVar[str] = "qkv_rope"
    head: int
    p0: int
    p1: int
    heads: int
    kv_heads: int
    head_dim: int
    max_seq: int
    q: str
    k_cache: str
    v_cache: str

    def _target(self) -> tuple[str, int, bool]:
        """(buffer, head index in it, apply RoPE)."""
        if self.head < self.heads:
            return self.q, self.head, True
        if self.head < self.heads + self.kv_heads:
            return self.k_cache, self.head - self.heads, True
        return self.v_cache, self.head - self.heads - self.kv_heads, False

    def accesses(self, geom: Geometry, rows: Rows) -> tuple[list[Range], list[Range]]:
        buf, h, _ = self._target()
        half, d = self.head_dim // 2, self.head_dim
        if buf == self.q:
            base, stride = h * d, 0
        else:
            base, stride = (h * self.max_seq + geom.position) * d, d * F32
        return [], [
            Range(buf, (base + o + self.p0) * F32, (base + o + self.p1) * F32, stride)
            for o in (0, half)
        ]

    def apply(self, ctx: ExecContext, step: int, rows: Rows, y: np.ndarray) -> None:
        buf, h, rotate = self._target()
        n, half, d = self.p1 - self.p0, self.head_dim // 2, self.head_dim
        lo, hi = y[:n], y[n:]
        pos = ctx.position(step)
        if rotate:
            cos, sin = ctx.rope(pos)
            lo, hi = rope_pairs(lo, hi, cos[self.p0 : self.p1], sin[self.p0 : self.p1])
        base = h * d if buf == self.q else (h * self.max_seq + pos) * d
        out = ctx.f32(buf)
        out[base + self.p0 : base + self.p1] = lo
        out[base + half + self.p0 : base + half + self.p1] = hi


@dataclass(frozen=True)
class QkvSpan(Epilogue):
    """RoPE pairs ``[f0, f1)`` of the flattened heads of [q; k; v] (pair ``f`` is dim
    ``f % (D/2)`` and ``D/2 + f % (D/2)`` of head ``f // (D/2)``), which may cross heads:
    the tile's rows are ``f0..f1`` and ``P + f0..P + f1`` of the halves view of the fused
    QKV matrix (amk_tune/model/weights.py, ``P = heads * D/2`` over all q, k and v heads).
    Each head's part is stored as ``QkvRope`` stores it.
    """

    kind: ClassVar[str] = "qkv_span"
    f0: int
    f1: int
    heads: int
    kv_heads: int
    head_dim: int
    max_seq: int
    q: str
    k_cache: str
    v_cache: str

    def parts(self) -> list[tuple[int, QkvRope]]:
        """(offset of the part's first pair in the tile, the part as one head's QkvRope)."""
        half, out = self.head_dim // 2, []
        for h in range(self.f0 // half, (self.f1 - 1) // half + 1):
            a, b = max(self.f0, h * half), min(self.f1, (h + 1) * half)
            out.append((a - self.f0, QkvRope(h, a - h * half, b - h * half, self.heads,
                                             self.kv_heads, self.head_dim, self.max_seq,
                                             self.q, self.k_cache, self.v_cache)))
        return out

    def accesses(self, geom: Geometry, rows: Rows) -> tuple[list[Range], list[Range]]:
        return [], [w for _, part in self.parts() for w in part.accesses(geom, rows)[1]]

    def apply(self, ctx: ExecContext, step: int, rows: Rows, y: np.ndarray) -> None:
        n = self.f1 - self.f0
        for o, part in self.parts():
            m = part.p1 - part.p0
            part.apply(ctx, step, rows, np.concatenate([y[o : o + m], y[n + o : n + o + m]]))


@dataclass(frozen=True)
class LogitsArgmax(Epilogue):
    """LM-head tile: ``logits[step, r] = y_r`` and ``part[tile] = (max, argmax)`` over the
    tile's rows (lowest index wins a tie, as torch.argmax)."""

    kind: ClassVar[str] = "logits_argmax"
    logits: str
    vocab: int
    part: str
    tile: int

    def accesses(self, geom: Geometry, rows: Rows) -> tuple[list[Range], list[Range]]:
        (a, b), = rows
        stride = self.vocab * F32
        return [], [
            Range(self.logits, a * F32, b * F32, stride),
            Range(self.part, 2 * self.tile * F32, 2 * (self.tile + 1) * F32),
        ]

    def apply(self, ctx: ExecContext, step: int, rows: Rows, y: np.ndarray) -> None:
        (a, b), = rows
        ctx.f32(self.logits)[step * self.vocab + a : step * self.vocab + b] = y
        best = int(np.argmax(y))
        ctx.f32(self.part)[2 * self.tile : 2 * self.tile + 2] = (y[best], a + best)


EPILOGUES: dict[str, type[Epilogue]] = {
    cls.kind: cls for cls in (Store, Residual, SiluMul, SiluDown, QkvRope, QkvSpan,
                              LogitsArgmax)
}


def decode_epilogue(args: dict[str, Any]) -> Epilogue:
    args = dict(args)
    kind = args.pop("kind", None)
    cls = EPILOGUES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown epilogue kind {kind!r}; known: {sorted(EPILOGUES)}")
    if "res" in args:
        args["res"] = VecSource.from_args(args["res"])
    return build_dataclass(cls, args)

"""The unfused forms of the prologue/epilogue work: one task for a whole vector each.

Lowering emits these only when a fusion knob is off (``fuse_norm``, ``fuse_rope``,
``fuse_residual``, ``fuse_silu``); each costs a dependent stage on the critical path, which
is exactly what the search should learn to avoid.
"""

from __future__ import annotations

from dataclasses import dataclass

from instructions.base import F32, NESTED, ExecContext, Geometry, Instruction, register
from instructions.reference_math import rmsnorm, rope_pairs, silu
from instructions.vec_source import VecSource
from vm.program import Range


@dataclass(frozen=True)
class RmsNorm(Instruction):
    """``dst[0:n] = rmsnorm(src) * weight``."""

    op = "rmsnorm"
    src: VecSource
    weight: str
    dst: str

    def accesses(self, geom: Geometry) -> tuple[list[Range], list[Range]]:
        reads = [*self.src.accesses(geom), geom.weight_all(self.weight)]
        return reads, [Range(self.dst, 0, self.src.n * F32)]

    def run(self, ctx: ExecContext, step: int) -> None:
        x = self.src.load(ctx, step)
        ctx.f32(self.dst)[: self.src.n] = rmsnorm(x, ctx.weight(self.weight), ctx.rms_eps())


@dataclass(frozen=True)
class RopeAppend(Instruction):
    """For KV group ``group``: RoPE on its query heads and key head from the raw [q; k; v]
    vector ``src``, queries to ``q``, key and value rows appended to the caches."""

    op = "rope_append"
    group: int
    heads: int
    kv_heads: int
    head_dim: int
    max_seq: int
    src: str
    q: str
    k_cache: str
    v_cache: str

    def _spans(self) -> tuple[range, int, int]:
        g = self.heads // self.kv_heads
        return range(self.group * g, (self.group + 1) * g), self.heads + self.group, (
            self.heads + self.kv_heads + self.group
        )

    def accesses(self, geom: Geometry) -> tuple[list[Range], list[Range]]:
        d = self.head_dim
        qs, kh, vh = self._spans()
        reads = [
            Range(self.src, qs.start * d * F32, qs.stop * d * F32),
            Range(self.src, kh * d * F32, (kh + 1) * d * F32),
            Range(self.src, vh * d * F32, (vh + 1) * d * F32),
        ]
        row = (self.group * self.max_seq + geom.position) * d * F32
        writes = [
            Range(self.q, qs.start * d * F32, qs.stop * d * F32),
            Range(self.k_cache, row, row + d * F32, stride=d * F32),
            Range(self.v_cache, row, row + d * F32, stride=d * F32),
        ]
        return reads, writes

    def run(self, ctx: ExecContext, step: int) -> None:
        d, half = self.head_dim, self.head_dim // 2
        pos = ctx.position(step)
        cos, sin = ctx.rope(pos)
        src = ctx.f32(self.src)
        qs, kh, vh = self._spans()

        def rotated(head: int):
            v = src[head * d : (head + 1) * d]
            lo, hi = rope_pairs(v[:half], v[half:], cos, sin)
            return lo, hi

        q = ctx.f32(self.q)
        for h in qs:
            q[h * d : h * d + half], q[h * d + half : (h + 1) * d] = rotated(h)
        row = (self.group * self.max_seq + pos) * d
        k = ctx.f32(self.k_cache)
        k[row : row + half], k[row + half : row + d] = rotated(kh)
        ctx.f32(self.v_cache)[row : row + d] = src[vh * d : (vh + 1) * d]


@dataclass(frozen=True)
class ResidualAdd(Instruction):
    """``dst[0:n] = res + src[0:n]`` (``n = res.n``)."""

    op = "residual_add"
    res: VecSource
    src: str
    dst: str

    def accesses(self, geom: Geometry) -> tuple[list[Range], list[Range]]:
        n = self.res.n * F32
        return [*self.res.accesses(geom), Range(self.src, 0, n)], [Range(self.dst, 0, n)]

    def run(self, ctx: ExecContext, step: int) -> None:
        n = self.res.n
        ctx.f32(self.dst)[:n] = self.res.load(ctx, step) + ctx.f32(self.src)[:n]


@dataclass(frozen=True)
class SiluMulVec(Instruction):
    """``dst[0:n] = silu(src[0:n]) * src[n:2n]`` over the raw [gate; up] vector."""

    op = "silu_mul"
    n: int
    src: str
    dst: str

    def accesses(self, geom: Geometry) -> tuple[list[Range], list[Range]]:
        return [Range(self.src, 0, 2 * self.n * F32)], [Range(self.dst, 0, self.n * F32)]

    def run(self, ctx: ExecContext, step: int) -> None:
        src = ctx.f32(self.src)
        ctx.f32(self.dst)[: self.n] = silu(src[: self.n]) * src[self.n : 2 * self.n]


for _cls in (RmsNorm, ResidualAdd):
    NESTED[(_cls.__name__, "res" if _cls is ResidualAdd else "src")] = VecSource.from_args
for _cls in (RmsNorm, RopeAppend, ResidualAdd, SiluMulVec):
    register(_cls)

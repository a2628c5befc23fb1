"""Decode attention for one KV head's group of query heads, over one KV partition."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from instructions.base import F32, ExecContext, Geometry, Instruction, register
from instructions.reference_math import attend, attend_partial
from vm.program import Range


@dataclass(frozen=True)
class Attention(Instruction):
    """Query heads ``[group * G, (group + 1) * G)`` (``G = heads / kv_heads``) attend over
    cache rows ``0 .. position`` of KV head ``group``.

    With ``parts == 1`` the normalised output goes to ``out[h * D : (h + 1) * D]``. With
    ``parts > 1`` this task covers partition ``part`` of the positions (``ceil(n / parts)``
    rows each) and writes flash-decoding partials ``out[h, part] = (max, sum, acc[D])``;
    the consuming GEMV merges them (VecSource ``attn_partials``).

    The read of the cache is declared over every row this launch can see
    (``0 .. position + steps - 1``): the exact prefix grows with the step.
    """

    op = "attention"
    group: int
    part: int
    parts: int
    heads: int
    kv_heads: int
    head_dim: int
    max_seq: int
    q: str
    k_cache: str
    v_cache: str
    out: str

    @property
    def q_heads(self) -> range:
        g = self.heads // self.kv_heads
        return range(self.group * g, (self.group + 1) * g)

    def accesses(self, geom: Geometry) -> tuple[list[Range], list[Range]]:
        d = self.head_dim
        hs = self.q_heads
        row0 = self.group * self.max_seq * d * F32
        # every row the whole launch may read: declared once, valid for every step
        seen = (geom.position + geom.steps) * d * F32
        reads = [
            Range(self.q, hs.start * d * F32, hs.stop * d * F32),
            Range(self.k_cache, row0, row0 + seen),
            Range(self.v_cache, row0, row0 + seen),
        ]
        if self.parts == 1:
            writes = [Range(self.out, hs.start * d * F32, hs.stop * d * F32)]
        else:
            w = d + 2
            writes = [
                Range(self.out, ((h * self.parts + self.part) * w) * F32,
                      ((h * self.parts + self.part + 1) * w) * F32)
                for h in hs
            ]
        return reads, writes

    def _cache(self, ctx: ExecContext, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(K, V) rows ``0 .. position`` of the group's caches."""
        d, n = self.head_dim, ctx.position(step) + 1
        cache = slice(self.group * self.max_seq * d, (self.group * self.max_seq + n) * d)
        return (ctx.f32(self.k_cache)[cache].reshape(n, d),
                ctx.f32(self.v_cache)[cache].reshape(n, d))

    def group_output(self, ctx: ExecContext, step: int) -> np.ndarray:
        """The normalised outputs of the group's query heads over every position, [G * D]."""
        d = self.head_dim
        k, v = self._cache(ctx, step)
        q = ctx.f32(self.q)
        return np.concatenate([attend(q[h * d : (h + 1) * d], k, v, 1.0 / math.sqrt(d))
                               for h in self.q_heads])

    def run(self, ctx: ExecContext, step: int) -> None:
        d, n = self.head_dim, ctx.position(step) + 1
        k, v = self._cache(ctx, step)
        q, out = ctx.f32(self.q), ctx.f32(self.out)
        scale = 1.0 / math.sqrt(d)
        if self.parts == 1:
            hs = self.q_heads
            out[hs.start * d : hs.stop * d] = self.group_output(ctx, step)
            return
        chunk = -(-n // self.parts)
        lo, hi = min(n, self.part * chunk), min(n, (self.part + 1) * chunk)
        w = d + 2
        for h in self.q_heads:
            m, s, acc = attend_partial(q[h * d : (h + 1) * d], k[lo:hi], v[lo:hi], scale)
            base = (h * self.parts + self.part) * w
            out[base : base + w] = np.concatenate([[m, s], acc]).astype(np.float32)


register(Attention)

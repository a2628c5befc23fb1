"""Where a GEMV (or a norm) gets its input vector: a prologue that the CUDA side loads into
shared memory before the dot products, and the NumPy twin loads into a float32 array."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from instructions.base import F32, I32, ExecContext, Geometry, build_dataclass
from instructions.reference_math import combine_partials
from vm.program import Range

KINDS = ("buffer", "embed", "attn_partials")


@dataclass(frozen=True)
class VecSource:
    """``kind``:

    - ``buffer``: fp32 ``buffer[0:n]``;
    - ``embed``: row ``tokens[step]`` of the embedding table (``n`` = hidden): the token is
      read from the ``tokens`` buffer at run time, so the whole table is declared read;
    - ``attn_partials``: split-KV partials ``buffer[heads, parts, head_dim + 2]`` merged
      into ``n = heads * head_dim`` outputs (flash-decoding combine).
    """

    kind: str
    n: int
    buffer: str = ""
    parts: int = 1
    head_dim: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"vector source kind {self.kind!r} is not one of {KINDS}")

    def accesses(self, geom: Geometry) -> list[Range]:
        if self.kind == "embed":
            return [Range("tokens", 0, I32, stride=I32), geom.weight_all("embed")]
        if self.kind == "attn_partials":
            heads = self.n // self.head_dim
            return [Range(self.buffer, 0, heads * self.parts * (self.head_dim + 2) * F32)]
        return [Range(self.buffer, 0, self.n * F32)]

    def load(self, ctx: ExecContext, step: int) -> np.ndarray:
        if self.kind == "embed":
            token = int(ctx.i32("tokens")[step])
            return ctx.weight("embed")[token].astype(np.float32)
        if self.kind == "attn_partials":
            heads = self.n // self.head_dim
            raw = ctx.f32(self.buffer)[: heads * self.parts * (self.head_dim + 2)]
            parts = raw.reshape(heads, self.parts, self.head_dim + 2)
            return np.concatenate([combine_partials(parts[h]) for h in range(heads)])
        return ctx.f32(self.buffer)[: self.n].copy()

    @staticmethod
    def from_args(args: dict) -> VecSource:
        return build_dataclass(VecSource, args)

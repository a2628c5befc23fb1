"""Greedy sampling: the step's token from the LM head, fed to the next step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from instructions.base import F32, I32, ExecContext, Geometry, Instruction, register
from vm.program import Range


@dataclass(frozen=True)
class Argmax(Instruction):
    """Writes ``out_tokens[step]`` = argmax of the step's logits (lowest index on ties) and,
    unless the host forced it (a prompt token), ``tokens[step + 1]``.

    ``tiles > 0``: reduce the LM-head tiles' ``(max, index)`` partials in ``src``;
    ``tiles == 0``: scan the full ``vocab`` logits of the step in ``src``.
    """

    op = "argmax"
    src: str
    tiles: int
    vocab: int

    def accesses(self, geom: Geometry) -> tuple[list[Range], list[Range]]:
        if self.tiles:
            read = Range(self.src, 0, 2 * self.tiles * F32)
        else:
            read = Range(self.src, 0, self.vocab * F32, stride=self.vocab * F32)
        writes = [
            Range("out_tokens", 0, I32, stride=I32),
            Range("tokens", I32, 2 * I32, stride=I32),
        ]
        return [read], writes

    def run(self, ctx: ExecContext, step: int) -> None:
        src = ctx.f32(self.src)
        if self.tiles:
            part = src[: 2 * self.tiles].reshape(self.tiles, 2)
            # max value, then lowest index among equal maxima
            best = np.flatnonzero(part[:, 0] == part[:, 0].max())
            token = int(part[best, 1].min())
        else:
            token = int(np.argmax(src[step * self.vocab : (step + 1) * self.vocab]))
        ctx.i32("out_tokens")[step] = token
        if not ctx.forced(step + 1):
            ctx.i32("tokens")[step + 1] = token


register(Argmax)

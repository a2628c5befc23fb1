"""The step's token: published by block 0 at the start of every step."""

from __future__ import annotations

from dataclasses import dataclass

from instructions.base import I32, ExecContext, Geometry, Instruction, register
from vm.program import Range


@dataclass(frozen=True)
class Token(Instruction):
    """Makes ``tokens[step]`` visible to the layer-0 consumers (its signal is the point).

    ``tokens[step]`` was written by the host (a prompt token) or by the previous step's
    ``argmax`` on the same block, which program order puts before this task.
    """

    op = "token"

    def accesses(self, geom: Geometry) -> tuple[list[Range], list[Range]]:
        return [Range("tokens", 0, I32, stride=I32)], []

    def run(self, ctx: ExecContext, step: int) -> None:
        token = int(ctx.i32("tokens")[step])
        if token < 0:
            raise ValueError(f"token of step {step} was never written ({token})")


register(Token)

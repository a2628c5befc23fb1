"""Property 2, co-resident: every block of the grid is resident at once.

A persistent kernel whose blocks are not all resident can spin forever: a resident block
waits on a counter that only a block still queued behind it would signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from amk_tune.targets import Target
from validator.verdict import CO_RESIDENT, Violation, capped
from vm.program import Program


@dataclass(frozen=True)
class Limits:
    """The facts about a GPU that co-residency needs (a program's ``target`` object)."""

    name: str
    sms: int
    smem_per_sm: int
    smem_per_block: int
    max_threads_per_sm: int
    max_blocks_per_sm: int

    @staticmethod
    def of_target(target: Target) -> Limits:
        return Limits(target.name, target.sms, target.smem_per_sm, target.smem_per_block,
                      target.max_threads_per_sm, target.max_blocks_per_sm)

    @staticmethod
    def of_program(target: dict[str, Any]) -> Limits:
        """A well-formed program's own ``target`` object (authoritative when present)."""
        return Limits(str(target.get("name", "program target")), target["sms"],
                      target["smem_per_sm"], target["smem_per_block"],
                      target["max_threads_per_sm"], target["max_blocks_per_sm"])


def co_resident_violations(program: Program, limits: Limits) -> list[Violation]:
    """Every co-residency failure of a well-formed ``program`` on ``limits``."""
    launch = program.launch
    gpu = f"{limits.name} ({limits.sms} SMs)"
    found: list[Violation] = []

    def fail(message: str, *tasks: str) -> None:
        found.append(Violation(CO_RESIDENT, tasks, message))

    if launch.blocks > limits.sms * launch.blocks_per_sm:
        fail(f"{launch.blocks} blocks do not fit on {gpu} at {launch.blocks_per_sm} block(s) "
             f"per SM (at most {limits.sms * launch.blocks_per_sm}): use fewer blocks or more "
             "blocks per SM")
    if launch.blocks_per_sm > limits.max_blocks_per_sm:
        fail(f"blocks_per_sm = {launch.blocks_per_sm} exceeds {limits.name}'s limit of "
             f"{limits.max_blocks_per_sm} blocks per SM")
    if launch.blocks_per_sm * launch.threads > limits.max_threads_per_sm:
        fail(f"{launch.blocks_per_sm} block(s) per SM x {launch.threads} threads = "
             f"{launch.blocks_per_sm * launch.threads} threads exceeds {limits.name}'s "
             f"{limits.max_threads_per_sm} per SM: use fewer threads or blocks per SM")
    if launch.blocks_per_sm * launch.smem_bytes > limits.smem_per_sm:
        fail(f"{launch.blocks_per_sm} block(s) per SM x {launch.smem_bytes} bytes of shared "
             f"memory exceeds {limits.name}'s {limits.smem_per_sm} bytes per SM")
    if launch.smem_bytes > limits.smem_per_block:
        fail(f"launch.smem_bytes = {launch.smem_bytes} exceeds {limits.name}'s "
             f"{limits.smem_per_block} bytes per block")
    per_task = [
        Violation(CO_RESIDENT, (t.id,), f"task {t.id!r} needs {t.smem_bytes} bytes of shared "
                  f"memory but the launch gives a block {launch.smem_bytes}: raise "
                  "launch.smem_bytes or shrink the task's tile")
        for q in program.queues for t in q if t.smem_bytes > launch.smem_bytes
    ]
    return found + capped(CO_RESIDENT, per_task, "tasks over the launch's shared memory")

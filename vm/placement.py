"""SM assignment: which block runs each task of a stage.

Queues keep stage order (tasks of stage k before those of stage k+1 in every block), which
together with lowering's "wait only on earlier stages" rule makes every placement
deadlock-free. The ``token`` stage is pinned to block 0 first and ``argmax`` to block 0 last:
block 0's program order carries the token from one step to the next.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vm.lowering import Draft, Stage

PINNED = ("token", "argmax")


def place(stages: list[Stage], blocks: int, policy: str) -> list[list[Draft]]:
    queues: list[list[Draft]] = [[] for _ in range(blocks)]
    cursor = 0
    for stage in stages:
        n = len(stage.tasks)
        if stage.name in PINNED:
            queues[0].extend(stage.tasks)
            continue
        for i, task in enumerate(stage.tasks):
            if policy == "round_robin":
                b = i % blocks
            elif policy == "blocked":
                b = i * blocks // n
            else:  # rotate
                b = (cursor + i) % blocks
            queues[b].append(task)
        cursor = (cursor + n) % blocks
    return queues

"""Static facts about a lowered program that users and the search care about."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from vm.program import Program


@dataclass(frozen=True)
class ProgramStats:
    tasks_per_step: int
    tasks_by_op: dict[str, int]
    critical_stages: int  # dependent counter hops on the longest chain of one step
    weight_bytes: int  # declared weight bytes read per step (the embedding row excluded)
    busiest_block_tasks: int
    idle_blocks: int


def critical_stages(program: Program) -> int:
    """Longest chain of counter dependencies within one step.

    A task's depth is 1 + the deepest producer of any counter it waits on; program order
    inside a block does not add a hop. This counts the cross-block hand-offs (~0.9 us each
    on H100/H200) a step pays at least once in sequence.
    """
    producers: dict[str, list[str]] = {}
    for _, _, t in program.tasks():
        for s in t.signal:
            producers.setdefault(s.counter, []).append(t.id)
    by_id = {t.id: t for _, _, t in program.tasks()}
    depth: dict[str, int] = {}

    def visit(tid: str) -> int:
        # iterative DFS: programs of big models are deeper than Python's recursion limit
        stack = [(tid, False)]
        while stack:
            node, expanded = stack.pop()
            if node in depth:
                continue
            deps = [p for w in by_id[node].wait for p in producers.get(w.counter, [])]
            if expanded:
                depth[node] = 1 + max((depth[p] for p in deps), default=0)
                continue
            stack.append((node, True))
            stack.extend((p, False) for p in deps if p not in depth)
        return depth[tid]

    return max((visit(t) for t in by_id), default=0)


def program_stats(program: Program) -> ProgramStats:
    ops = Counter(t.op for _, _, t in program.tasks())
    sizes = [len(q) for q in program.queues]
    return ProgramStats(
        tasks_per_step=program.task_count,
        tasks_by_op=dict(ops),
        critical_stages=critical_stages(program),
        weight_bytes=weight_bytes(program),
        busiest_block_tasks=max(sizes, default=0),
        idle_blocks=sum(1 for n in sizes if n == 0),
    )


def weight_bytes(program: Program) -> int:
    """Distinct weight bytes one step reads: the union of the declared weight ranges, with
    the embedding table counted as one row when it is only looked up (the tied LM head
    streams it whole)."""
    spans: dict[str, list[tuple[int, int]]] = {}
    lookup_row = 0
    for _, _, t in program.tasks():
        for r in t.read:
            if not r.buffer.startswith("w."):
                continue
            if r.buffer == "w.embed" and t.args.get("matrix") != "embed":
                lookup_row = (r.end - r.begin) // program.extra["model"]["vocab"]
                continue
            spans.setdefault(r.buffer, []).append((r.begin, r.end))
    total = 0
    for ranges in spans.values():
        end = -1
        for a, b in sorted(ranges):
            total += max(0, b - max(a, end))
            end = max(end, b)
    return total + (lookup_row if "w.embed" not in spans else 0)

"""A well-formed program with every name resolved to an integer id: what the semantic
checks (deadlock, happens-before, races) walk."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vm.program import Program

RANGE_COLUMNS = ("task", "buffer", "begin", "end", "stride", "write")
# column "write": what the access is
READ, WRITE, ACCUMULATE = 0, 1, 2


@dataclass(frozen=True)
class IndexedProgram:
    """Tasks are numbered queue by queue: task ``g`` is ``queues[block[g]][index[g]]``.

    An *execution* is one task in one step; on its block it sits at *position*
    ``step * len(queue) + index``, so a block's positions run in program order across steps.
    """

    blocks: int
    steps: int
    queue_len: tuple[int, ...]
    first: tuple[int, ...]  # global number of each queue's first task
    ids: tuple[str, ...]
    block: tuple[int, ...]
    index: tuple[int, ...]
    waits: tuple[tuple[tuple[int, int], ...], ...]  # per task: (counter, value)
    signals: tuple[tuple[tuple[int, int], ...], ...]  # per task: (counter, add)
    # one row per access, RANGE_COLUMNS, by task; reads only of buffers something writes
    # (the others cannot race)
    ranges: np.ndarray
    counter_names: tuple[str, ...]
    per_step: tuple[int, ...]
    buffer_names: tuple[str, ...]
    buffer_bytes: tuple[int, ...]

    @property
    def tasks(self) -> int:
        return len(self.ids)

    def label(self, task: int, step: int) -> str:
        """A task execution as a user reads it."""
        return f"{self.ids[task]!r} (step {step})" if self.steps > 1 else repr(self.ids[task])

    @staticmethod
    def of(program: Program) -> IndexedProgram:
        """Index a program that ``well_formed_violations`` accepted."""
        counter_id = {name: i for i, name in enumerate(program.counters)}
        buffer_id = {name: i for i, name in enumerate(program.buffers)}
        tasks = [(b, i, t) for b, q in enumerate(program.queues) for i, t in enumerate(q)]
        written = {r.buffer for _, _, t in tasks for r in t.write}
        flat: list[int] = []
        for g, (_, _, t) in enumerate(tasks):
            for r in t.read:
                if r.buffer in written:
                    flat += (g, buffer_id[r.buffer], r.begin, r.end, r.stride, READ)
            for r in t.write:
                kind = ACCUMULATE if r.accumulate else WRITE
                flat += (g, buffer_id[r.buffer], r.begin, r.end, r.stride, kind)

        first, n = [], 0
        for q in program.queues:
            first.append(n)
            n += len(q)
        return IndexedProgram(
            blocks=len(program.queues),
            steps=program.steps,
            queue_len=tuple(len(q) for q in program.queues),
            first=tuple(first),
            ids=tuple(t.id for _, _, t in tasks),
            block=tuple(b for b, _, _ in tasks),
            index=tuple(i for _, i, _ in tasks),
            waits=tuple(tuple((counter_id[w.counter], w.value) for w in t.wait)
                        for _, _, t in tasks),
            signals=tuple(tuple((counter_id[s.counter], s.add) for s in t.signal)
                          for _, _, t in tasks),
            ranges=np.asarray(flat, dtype=np.int64).reshape(-1, len(RANGE_COLUMNS)),
            counter_names=tuple(program.counters),
            per_step=tuple(program.counters.values()),
            buffer_names=tuple(program.buffers),
            buffer_bytes=tuple(program.buffers.values()),
        )

"""The greedy run: start any block whose next task's waits all pass, until none can.

Counters only grow and a wait only asks for "at least", so running a task never disables
another block's next task. The reachable states of a program are therefore closed under
the per-block maximum (replay one run's moves after another's: every wait sees at least
the counts it saw before), and the greedy run reaches the one maximal state, whatever
order it picks. Hence:

- the program is deadlock-free exactly when the greedy run finishes every step of every
  queue, and an execution can start in some interleaving exactly when the run starts it;
- the run's order is one real interleaving, so it is a topological order of
  happens-before, and what it shows possible (a signal arriving before a wait) is possible.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from validator.indexed import IndexedProgram


@dataclass(frozen=True)
class GreedyRun:
    """Executions (task, step) in the order the run started them; arrays by that order.

    ``wait_*`` list every wait of every execution in the same order (``wait_start[t]`` is
    where execution ``t``'s waits begin); ``wait_seen`` is the counter's value when the
    execution started, at least its ``wait_threshold``.
    """

    task: np.ndarray
    step: np.ndarray
    block: np.ndarray
    pos: np.ndarray
    done: tuple[int, ...]  # per block: positions completed
    counters: tuple[int, ...]  # final counter values
    wait_start: np.ndarray
    wait_counter: np.ndarray
    wait_threshold: np.ndarray
    wait_seen: np.ndarray

    @property
    def executions(self) -> int:
        return len(self.task)


def greedy_run(ip: IndexedProgram) -> GreedyRun:
    steps, per_step, first = ip.steps, ip.per_step, ip.first
    waits, signals = ip.waits, ip.signals
    value = [0] * len(per_step)
    parked: list[list[tuple[int, int]]] = [[] for _ in per_step]  # per counter: (need, block)
    head = [0] * ip.blocks
    ready = [b for b in range(ip.blocks) if ip.queue_len[b]]
    trace: list[int] = []  # task * steps + step, in start order
    w_counter: list[int] = []
    w_need: list[int] = []
    w_seen: list[int] = []
    w_count: list[int] = []
    while ready:
        b = ready.pop()
        n, base = ip.queue_len[b], first[b]
        end = n * steps
        p = head[b]
        while p < end:
            s, i = divmod(p, n)
            g = base + i
            blocked = False
            for c, v in waits[g]:
                need = s * per_step[c] + v
                if value[c] < need:
                    heapq.heappush(parked[c], (need, b))
                    blocked = True
                    break
            if blocked:
                break
            trace.append(g * steps + s)
            w_count.append(len(waits[g]))
            for c, v in waits[g]:
                w_counter.append(c)
                w_need.append(s * per_step[c] + v)
                w_seen.append(value[c])
            for c, add in signals[g]:
                value[c] += add
                heap = parked[c]
                while heap and heap[0][0] <= value[c]:
                    ready.append(heapq.heappop(heap)[1])
            p += 1
        head[b] = p
    code = np.asarray(trace, dtype=np.int64)
    task = (code // steps).astype(np.int32)
    step = (code % steps).astype(np.int32)
    qlen = np.asarray(ip.queue_len, dtype=np.int32)
    block = np.asarray(ip.block, dtype=np.int32)[task]
    pos = step * qlen[block] + np.asarray(ip.index, dtype=np.int32)[task]
    wait_start = np.zeros(len(trace) + 1, dtype=np.int64)
    np.cumsum(np.asarray(w_count, dtype=np.int64), out=wait_start[1:])
    return GreedyRun(
        task=task, step=step, block=block, pos=pos.astype(np.int32), done=tuple(head),
        counters=tuple(value), wait_start=wait_start,
        wait_counter=np.asarray(w_counter, dtype=np.int32),
        wait_threshold=np.asarray(w_need, dtype=np.int64),
        wait_seen=np.asarray(w_seen, dtype=np.int64),
    )

"""The greedy run's signal executions, indexed per counter for the happens-before rule."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from validator.greedy import GreedyRun
from validator.indexed import IndexedProgram


@dataclass(frozen=True)
class CounterSignals:
    """The signal executions of one counter (a task signalling it twice counts once, with
    the adds summed). Entries are grouped by block, each group in program order (which
    is run order on one block); ``trace_*`` lists the same entries in run order."""

    exec: np.ndarray  # per entry: the execution
    pos: np.ndarray  # per entry: its position on its block
    running: np.ndarray  # prefix sums of the entries' adds (one longer)
    start: np.ndarray  # group g is entries start[g]:start[g + 1]
    block: np.ndarray  # per group: its block
    keys: np.ndarray  # group * span + pos, sorted: per-group searches in one call
    span: int
    exec_keys: np.ndarray  # group * exec_span + exec, sorted
    exec_span: int
    trace_exec: np.ndarray
    unit: bool  # every add is 1

    @property
    def groups(self) -> int:
        return len(self.start) - 1

    def below(self, limit: np.ndarray) -> np.ndarray:
        """Per group: how many of its entries sit at positions below ``limit[group]``."""
        q = np.arange(self.groups, dtype=np.int64) * self.span + np.minimum(limit, self.span - 1)
        return np.searchsorted(self.keys, q) - self.start[:-1]

    def cut(self, t: int, never: int) -> np.ndarray:
        """Per group: the position of its first entry started after execution ``t`` in the
        run (``never`` when there is none)."""
        q = np.arange(self.groups, dtype=np.int64) * self.exec_span + t
        idx = np.searchsorted(self.exec_keys, q, side="right")
        inside = idx < self.start[1:]
        return np.where(inside, self.pos[np.minimum(idx, len(self.pos) - 1)], never)

    def entries(self, count: np.ndarray) -> np.ndarray:
        """The first ``count[g]`` entries of every group, as entry indices."""
        first = np.repeat(self.start[:-1], count)
        return first + np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)


def index_signals(ip: IndexedProgram, run: GreedyRun) -> list[CounterSignals | None]:
    """Per counter, its signal executions in the run (None when nothing signalled it)."""
    # per task, its signals with the adds to one counter summed
    rows: list[tuple[int, int, int]] = []
    for g, sigs in enumerate(ip.signals):
        merged: dict[int, int] = {}
        for c, add in sigs:
            merged[c] = merged.get(c, 0) + add
        rows += ((g, c, add) for c, add in merged.items())
    table = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
    first = np.searchsorted(table[:, 0], np.arange(ip.tasks + 1))
    count = (first[1:] - first[:-1])[run.task]
    execs = np.repeat(np.arange(run.executions, dtype=np.int64), count)
    row = first[run.task][execs] + np.arange(len(execs)) - np.repeat(np.cumsum(count) - count,
                                                                      count)
    counters, adds = table[row, 1], table[row, 2]
    bl = run.block[execs].astype(np.int64)
    order = np.lexsort((execs, bl, counters))
    ex, co, ad, bl = execs[order], counters[order], adds[order], bl[order]
    ps = run.pos[ex].astype(np.int64)
    bounds = np.searchsorted(co, np.arange(len(ip.per_step) + 1))
    span = int(ps.max(initial=0)) + 2
    exec_span = run.executions + 1
    out: list[CounterSignals | None] = []
    for c in range(len(ip.per_step)):
        lo, hi = int(bounds[c]), int(bounds[c + 1])
        if lo == hi:
            out.append(None)
            continue
        e, a, b, p = ex[lo:hi], ad[lo:hi], bl[lo:hi], ps[lo:hi]
        new = np.ones(len(e), dtype=bool)
        new[1:] = b[1:] != b[:-1]
        start = np.append(np.flatnonzero(new), len(e))
        rank = np.cumsum(new) - 1
        running = np.zeros(len(e) + 1, dtype=np.int64)
        np.cumsum(a, out=running[1:])
        out.append(CounterSignals(e, p, running, start, b[start[:-1]], rank * span + p, span,
                                  rank * exec_span + e, exec_span, np.sort(e),
                                  bool((a == 1).all())))
    return out

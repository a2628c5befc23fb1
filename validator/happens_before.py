"""Happens-before over task executions, as vector clocks.

X happens before Y when, in every interleaving, Y cannot start until X has ended. Two
sources, both sound:

- program order: a block runs its queue in order, step after step;
- a wait that no combination of other signals could satisfy without X's signal.

The signal rule. Y's wait ``(c, v)`` in step ``s`` passes when ``c >= T = s * per_step + v``.
The *candidates* are the signal executions to ``c`` that could have ended before Y starts:
all but those known to happen after Y (Y itself, its successors in program order, and,
the multi-step subtlety, next steps' signals only where something orders them after Y:
a block with nothing holding it back runs ahead and signals early). If an execution A (a
producer or not) has not ended, no candidate that happens after A has either, so the
counter is at most the sum of the candidates whose clocks do not show A. When that is
below ``T``, A happens before Y. For A a producer this is "no combination of other
signals could satisfy the wait without A's"; a partial wait on a shared counter does not
say which producer finished. Sorting the candidates by their clock entry for block b, A
can be as late on b as the entry at which their running total first reaches T: a
weighted quantile per block. When the candidates add up to exactly T (every full wait
whose producers cannot run ahead: all of real lowering), all of them are necessary and
the quantile is the join of their clocks.

Computing it takes two sweeps over the greedy run (greedy.py), a real interleaving and so
a topological order of happens-before:

- backward, the *after* clocks: ``after[t, b]`` is the first position of block b known to
  start after t ends. Every edge out of t points to a later execution, so when t is
  reached its after clock is complete, and with it the candidates of t's waits (what is
  not after t): their necessary producers get edges out of them, to be collected when the
  sweep reaches them. A full wait adds its after clock to a running minimum per counter
  that every earlier signal of the counter takes in: one vector op, whatever the fan-in.
- forward, the clocks ``clock[t, b]``: the highest position of block b known to have ended
  before t starts (``clock[t, block[t]] = pos[t]``, the clock after t). Full waits take the
  running join of the counter's earlier signals (one vector op again); other waits the
  positions their quantile implied in the backward sweep.

Both sweeps are sound by induction along the run: the backward one from the end (the
edges into later executions are sound, so t's after clock is true, so are its candidates
and its edges), the forward one from the start. The quantile needs the candidates'
clocks: it takes the previous round's (true facts), program order's alone in the first
round. When some wait was not full, rounds repeat, only ever adding facts, until the
clocks stop changing (or ``MAX_ROUNDS``: still sound, perhaps less precise).

A real lowering takes a shorter road: guess that every wait is full (its candidates are
the signals the run started before it), run the forward sweep alone, and check the guess
against the clocks it gave (``_optimistic``); only if that fails do the rounds run.

Precision: against the exact happens-before of the maximal-state oracle, this orders all
but a few pairs in ten thousand of random programs, and misses none in real lowerings and
their mutants. What it misses are circular justifications: two partial waits each of
which some third signal, or the other, could satisfy (the validator then reports a race
that no interleaving has: a false reject, counted in BENCHMARKS.md, never a false accept).
"""

from __future__ import annotations

import numpy as np

from validator.greedy import GreedyRun
from validator.indexed import IndexedProgram
from validator.signals import CounterSignals, index_signals

MAX_ROUNDS = 6
_NEVER = np.iinfo(np.int32).max  # an after-clock entry: no position known to be after


def _quantile(rows: np.ndarray, adds: np.ndarray, threshold: int, unit: bool) -> np.ndarray:
    """Per column: the value at which the running total of ``adds``, taken in increasing
    order of the column, first reaches ``threshold`` (``rows`` is scratch)."""
    if unit:
        rows.partition(threshold - 1, axis=0)
        return rows[threshold - 1].copy()
    order = np.argsort(rows, axis=0, kind="stable")
    first = (np.cumsum(adds[order], axis=0) < threshold).sum(axis=0)
    cols = np.arange(rows.shape[1])
    return rows[order[first, cols], cols]


class HappensBefore:
    """``clock[t, b]``: the highest position of block ``b`` known to have ended before
    execution ``t`` starts (own block: ``pos[t]``); -1: none."""

    def __init__(self, ip: IndexedProgram, run: GreedyRun) -> None:
        self.ip, self.run = ip, run
        self.block, self.pos = run.block, run.pos
        e = run.executions
        order = np.argsort(run.block, kind="stable")  # by block, then position
        prev = np.full(e, -1, dtype=np.int64)
        nxt = np.full(e, -1, dtype=np.int64)
        if e:
            same = run.block[order[1:]] == run.block[order[:-1]]
            prev[order[1:][same]] = order[:-1][same]
            nxt[order[:-1][same]] = order[1:][same]
        self._prev, self._next = prev.tolist(), nxt.tolist()
        self._at = np.zeros((ip.blocks, max(run.done, default=0)), dtype=np.int64)
        self._at[run.block, run.pos] = np.arange(e)  # (block, position) -> execution
        self._signalled = [sorted({c for c, _ in sigs}) for sigs in ip.signals]
        self.sig = index_signals(ip, run)
        # per wait: how many signals of its counter the run started before its execution
        self._wait_exec = wait_exec = np.repeat(np.arange(e), np.diff(run.wait_start))
        self._before = np.zeros(len(wait_exec), dtype=np.int64)
        for c in np.unique(run.wait_counter).tolist():
            s = self.sig[c]
            if s is not None:
                mine = np.flatnonzero(run.wait_counter == c)
                self._before[mine] = np.searchsorted(s.trace_exec, wait_exec[mine])
        self.clock = np.empty((e, ip.blocks), dtype=np.int32)
        # per wait that is not full: the last position it implies ended, per block
        self._partial: dict[int, np.ndarray] = {}
        previous: np.ndarray | None = None
        self.rounds = 0  # stays 0 when the guess that every wait is full holds
        if self._optimistic():
            return
        while True:
            self.rounds += 1
            self._backward(previous)
            self._forward()
            if not self._partial or self.rounds == MAX_ROUNDS or (
                    previous is not None and np.array_equal(previous, self.clock)):
                break
            previous = self.clock.copy()

    # -- shared ------------------------------------------------------------------------
    def _implied(self, s: CounterSignals, count: np.ndarray, threshold: int,
                 previous: np.ndarray | None) -> np.ndarray:
        """Per block, the last position the candidates (``count`` per group) imply ended,
        by the previous round's clocks (in the first round, program order's alone)."""
        idx = s.entries(count)
        z = s.exec[idx]
        if previous is not None:
            rows = previous[z]
        else:
            rows = np.full((len(z), self.ip.blocks), -1, dtype=np.int32)
            rows[np.arange(len(z)), self.block[z]] = self.pos[z]
        adds = s.running[idx + 1] - s.running[idx]
        return _quantile(rows, adds, threshold, s.unit)

    # -- the common case, guessed and verified -----------------------------------------
    def _optimistic(self) -> bool:
        """Guess that every wait is full: its candidates are exactly the signals the run
        started before it, which add up to its threshold. Compute the clocks on that
        guess, then check it: for every wait and every signalling block, the block's first
        signal after the wait in the run must happen after the waiting execution (the
        rest follow by program order). True when the guess holds; its clocks are then
        sound (an interleaving that broke an edge would have a first breach, whose wait
        some later signal satisfied, which the check orders after the waiter along
        unbroken edges: a contradiction). A real lowering is settled here, in one sweep."""
        run = self.run
        if not (run.wait_seen == run.wait_threshold).all():
            return False
        self._partial = {}
        self._forward()
        for c in np.unique(run.wait_counter).tolist():
            s = self.sig[c]
            assert s is not None
            mine = np.flatnonzero(run.wait_counter == c)
            t = self._wait_exec[mine]
            # waits of one block with no signal of c between them exclude the same
            # signals: the latest stands for all (the earlier ones happen before it)
            key = run.block[t].astype(np.int64) * (len(s.exec) + 1) + self._before[mine]
            order = np.lexsort((t, key))
            last = np.ones(len(order), dtype=bool)
            last[:-1] = key[order][1:] != key[order][:-1]
            t = t[order[last]]
            groups = np.arange(s.groups, dtype=np.int64)
            idx = np.searchsorted(s.exec_keys, groups[None, :] * s.exec_span + t[:, None],
                                  side="right")
            valid = idx < s.start[1:][None, :]
            y = t[np.nonzero(valid)[0]]
            if (self.clock[s.exec[idx[valid]], self.block[y]] < self.pos[y]).any():
                return False
        return True

    # -- the backward sweep: after clocks, candidates, edges ---------------------------
    def _backward(self, previous: np.ndarray | None) -> None:
        ip, run = self.ip, self.run
        e, blocks = run.executions, ip.blocks
        after = np.full((e, blocks), _NEVER, dtype=np.int32)
        pending = np.full((len(ip.per_step), blocks), _NEVER, dtype=np.int32)
        # the waits not full, grouped by their candidate sets: the after clocks of a group's
        # waiters joined, and per execution the groups that it must precede
        joined: dict[tuple[int, bytes, int], np.ndarray] = {}
        precedes: dict[int, list[tuple[int, bytes, int]]] = {}
        self._partial = {}
        counters, thresholds = run.wait_counter.tolist(), run.wait_threshold.tolist()
        exact = (run.wait_seen == run.wait_threshold).tolist()  # the run's prefix is exact
        before = self._before.tolist()
        starts = run.wait_start.tolist()
        block, pos, tasks = run.block.tolist(), run.pos.tolist(), run.task.tolist()
        signalled, nxt, at = self._signalled, self._next, self._at
        cuts: dict[tuple[int, int], np.ndarray] = {}
        scratch = np.empty(blocks, dtype=np.int32)
        quantiles: dict[tuple[int, bytes, int], np.ndarray] = {}
        for t in range(e - 1, -1, -1):
            row = after[t]
            if nxt[t] >= 0:
                row[:] = after[nxt[t]]
            row[block[t]] = pos[t] + 1
            for c in signalled[tasks[t]]:
                np.minimum(row, pending[c], out=row)
            for key in precedes.pop(t, ()):
                np.minimum(row, joined[key], out=row)
            if starts[t] == starts[t + 1]:
                continue
            mine = row.copy()  # t itself comes after its producers
            mine[block[t]] = pos[t]
            for w in range(starts[t], starts[t + 1]):
                c, threshold = counters[w], thresholds[w]
                s = self.sig[c]
                assert s is not None  # the wait passed in the run: something signalled
                if exact[w]:
                    # full when every signal after t in the run is known to come after t
                    key = (c, before[w])
                    cut = cuts.get(key)
                    if cut is None:
                        cut = cuts[key] = np.full(blocks, _NEVER, dtype=np.int32)
                        cut[s.block] = s.cut(t, _NEVER)
                    if np.minimum(mine, cut, out=scratch).tobytes() == mine.tobytes():
                        np.minimum(pending[c], mine, out=pending[c])
                        continue
                count = s.below(mine[s.block])
                key = (c, count.tobytes(), threshold)
                if key in joined:
                    np.minimum(joined[key], mine, out=joined[key])
                else:
                    # every execution the candidates imply ended precedes every waiter
                    # with these candidates, and all of those come later in the run
                    implied = quantiles[key] = self._implied(s, count, threshold, previous)
                    joined[key] = mine.copy()
                    for b in np.flatnonzero(implied >= 0).tolist():
                        precedes.setdefault(int(at[b, implied[b]]), []).append(key)
                self._partial[w] = quantiles[key]

    # -- the forward sweep: clocks -----------------------------------------------------
    def _forward(self) -> None:
        ip, run = self.ip, self.run
        clock, prev, partial = self.clock, self._prev, self._partial
        joined = np.full((len(ip.per_step), ip.blocks), -1, dtype=np.int32)
        none = np.full(ip.blocks, -1, dtype=np.int32)
        counters = run.wait_counter.tolist()
        starts = run.wait_start.tolist()
        block, pos, tasks = run.block.tolist(), run.pos.tolist(), run.task.tolist()
        signalled = self._signalled
        for t in range(run.executions):
            row = clock[t]
            p = prev[t]
            row[:] = clock[p] if p >= 0 else none
            for w in range(starts[t], starts[t + 1]):
                implied = partial.get(w)
                np.maximum(row, joined[counters[w]] if implied is None else implied, out=row)
            row[block[t]] = pos[t]
            for c in signalled[tasks[t]]:
                np.maximum(joined[c], row, out=joined[c])

    # -- queries -----------------------------------------------------------------------
    def ordered(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """For executions ``x`` started before ``y`` in the run: does x happen before y?"""
        bx = self.block[x]
        return (bx == self.block[y]) | (self.clock[y, bx] >= self.pos[x])

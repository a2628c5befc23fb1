"""The exhaustive explorer: every interleaving of the start and end events of every task
execution, for small programs. The ground truth the rest is checked against.

A state says, per block, how far it is: ``phase = 2k`` when its first ``k`` executions have
ended and the next has not started, ``2k + 1`` while execution ``k`` runs (its reads and
writes happen in between; its signals land at its end). From a state, any running
execution may end, and any block may start its next execution once all its waits pass.
Every reachable state is visited. A deadlock is a reachable state with no move that is
not the end; a race is a reachable state in which two conflicting executions both run.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

from validator.reference import RefProgram

Exec = tuple[int, int]  # (block, k-th execution of the block)


@dataclass(frozen=True)
class Exploration:
    states: int
    deadlock: bool
    races: frozenset[tuple[Exec, Exec]]
    # per pair of blocks (b1 < b2), every (phase of b1, phase of b2) some state has
    seen_phases: dict[tuple[int, int], frozenset[tuple[int, int]]]

    def before(self, x: Exec, y: Exec) -> bool:
        """Exact happens-before: no reachable state has started ``y`` but not ended ``x``."""
        if x[0] == y[0]:
            return x[1] < y[1]
        (bx, kx), (by, ky) = x, y
        if bx < by:
            return not any(py >= 2 * ky + 1 and px <= 2 * kx + 1
                           for px, py in self.seen_phases[(bx, by)])
        return not any(py >= 2 * ky + 1 and px <= 2 * kx + 1
                       for py, px in self.seen_phases[(by, bx)])


def explore(p: RefProgram) -> Exploration:
    names = list(p.per_step)
    index = {c: i for i, c in enumerate(names)}
    blocks = len(p.queues)
    ends = [2 * p.length(b) for b in range(blocks)]
    # cum[b][k]: what block b's first k executions add to each counter
    cum: list[list[tuple[int, ...]]] = []
    for b in range(blocks):
        row = [0] * len(names)
        rows = [tuple(row)]
        for k in range(p.length(b)):
            for c, add in p.at(b, k)[0].signals:
                row[index[c]] += add
            rows.append(tuple(row))
        cum.append(rows)
    conflicts: dict[tuple[Exec, Exec], bool] = {}
    start = (0,) * blocks
    seen = {start}
    stack = [start]
    deadlock = False
    races: set[tuple[Exec, Exec]] = set()
    phases: dict[tuple[int, int], set[tuple[int, int]]] = {
        pair: set() for pair in combinations(range(blocks), 2)}
    while stack:
        state = stack.pop()
        totals = [0] * len(names)
        for b, ph in enumerate(state):
            for i, v in enumerate(cum[b][ph // 2]):
                totals[i] += v
        counters = dict(zip(names, totals, strict=True))
        running = []
        moved = False
        for b, ph in enumerate(state):
            if ph & 1:
                running.append((b, ph // 2))
            elif ph == ends[b] or not p.can_start(b, ph // 2, counters):
                continue
            moved = True
            nxt = (*state[:b], ph + 1, *state[b + 1:])
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
        if not moved and list(state) != ends:
            deadlock = True
        for x, y in combinations(running, 2):
            if (x, y) not in conflicts:
                conflicts[(x, y)] = p.conflict(x, y)
            if conflicts[(x, y)]:
                races.add((x, y))
        for (b1, b2), got in phases.items():
            got.add((state[b1], state[b2]))
    return Exploration(len(seen), deadlock, frozenset(races),
                       {k: frozenset(v) for k, v in phases.items()})

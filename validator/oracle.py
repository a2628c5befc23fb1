"""Exact happens-before from maximal states: the ground truth for programs too large to
explore every interleaving of.

Counters only grow and waits ask for "at least", so the reachable states (how far each
block has got) are closed under the per-block maximum; so is the subset of them in which
a chosen execution X has not ended. That subset therefore has one maximal state M_X, and
a greedy run that never lets X end reaches it. Y (on another block) can start before X
ends in some interleaving exactly when M_X has started Y: X happens before Y iff M_X has
not. Raising the cap from X to the next execution of its block only enlarges the subset,
so one greedy run per block, resumed at every cap, gives every M_X.

This shares no code with the validator: it reads the program through reference.py and
never looks at candidate sums, slack or vector clocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from validator.explorer import explore
from validator.reference import RefProgram, read_reference, static_failures
from validator.verdict import DEADLOCK_FREE, RACE_FREE, WELL_FORMED

Exec = tuple[int, int]  # (block, k-th execution of the block)


def _greedy(p: RefProgram, ended: list[int], counters: dict[str, int], caps: list[int]) -> None:
    """Run every block as far as its cap and its waits allow (in place)."""
    progress = True
    while progress:
        progress = False
        for b in range(len(ended)):
            while ended[b] < caps[b] and p.can_start(b, ended[b], counters):
                for c, add in p.at(b, ended[b])[0].signals:
                    counters[c] += add
                ended[b] += 1
                progress = True


@dataclass(frozen=True)
class MaxStates:
    """``full``: how far each block gets (all of it unless it deadlocks); ``limit[x]``:
    how far each block gets while execution ``x`` has not ended."""

    full: tuple[int, ...]
    limit: dict[Exec, tuple[int, ...]]

    def before(self, x: Exec, y: Exec) -> bool:
        """Does ``x`` happen before ``y``? (Both must be able to start.)"""
        if x[0] == y[0]:
            return x[1] < y[1]
        return self.limit[x][y[0]] <= y[1]


def max_states(p: RefProgram) -> MaxStates:
    blocks = len(p.queues)
    lengths = [p.length(b) for b in range(blocks)]
    full = [0] * blocks
    _greedy(p, full, p.counters_after(full), lengths)
    limit: dict[Exec, tuple[int, ...]] = {}
    for b in range(blocks):
        caps = list(lengths)
        state = [0] * blocks
        counters = p.counters_after(state)
        for k in range(full[b]):
            caps[b] = k
            _greedy(p, state, counters, caps)
            limit[(b, k)] = tuple(state)
    return MaxStates(tuple(full), limit)


def races_of(p: RefProgram, ms: MaxStates) -> set[tuple[Exec, Exec]]:
    """Conflicting pairs of startable executions that no happens-before orders."""
    startable = [(b, k) for b in range(len(p.queues)) for k in range(ms.full[b])]
    out = set()
    for i, x in enumerate(startable):
        for y in startable[i + 1:]:
            if (x[0] != y[0] and not ms.before(x, y) and not ms.before(y, x)
                    and p.conflict(x, y)):
                out.add((x, y))
    return out


# Explore every interleaving when the state space is at most this big.
EXHAUSTIVE_STATES = 20_000


def state_bound(p: RefProgram) -> int:
    bound = 1
    for b in range(len(p.queues)):
        bound *= 2 * p.length(b) + 1
    return bound


@dataclass(frozen=True)
class Truth:
    failed: frozenset[str]
    method: str  # "reference" (not well-formed), "explorer" or "max-states"


def ground_truth(doc: Any, fallback_target: dict[str, Any]) -> Truth:
    """The failed properties of a decoded amk-program, decided without the validator."""
    p = read_reference(doc)
    if p is None:
        return Truth(frozenset({WELL_FORMED}), "reference")
    failed = static_failures(p, fallback_target)
    if state_bound(p) <= EXHAUSTIVE_STATES:
        ex = explore(p)
        deadlock, racy, method = ex.deadlock, bool(ex.races), "explorer"
    else:
        ms = max_states(p)
        deadlock = any(f < p.length(b) for b, f in enumerate(ms.full))
        racy, method = bool(races_of(p, ms)), "max-states"
    if deadlock:
        failed.add(DEADLOCK_FREE)
    if racy:
        failed.add(RACE_FREE)
    return Truth(frozenset(failed), method)

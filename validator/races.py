"""Property 5, race-free: any two accesses to overlapping bytes of one buffer, at least one
a write, by different executions, are ordered by happens-before.

Per buffer that anything writes, the range endpoints of every access in every step
(strides applied) cut the buffer into elementary segments; two accesses overlap exactly
when they share one. Per segment, in the greedy run's order (a topological order of
happens-before), it suffices to check each access against the segment's previous write
and each read against the segment's next write: every other conflicting pair is ordered
through those by transitivity (a write is ordered after the previous write, and after
every read since it; the previous write after every earlier access). The run starts every
execution that any interleaving can start, so nothing reachable is left out.

All of it is vectorised with numpy. A run of reads of one range with nothing else of the
buffer between them (every tile of a stage reading the whole input) meets the same writes,
so it is checked as one group, through per-block vectors: the cost is members x blocks,
not members x writers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from validator.greedy import GreedyRun
from validator.happens_before import HappensBefore
from validator.indexed import IndexedProgram
from validator.verdict import RACE_FREE, Violation, capped


@dataclass(frozen=True)
class _Accesses:
    """Every access of every execution to a written buffer, sorted by (buffer, run order,
    reads before writes)."""

    buffer: np.ndarray
    begin: np.ndarray
    end: np.ndarray
    exec: np.ndarray
    write: np.ndarray


def _accesses(ip: IndexedProgram, run: GreedyRun) -> _Accesses:
    table = ip.ranges  # columns: indexed.RANGE_COLUMNS
    first = np.searchsorted(table[:, 0], np.arange(ip.tasks + 1))
    count = (first[1:] - first[:-1])[run.task]
    ex = np.repeat(np.arange(run.executions, dtype=np.int64), count)
    offset = np.arange(len(ex), dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
    row = table[first[run.task][ex] + offset]
    shift = run.step[ex].astype(np.int64) * row[:, 4]
    order = np.lexsort((row[:, 5], ex, row[:, 1]))
    return _Accesses(row[order, 1], (row[:, 2] + shift)[order], (row[:, 3] + shift)[order],
                     ex[order], row[order, 5].astype(bool))


@dataclass(frozen=True)
class _Race:
    first: int  # execution, earlier in the run
    second: int
    first_writes: bool
    second_writes: bool
    buffer: int
    begin: int
    end: int


# A run of reads of one range, consecutive among the buffer's accesses (nothing else of
# the buffer between them), meets the same previous and next write in every segment it
# covers, so it is checked as one group; a group this big goes through per-block vectors
# (cost members x blocks instead of members x writes).
VECTOR_GROUP = 8


def _segment_pairs(begin: np.ndarray, end: np.ndarray, write: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per segment, in order: (previous write, access) and (read, next write) pairs of the
    items (groups) given; deduplicated. Returns (first, second, segment_begin, segment_end,
    is_previous_write_pair)."""
    bounds = np.unique(np.concatenate([begin, end]))
    lo = np.searchsorted(bounds, begin)
    count = np.searchsorted(bounds, end) - lo
    n = int(count.sum())
    item = np.repeat(np.arange(len(begin)), count)
    seg = np.repeat(lo, count) + np.arange(n) - np.repeat(np.cumsum(count) - count, count)
    key = seg.astype(np.uint16) if len(bounds) <= 1 << 16 else seg
    order = np.argsort(key, kind="stable")  # items are in run order already
    seg, item = seg[order], item[order]
    w = write[item]
    idx = np.arange(n)
    new = np.ones(n, dtype=bool)
    new[1:] = seg[1:] != seg[:-1]
    seg_first = np.maximum.accumulate(np.where(new, idx, 0))
    last = np.ones(n, dtype=bool)
    last[:-1] = new[1:]
    seg_last = np.minimum.accumulate(np.where(last, idx, n)[::-1])[::-1]
    prev_write = np.full(n, -1)
    prev_write[1:] = np.maximum.accumulate(np.where(w, idx, -1))[:-1]
    a = np.flatnonzero(prev_write >= seg_first)
    next_write = np.full(n, n)
    next_write[:-1] = np.minimum.accumulate(np.where(w, idx, n)[::-1])[::-1][1:]
    r = np.flatnonzero(~w & (next_write <= seg_last))
    first = item[np.concatenate([prev_write[a], r])]
    second = item[np.concatenate([a, next_write[r]])]
    where = seg[np.concatenate([a, r])]
    kind = np.r_[np.ones(len(a), dtype=bool), np.zeros(len(r), dtype=bool)]
    _, keep = np.unique(first * len(begin) + second, return_index=True)
    return (first[keep], second[keep], bounds[where[keep]], bounds[where[keep] + 1],
            kind[keep])


def _members(start: np.ndarray, size: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray,
                                                                                 np.ndarray]:
    """(index of the pair, access) for every member of ``groups`` (one per pair)."""
    count = size[groups]
    pair = np.repeat(np.arange(len(groups)), count)
    offset = np.arange(len(pair)) - np.repeat(np.cumsum(count) - count, count)
    return pair, start[groups][pair] + offset


def _buffer_races(buf: int, begin: np.ndarray, end: np.ndarray, ex: np.ndarray,
                  write: np.ndarray, hb: HappensBefore) -> list[_Race]:
    n = len(begin)
    new = np.ones(n, dtype=bool)
    new[1:] = write[1:] | write[:-1] | (begin[1:] != begin[:-1]) | (end[1:] != end[:-1])
    start = np.flatnonzero(new)
    size = np.diff(np.append(start, n))
    first, second, lo, hi, after_write = _segment_pairs(begin[start], end[start], write[start])
    # every pair has a write on one side (a group of one) and a group on the other
    group = np.where(after_write, second, first)
    w = ex[start[np.where(after_write, first, second)]]
    found: list[_Race] = []

    def report(i: int, member: int) -> None:
        """Pair ``i`` races through the group's access ``member``."""
        if after_write[i]:
            found.append(_Race(int(w[i]), int(ex[member]), True, bool(write[member]), buf,
                               int(lo[i]), int(hi[i])))
        else:
            found.append(_Race(int(ex[member]), int(w[i]), False, True, buf, int(lo[i]),
                               int(hi[i])))

    small = size[group] < VECTOR_GROUP
    pairs, member = _members(start, size, group[small])
    pairs = np.flatnonzero(small)[pairs]
    m = ex[member]
    ok = np.where(after_write[pairs], hb.ordered(w[pairs], m), hb.ordered(m, w[pairs]))
    for i, mi in zip(pairs[~ok].tolist(), member[~ok].tolist(), strict=True):
        report(i, mi)
    for g in np.unique(group[~small]).tolist():
        members = np.arange(start[g], start[g] + size[g])
        mine = np.flatnonzero((group == g) & ~small)
        for i, j in _vector_checks(hb, ex[members], w[mine], after_write[mine]):
            report(int(mine[i]), int(members[j]))
    return found


def _vector_checks(hb: HappensBefore, reads: np.ndarray, writes: np.ndarray,
                   before: np.ndarray) -> list[tuple[int, int]]:
    """A group of reads against the writes just before it (``before``) and just after it,
    through per-block vectors: (write, read) index pairs that are not ordered, one per
    failing (read, block) or (write, block). A clock's own-block entry is the execution's
    own position, so program order, and an execution that reads and writes the same bytes,
    pass without a special case."""
    blocks = hb.clock.shape[1]
    rb, rp = hb.block[reads], hb.pos[reads]
    bad: list[tuple[int, int]] = []
    prior = np.flatnonzero(before)
    if len(prior):
        # per block, the latest write before the group: every read must see it
        wb, wp = hb.block[writes[prior]], hb.pos[writes[prior]]
        latest = np.full(blocks, -1, dtype=np.int64)
        np.maximum.at(latest, wb, wp)
        who = np.zeros(blocks, dtype=np.int64)
        who[wb[wp == latest[wb]]] = prior[wp == latest[wb]]
        j, b = np.nonzero(hb.clock[reads] < latest[None, :])
        bad += zip(who[b].tolist(), j.tolist(), strict=True)
    later = np.flatnonzero(~before)
    if len(later):
        # per block, the latest read of the group: every later write must see it
        latest = np.full(blocks, -1, dtype=np.int64)
        np.maximum.at(latest, rb, rp)
        who = np.zeros(blocks, dtype=np.int64)
        who[rb[rp == latest[rb]]] = np.flatnonzero(rp == latest[rb])
        i, b = np.nonzero(hb.clock[writes[later]] < latest[None, :])
        bad += zip(later[i].tolist(), who[b].tolist(), strict=True)
    return bad


def _describe(ip: IndexedProgram, run: GreedyRun, race: _Race) -> Violation:
    gx, gy = int(run.task[race.first]), int(run.task[race.second])
    x = ip.label(gx, int(run.step[race.first]))
    y = ip.label(gy, int(run.step[race.second]))
    name = ip.buffer_names[race.buffer]
    where = f"{name!r} bytes [{race.begin}, {race.end})"
    if race.first_writes and race.second_writes:
        what = f"{x} and {y} both write {where}"
    elif race.first_writes:
        what = f"{y} reads {where} that {x} writes"
    else:
        what = f"{y} writes {where} that {x} reads"
    fix = ("nothing orders them in every interleaving: make the one that must go second wait "
           "for a signal that only the other (or a task after it) can give, or give them "
           "disjoint bytes")
    if run.step[race.first] != run.step[race.second]:
        fix += " (different steps: a block runs ahead into the next step unless a wait holds it)"
    return Violation(RACE_FREE, (ip.ids[gx], ip.ids[gy]), f"{what}; {fix}")


def race_violations(ip: IndexedProgram, run: GreedyRun, hb: HappensBefore) -> list[Violation]:
    acc = _accesses(ip, run)
    cuts = np.flatnonzero(np.diff(acc.buffer)) + 1
    races: list[_Race] = []
    for lo, hi in zip(np.r_[0, cuts].tolist(), np.r_[cuts, len(acc.buffer)].tolist(),
                      strict=True):
        if hi > lo and acc.write[lo:hi].any():
            races += _buffer_races(int(acc.buffer[lo]), acc.begin[lo:hi], acc.end[lo:hi],
                                   acc.exec[lo:hi], acc.write[lo:hi], hb)
    seen: set[tuple[int, int]] = set()
    found = []
    for race in races:
        pair = (int(run.task[race.first]), int(run.task[race.second]))
        if pair not in seen:
            seen.add(pair)
            found.append(_describe(ip, run, race))
    return capped(RACE_FREE, found, "racing task pairs")

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

Accumulating writes (``Range.accumulate``: atomic adds, which commute) conflict with reads
and plain writes but not with each other. A buffer that has them is checked by phases
(``_accumulate_races``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from validator.greedy import GreedyRun
from validator.happens_before import HappensBefore
from validator.indexed import ACCUMULATE, WRITE, IndexedProgram
from validator.verdict import RACE_FREE, REPORT_LIMIT, Violation, capped


@dataclass(frozen=True)
class _Accesses:
    """Every access of every execution to a written buffer, sorted by (buffer, run order,
    reads before writes)."""

    buffer: np.ndarray
    begin: np.ndarray
    end: np.ndarray
    exec: np.ndarray
    kind: np.ndarray  # indexed.READ, WRITE or ACCUMULATE

    @property
    def write(self) -> np.ndarray:
        return self.kind != 0


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
                     ex[order], row[order, 5])


@dataclass(frozen=True)
class _Races:
    """Unordered conflicting pairs, one per entry: executions (``first`` earlier in the
    run), which of them write, and a byte range where they meet."""

    first: np.ndarray
    second: np.ndarray
    first_writes: np.ndarray
    second_writes: np.ndarray
    buffer: np.ndarray
    begin: np.ndarray
    end: np.ndarray


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
                  write: np.ndarray, hb: HappensBefore) -> _Races:
    n = len(begin)
    new = np.ones(n, dtype=bool)
    new[1:] = write[1:] | write[:-1] | (begin[1:] != begin[:-1]) | (end[1:] != end[:-1])
    start = np.flatnonzero(new)
    size = np.diff(np.append(start, n))
    first, second, lo, hi, after_write = _segment_pairs(begin[start], end[start], write[start])
    # every pair has a write on one side (a group of one) and a group on the other
    group = np.where(after_write, second, first)
    w = ex[start[np.where(after_write, first, second)]]
    small = size[group] < VECTOR_GROUP
    pairs, member = _members(start, size, group[small])
    pairs = np.flatnonzero(small)[pairs]
    m = ex[member]
    ok = np.where(after_write[pairs], hb.ordered(w[pairs], m), hb.ordered(m, w[pairs]))
    bad_pair, bad_member = [pairs[~ok]], [member[~ok]]
    for g in np.unique(group[~small]).tolist():
        members = np.arange(start[g], start[g] + size[g])
        mine = np.flatnonzero((group == g) & ~small)
        i, j = _vector_checks(hb, ex[members], w[mine], after_write[mine])
        bad_pair.append(mine[i])
        bad_member.append(members[j])
    i, mi = np.concatenate(bad_pair), np.concatenate(bad_member)
    before = after_write[i]  # the write comes first
    return _Races(np.where(before, w[i], ex[mi]), np.where(before, ex[mi], w[i]),
                  before, ~before | write[mi], np.full(len(i), buf), lo[i], hi[i])


def _accumulate_races(buf: int, begin: np.ndarray, end: np.ndarray, ex: np.ndarray,
                      kind: np.ndarray, hb: HappensBefore) -> _Races:
    """A buffer with accumulating writes. Per elementary segment, in run order, a *phase* is
    a maximal run of reads or of accumulates, and each plain write a phase of its own. Two
    neighbouring phases always conflict (reads against accumulates, or a write against
    anything), and when every member of each phase happens before every member of the
    next, transitivity orders every conflicting pair of the segment; reads among
    themselves and accumulates among themselves need no order. So each member of a phase
    is checked against the per-block latest position of the phase before it. Segments
    share most phases (every accumulate of a step covers the whole vector), so each
    (phase before, member) check is made once."""
    bounds = np.unique(np.concatenate([begin, end]))
    lo = np.searchsorted(bounds, begin)
    count = np.searchsorted(bounds, end) - lo
    n = int(count.sum())
    item = np.repeat(np.arange(len(begin)), count)
    seg = np.repeat(lo, count) + np.arange(n) - np.repeat(np.cumsum(count) - count, count)
    order = np.argsort(seg, kind="stable")  # items are in run order already
    seg, item = seg[order], item[order]
    k = kind[item]
    new = np.ones(n, dtype=bool)
    new[1:] = (seg[1:] != seg[:-1]) | (k[1:] != k[:-1]) | (k[1:] == WRITE)
    starts = [*np.flatnonzero(new).tolist(), n]
    found: dict[tuple[bytes, int], int] = {}  # (phase before, member exec) -> bad x or -1
    bad: list[tuple[int, int, int]] = []  # (x access, y access, segment)
    prev: tuple[bytes, np.ndarray] | None = None
    for p in range(len(starts) - 1):
        a, b = starts[p], starts[p + 1]
        ys = item[a:b]
        if prev is not None and seg[a] == seg[starts[p - 1]]:
            key, xs = prev
            todo = np.asarray([y for y in ys.tolist() if (key, int(ex[y])) not in found],
                              dtype=np.int64)
            if len(todo):
                ey, exs = ex[todo], ex[xs]
                # every x before y: y's clock covers x's position on x's block
                ok = hb.clock[ey[:, None], hb.block[exs][None, :]] >= hb.pos[exs][None, :]
                ok |= hb.block[ey][:, None] == hb.block[exs][None, :]
                first_bad = np.where(ok.all(axis=1), -1, xs[np.argmin(ok, axis=1)])
                for y, x in zip(ey.tolist(), first_bad.tolist(), strict=True):
                    found[(key, y)] = x
            for y in ys.tolist():
                x = found[(key, int(ex[y]))]
                if x >= 0:
                    bad.append((x, y, int(seg[a])))
        prev = (ex[ys].tobytes(), ys)
    x, y, where = (np.asarray(c, dtype=np.int64) for c in zip(*bad, strict=True)) if bad else (
        np.zeros(0, dtype=np.int64) for _ in range(3))
    return _Races(ex[x], ex[y], kind[x] != 0, kind[y] != 0, np.full(len(x), buf), bounds[where],
                  bounds[where + 1])


def _vector_checks(hb: HappensBefore, reads: np.ndarray, writes: np.ndarray,
                   before: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A group of reads against the writes just before it (``before``) and just after it,
    through per-block vectors: (write, read) indices of pairs that are not ordered, one
    per failing (read, block) or (write, block). A clock's own-block entry is the
    execution's own position, so program order, and an execution that reads and writes the
    same bytes, pass without a special case."""
    blocks = hb.clock.shape[1]
    rb, rp = hb.block[reads], hb.pos[reads]
    bad_write, bad_read = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    prior = np.flatnonzero(before)
    if len(prior):
        # per block, the latest write before the group: every read must see it
        wb, wp = hb.block[writes[prior]], hb.pos[writes[prior]]
        latest = np.full(blocks, -1, dtype=np.int64)
        np.maximum.at(latest, wb, wp)
        who = np.zeros(blocks, dtype=np.int64)
        who[wb[wp == latest[wb]]] = prior[wp == latest[wb]]
        j, b = np.nonzero(hb.clock[reads] < latest[None, :])
        bad_write.append(who[b])
        bad_read.append(j)
    later = np.flatnonzero(~before)
    if len(later):
        # per block, the latest read of the group: every later write must see it
        latest = np.full(blocks, -1, dtype=np.int64)
        np.maximum.at(latest, rb, rp)
        who = np.zeros(blocks, dtype=np.int64)
        who[rb[rp == latest[rb]]] = np.flatnonzero(rp == latest[rb])
        i, b = np.nonzero(hb.clock[writes[later]] < latest[None, :])
        bad_write.append(later[i])
        bad_read.append(who[b])
    return np.concatenate(bad_write), np.concatenate(bad_read)


def _describe(ip: IndexedProgram, run: GreedyRun, races: _Races, k: int) -> Violation:
    tx, ty = int(races.first[k]), int(races.second[k])
    gx, gy = int(run.task[tx]), int(run.task[ty])
    x, y = ip.label(gx, int(run.step[tx])), ip.label(gy, int(run.step[ty]))
    name = ip.buffer_names[int(races.buffer[k])]
    where = f"{name!r} bytes [{int(races.begin[k])}, {int(races.end[k])})"
    if races.first_writes[k] and races.second_writes[k]:
        what = f"{x} and {y} both write {where}"
    elif races.first_writes[k]:
        what = f"{y} reads {where} that {x} writes"
    else:
        what = f"{y} writes {where} that {x} reads"
    fix = ("nothing orders them in every interleaving: make the one that must go second wait "
           "for a signal that only the other (or a task after it) can give, or give them "
           "disjoint bytes")
    if run.step[tx] != run.step[ty]:
        fix += " (different steps: a block runs ahead into the next step unless a wait holds it)"
    return Violation(RACE_FREE, (ip.ids[gx], ip.ids[gy]), f"{what}; {fix}")


def race_violations(ip: IndexedProgram, run: GreedyRun, hb: HappensBefore) -> list[Violation]:
    """One violation per pair of tasks that race (in any steps), the first REPORT_LIMIT
    described, the rest counted."""
    acc = _accesses(ip, run)
    cuts = np.flatnonzero(np.diff(acc.buffer)) + 1
    parts = []
    for lo, hi in zip(np.r_[0, cuts].tolist(), np.r_[cuts, len(acc.buffer)].tolist(),
                      strict=True):
        kind = acc.kind[lo:hi]
        if hi == lo or not kind.any():
            continue
        check = _accumulate_races if (kind == ACCUMULATE).any() else _buffer_races
        parts.append(check(int(acc.buffer[lo]), acc.begin[lo:hi], acc.end[lo:hi],
                           acc.exec[lo:hi], kind if check is _accumulate_races else kind != 0,
                           hb))
    if not parts:
        return []
    races = _Races(*(np.concatenate([getattr(p, f.name) for p in parts])
                     for f in dataclasses.fields(_Races)))
    pair = run.task[races.first].astype(np.int64) * ip.tasks + run.task[races.second]
    _, first = np.unique(pair, return_index=True)
    first.sort()
    shown = [_describe(ip, run, races, int(k)) for k in first[:REPORT_LIMIT]]
    return capped(RACE_FREE, shown, "racing task pairs", total=len(first))

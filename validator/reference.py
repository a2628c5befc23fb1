"""A literal, slow reading of PROGRAM_FORMAT.md, written apart from the validator.

It reads the raw JSON object itself (not ``vm.program``), checks the three arithmetic
properties (well-formed, co-resident, epoch-exact) the plainest way, and models execution
(which task a block runs at each queue position, when its waits pass, what it signals and
touches). The explorer and the oracle build the ground truth for deadlock and races on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from validator.verdict import CO_RESIDENT, EPOCH_EXACT

TARGET_KEYS = ("sms", "smem_per_sm", "smem_per_block", "max_threads_per_sm", "max_blocks_per_sm")


class _Bad(Exception):
    """The document is not a well-formed amk-program."""


def _int(x: Any, low: int) -> int:
    if type(x) is not int or x < low:
        raise _Bad(repr(x))
    return x


def _obj(x: Any) -> dict[str, Any]:
    if not isinstance(x, dict):
        raise _Bad(repr(x))
    return x


def _list(x: Any) -> list[Any]:
    if not isinstance(x, list):
        raise _Bad(repr(x))
    return x


@dataclass(frozen=True)
class RefTask:
    id: str
    smem: int
    waits: tuple[tuple[str, int], ...]
    signals: tuple[tuple[str, int], ...]
    # (buffer, begin, end, stride, is_write, accumulates)
    accesses: tuple[tuple[str, int, int, int, bool, bool], ...]


@dataclass(frozen=True)
class RefProgram:
    launch: dict[str, int]
    target: dict[str, Any] | None
    steps: int
    buffers: dict[str, int]
    per_step: dict[str, int]
    queues: tuple[tuple[RefTask, ...], ...]

    def length(self, b: int) -> int:
        """How many executions block ``b`` runs in the launch."""
        return len(self.queues[b]) * self.steps

    def at(self, b: int, k: int) -> tuple[RefTask, int]:
        """The task and step of block ``b``'s ``k``-th execution."""
        q = self.queues[b]
        return q[k % len(q)], k // len(q)

    def can_start(self, b: int, k: int, counters: dict[str, int]) -> bool:
        task, step = self.at(b, k)
        return all(counters[c] >= step * self.per_step[c] + v for c, v in task.waits)

    def touches(self, b: int, k: int) -> list[tuple[str, int, int, bool, bool]]:
        task, step = self.at(b, k)
        return [(buf, lo + step * st, hi + step * st, w, acc)
                for buf, lo, hi, st, w, acc in task.accesses]

    def conflict(self, x: tuple[int, int], y: tuple[int, int]) -> bool:
        """Overlapping bytes of one buffer, at least one a write, not both accumulating
        (atomic adds commute)."""
        return any(bx == by and lx < hy and ly < hx and (wx or wy) and not (ax and ay)
                   for bx, lx, hx, wx, ax in self.touches(*x)
                   for by, ly, hy, wy, ay in self.touches(*y))

    def counters_after(self, ended: list[int]) -> dict[str, int]:
        """Counter values once block ``b`` has ended its first ``ended[b]`` executions."""
        value = dict.fromkeys(self.per_step, 0)
        for b, n in enumerate(ended):
            for k in range(n):
                for c, add in self.at(b, k)[0].signals:
                    value[c] += add
        return value


def _task(t: Any, buffers: dict[str, int], per_step: dict[str, int], steps: int) -> RefTask:
    t = _obj(t)
    if not isinstance(t.get("id"), str) or not isinstance(t.get("op"), str):
        raise _Bad("id/op")
    if not isinstance(t.get("args", {}), dict):
        raise _Bad("args")
    waits = []
    for w in _list(t.get("wait")):
        w = _obj(w)
        c = w.get("counter")
        if not isinstance(c, str) or c not in per_step:
            raise _Bad("wait counter")
        waits.append((c, _int(w.get("value"), 1)))
        if waits[-1][1] > per_step[c]:
            raise _Bad("wait value")
    signals = []
    for s in _list(t.get("signal")):
        s = _obj(s)
        c = s.get("counter")
        if not isinstance(c, str) or c not in per_step:
            raise _Bad("signal counter")
        signals.append((c, _int(s.get("add"), 1)))
    accesses = []
    for kind in ("read", "write"):
        for r in _list(t.get(kind)):
            r = _obj(r)
            buf = r.get("buffer")
            if not isinstance(buf, str) or buf not in buffers:
                raise _Bad("buffer")
            lo, hi, st = _int(r.get("begin"), 0), _int(r.get("end"), 1), _int(r.get("stride", 0), 0)
            if lo >= hi or hi + (steps - 1) * st > buffers[buf]:
                raise _Bad("range")
            acc = r.get("accumulate", False)
            if type(acc) is not bool or (acc and kind == "read"):
                raise _Bad("accumulate")
            accesses.append((buf, lo, hi, st, kind == "write", acc))
    return RefTask(t["id"], _int(t.get("smem_bytes", 0), 0), tuple(waits), tuple(signals),
                   tuple(accesses))


def read_reference(doc: Any) -> RefProgram | None:
    """The program, or None when it is not well-formed."""
    try:
        doc = _obj(doc)
        launch = _obj(doc.get("launch"))
        lau = {"blocks": _int(launch.get("blocks"), 1), "threads": _int(launch.get("threads"), 32),
               "blocks_per_sm": _int(launch.get("blocks_per_sm", 1), 1),
               "smem_bytes": _int(launch.get("smem_bytes", 0), 0)}
        if lau["threads"] > 1024 or lau["threads"] % 32:
            raise _Bad("threads")
        target = doc.get("target")
        if target is not None:
            for key in TARGET_KEYS:
                _int(_obj(target).get(key), 1)
            if not isinstance(target.get("name", ""), str):
                raise _Bad("target name")
        steps = _int(doc.get("steps"), 1)
        buffers = {n: _int(_obj(v).get("bytes"), 1) for n, v in _obj(doc.get("buffers")).items()}
        per_step = {n: _int(_obj(v).get("per_step"), 1)
                    for n, v in _obj(doc.get("counters")).items()}
        queues = tuple(tuple(_task(t, buffers, per_step, steps) for t in _list(q))
                       for q in _list(doc.get("queues")))
        if len(queues) != lau["blocks"]:
            raise _Bad("queue count")
        ids = [t.id for q in queues for t in q]
        if len(set(ids)) != len(ids):
            raise _Bad("duplicate ids")
        return RefProgram(lau, target, steps, buffers, per_step, queues)
    except _Bad:
        return None


def static_failures(p: RefProgram, fallback_target: dict[str, Any]) -> set[str]:
    """Which of co_resident and epoch_exact fail."""
    failed = set()
    t = p.target if p.target is not None else fallback_target
    la = p.launch
    if (la["blocks"] > t["sms"] * la["blocks_per_sm"]
            or la["blocks_per_sm"] > t["max_blocks_per_sm"]
            or la["blocks_per_sm"] * la["threads"] > t["max_threads_per_sm"]
            or la["blocks_per_sm"] * la["smem_bytes"] > t["smem_per_sm"]
            or la["smem_bytes"] > t["smem_per_block"]
            or any(task.smem > la["smem_bytes"] for q in p.queues for task in q)):
        failed.add(CO_RESIDENT)
    sums = dict.fromkeys(p.per_step, 0)
    for q in p.queues:
        for task in q:
            for c, add in task.signals:
                sums[c] += add
    if sums != p.per_step:
        failed.add(EPOCH_EXACT)
    return failed


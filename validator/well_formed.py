"""Property 1, well-formed: every name resolves, every number is in range, every range is in
bounds for every step, the queue count matches the grid, task ids are unique.

The checks never assume a field has the right type: a Program built in code, or parsed by
``Program.from_dict`` (which checks only JSON shape), may hold anything. A bad value becomes
a violation, never an exception.
"""

from __future__ import annotations

from typing import Any

from amk_tune.errors import ProgramError
from validator.verdict import WELL_FORMED, Violation, capped
from vm.program import Launch, Program, Range, Signal, Task, Wait

TARGET_FIELDS = ("sms", "smem_per_sm", "smem_per_block", "max_threads_per_sm", "max_blocks_per_sm")


def is_int(x: Any) -> bool:
    """A JSON integer: an int that is not a bool."""
    return isinstance(x, int) and not isinstance(x, bool)


def parse_document(doc: Any) -> tuple[Program | None, list[Violation]]:
    """``doc`` (an amk-program header already checked) as a Program, or the shape error.

    A shape error (a missing field, a field of the wrong JSON type) is a well-formedness
    violation of an amk-program, not a reason to refuse the file.
    """
    try:
        return Program.from_dict(doc), []
    except ProgramError as e:
        return None, [Violation(WELL_FORMED, (), f"{e}; fix the program's JSON shape")]


class _Collector:
    def __init__(self) -> None:
        self.found: list[Violation] = []

    def add(self, message: str, *tasks: str) -> None:
        self.found.append(Violation(WELL_FORMED, tuple(tasks), message))


def _check_int(out: _Collector, value: Any, what: str, low: int, fix: str) -> bool:
    if is_int(value) and value >= low:
        return True
    out.add(f"{what} = {value!r} must be an integer >= {low}; {fix}")
    return False


def _check_launch(out: _Collector, launch: Any, steps: Any) -> None:
    if not isinstance(launch, Launch):
        out.add(f"launch is {type(launch).__name__}, not a launch object")
        return
    _check_int(out, launch.blocks, "launch.blocks", 1, "launch at least one block")
    t = launch.threads
    if not (is_int(t) and 32 <= t <= 1024 and t % 32 == 0):
        out.add(f"launch.threads = {t!r} must be a multiple of 32 from 32 to 1024")
    _check_int(out, launch.blocks_per_sm, "launch.blocks_per_sm", 1, "use 1 or more")
    _check_int(out, launch.smem_bytes, "launch.smem_bytes", 0, "use 0 or more bytes")
    _check_int(out, steps, "steps", 1, "a launch runs at least one decode step")


def _check_target(out: _Collector, target: Any) -> None:
    if target is None:
        return
    if not isinstance(target, dict):
        out.add(f"target = {target!r} must be an object with {', '.join(TARGET_FIELDS)}")
        return
    for key in TARGET_FIELDS:
        _check_int(out, target.get(key), f"target.{key}", 1, "give the GPU's real limit")
    if "name" in target and not isinstance(target["name"], str):
        out.add(f"target.name = {target['name']!r} must be a string")


class _Tables:
    """The declared names, and the sizes among them that are usable."""

    def __init__(self) -> None:
        self.buffer_names: set[str] = set()
        self.counter_names: set[str] = set()
        self.buffers: dict[str, int] = {}
        self.counters: dict[str, int] = {}

    def has_buffer(self, name: Any) -> bool:
        return isinstance(name, str) and name in self.buffer_names

    def has_counter(self, name: Any) -> bool:
        return isinstance(name, str) and name in self.counter_names


def _check_tables(out: _Collector, program: Program) -> _Tables:
    """The buffers and counters tables, after reporting bad sizes."""
    tables = _Tables()
    if not isinstance(program.buffers, dict) or not isinstance(program.counters, dict):
        out.add("buffers and counters must be objects keyed by name")
        return tables
    tables.buffer_names = {n for n in program.buffers if isinstance(n, str)}
    tables.counter_names = {n for n in program.counters if isinstance(n, str)}
    buffers, counters = tables.buffers, tables.counters
    for name, size in program.buffers.items():
        if _check_int(out, size, f"buffers[{name!r}].bytes", 1, "declare the buffer's real size"):
            buffers[name] = size
    for name, per_step in program.counters.items():
        if _check_int(out, per_step, f"counters[{name!r}].per_step", 1,
                      "per_step is what one step's signals add up to"):
            counters[name] = per_step
    return tables


def _check_range(out: _Collector, r: Any, tid: str, kind: str, tables: _Tables,
                 steps: int) -> None:
    if not isinstance(r, Range):
        out.add(f"task {tid!r}: a {kind} entry is {type(r).__name__}, not a range", tid)
        return
    if not tables.has_buffer(r.buffer):
        out.add(f"task {tid!r} {kind}s unknown buffer {r.buffer!r}: declare it under "
                "'buffers' or fix the name", tid)
        return
    if not (is_int(r.begin) and is_int(r.end) and is_int(r.stride)):
        out.add(f"task {tid!r} {kind}s {r.buffer!r} with begin={r.begin!r}, end={r.end!r}, "
                f"stride={r.stride!r}: all must be integers", tid)
        return
    if r.stride < 0:
        out.add(f"task {tid!r} {kind}s {r.buffer!r} with stride {r.stride} < 0", tid)
        return
    if type(r.accumulate) is not bool or (r.accumulate and kind == "read"):
        out.add(f"task {tid!r} {kind}s {r.buffer!r} with accumulate = {r.accumulate!r}: only "
                "a write may accumulate (true or false)", tid)
        return
    if not 0 <= r.begin < r.end:
        out.add(f"task {tid!r} {kind}s {r.buffer!r} bytes [{r.begin}, {r.end}): a range needs "
                "0 <= begin < end", tid)
        return
    size = tables.buffers.get(r.buffer)
    if size is None:  # the buffer's own size is bad; reported already
        return
    last = r.end + (steps - 1) * r.stride
    if last > size:
        where = "" if last == r.end else f" at step {steps - 1} (stride {r.stride})"
        out.add(f"task {tid!r} {kind}s {r.buffer!r} up to byte {last}{where}, but "
                f"{r.buffer!r} has {size} bytes: shrink the range or grow the buffer", tid)


def _items(x: Any) -> list[Any]:
    return list(x) if isinstance(x, tuple | list) else [x]


def _fine(task: Task, tables: _Tables, last_step: int) -> bool:
    """The common case, a task with nothing wrong, decided without building messages."""
    sizes, per_step = tables.buffers, tables.counters
    smem = task.smem_bytes
    if type(task.op) is not str or type(smem) is not int or smem < 0:
        return False
    lists = (task.wait, task.signal, task.read, task.write)
    if any(type(x) not in (tuple, list) for x in lists):
        return False
    for w in task.wait:
        if type(w) is not Wait or type(w.counter) is not str or type(w.value) is not int:
            return False
        if not 1 <= w.value <= per_step.get(w.counter, 0):
            return False
    for sig in task.signal:
        if type(sig) is not Signal or type(sig.counter) is not str or type(sig.add) is not int:
            return False
        if sig.counter not in per_step or sig.add < 1:
            return False
    for ranges, may_accumulate in ((task.read, False), (task.write, True)):
        for r in ranges:
            if type(r) is not Range or type(r.buffer) is not str:
                return False
            if r.accumulate is not False and not (may_accumulate and r.accumulate is True):
                return False
            lo, hi, stride = r.begin, r.end, r.stride
            if type(lo) is not int or type(hi) is not int or type(stride) is not int:
                return False
            if stride < 0 or not 0 <= lo < hi or hi + last_step * stride > sizes.get(r.buffer, 0):
                return False
    return True


def _check_task(out: _Collector, task: Task, tables: _Tables, steps: int) -> None:
    if _fine(task, tables, steps - 1):
        return
    counters = tables.counters
    tid = task.id
    if not isinstance(task.op, str):
        out.add(f"task {tid!r}: op = {task.op!r} must be a string", tid)
    _check_int(out, task.smem_bytes, f"task {tid!r} smem_bytes", 0, "use 0 or more bytes")
    for w in _items(task.wait):
        if not isinstance(w, Wait):
            out.add(f"task {tid!r}: a wait entry is {type(w).__name__}, not a wait", tid)
        elif not tables.has_counter(w.counter):
            out.add(f"task {tid!r} waits on unknown counter {w.counter!r}: declare it under "
                    "'counters' or fix the name", tid)
        elif w.counter in counters and not (
            is_int(w.value) and 1 <= w.value <= counters[w.counter]
        ):
            out.add(f"task {tid!r} waits for {w.counter!r} value {w.value!r}, outside "
                    f"1..{counters[w.counter]} (its per_step)", tid)
    for s in _items(task.signal):
        if not isinstance(s, Signal):
            out.add(f"task {tid!r}: a signal entry is {type(s).__name__}, not a signal", tid)
        elif not tables.has_counter(s.counter):
            out.add(f"task {tid!r} signals unknown counter {s.counter!r}: declare it under "
                    "'counters' or fix the name", tid)
        else:
            _check_int(out, s.add, f"task {tid!r} signal add to {s.counter!r}", 1,
                       "a signal adds at least 1")
    for kind, ranges in (("read", task.read), ("write", task.write)):
        for r in _items(ranges):
            _check_range(out, r, tid, kind, tables, steps)


def well_formed_violations(program: Any) -> list[Violation]:
    """Every well-formedness problem of ``program`` (empty when it is well-formed)."""
    out = _Collector()
    if not isinstance(program, Program):
        out.add(f"not a program: {type(program).__name__}")
        return out.found
    _check_launch(out, program.launch, program.steps)
    _check_target(out, program.target)
    tables = _check_tables(out, program)
    steps = program.steps if is_int(program.steps) and program.steps >= 1 else 1
    queues = program.queues
    if not isinstance(queues, tuple | list):
        out.add("queues must be a list of task lists")
        return out.found
    blocks = getattr(program.launch, "blocks", None)
    if is_int(blocks) and len(queues) != blocks:
        out.add(f"there are {len(queues)} queues but launch.blocks = {blocks}: give exactly "
                "one queue (possibly empty) per block")
    seen: dict[str, int] = {}
    for b, queue in enumerate(queues):
        if not isinstance(queue, tuple | list):
            out.add(f"queues[{b}] must be a list of tasks")
            continue
        for i, task in enumerate(queue):
            if not isinstance(task, Task) or not isinstance(task.id, str):
                out.add(f"queues[{b}][{i}] is not a task with a string id")
                continue
            if task.id in seen:
                out.add(f"task id {task.id!r} is used twice (blocks {seen[task.id]} and {b}): "
                        "task ids must be unique across all queues", task.id)
            else:
                seen[task.id] = b
            _check_task(out, task, tables, steps)
    return capped(WELL_FORMED, out.found, "well-formedness errors")

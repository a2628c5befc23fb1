"""The amk-program IR (version 1), exactly as ../shared/PROGRAM_FORMAT.md defines it.

Frozen dataclasses with a JSON round trip. ``Program.from_dict`` checks only the *shape*
(the keys and types a reader needs); the meaning (ranges in bounds, waits satisfiable,
co-residency, races) is the validator's job. Extra fields are kept in ``extra`` so that a
round trip never drops what a newer writer added.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amk_tune.errors import ProgramError
from amk_tune.json_file import read_json

FORMAT = "amk-program"
VERSION = 1


@dataclass(frozen=True)
class Range:
    """Bytes ``[begin, end)`` of ``buffer``, shifted by ``step * stride`` at step ``step``.

    ``accumulate`` (an extension of version 1, JSON ``"accumulate": true``, writes only):
    the write adds float32 values into the bytes atomically (``red.add``), so two
    accumulating writes commute and need no order between them; against a read or a plain
    write of the same bytes they are ordinary writes. A reader that does not know the
    field sees a plain write, which can only make it stricter.
    """

    buffer: str
    begin: int
    end: int
    stride: int = 0
    accumulate: bool = False

    def at(self, step: int) -> tuple[int, int]:
        return self.begin + step * self.stride, self.end + step * self.stride

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"buffer": self.buffer, "begin": self.begin, "end": self.end}
        if self.stride:
            d["stride"] = self.stride
        if self.accumulate:
            d["accumulate"] = True
        return d


@dataclass(frozen=True)
class Wait:
    """Passes in step ``s`` when ``counter >= s * per_step(counter) + value``."""

    counter: str
    value: int

    def to_dict(self) -> dict[str, Any]:
        return {"counter": self.counter, "value": self.value}


@dataclass(frozen=True)
class Signal:
    counter: str
    add: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"counter": self.counter, "add": self.add}


@dataclass(frozen=True)
class Task:
    id: str
    op: str
    wait: tuple[Wait, ...] = ()
    read: tuple[Range, ...] = ()
    write: tuple[Range, ...] = ()
    signal: tuple[Signal, ...] = ()
    smem_bytes: int = 0
    args: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    # the decoded instruction of ``op``/``args`` when lowering made the task (never
    # serialised; a program read from JSON decodes its args instead)
    instr: Any = field(default=None, hash=False, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "op": self.op,
            "wait": [w.to_dict() for w in self.wait],
            "read": [r.to_dict() for r in self.read],
            "write": [r.to_dict() for r in self.write],
            "signal": [s.to_dict() for s in self.signal],
            "smem_bytes": self.smem_bytes,
            "args": self.args,
        }


@dataclass(frozen=True)
class Launch:
    blocks: int
    threads: int
    blocks_per_sm: int = 1
    smem_bytes: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "blocks": self.blocks,
            "threads": self.threads,
            "blocks_per_sm": self.blocks_per_sm,
            "smem_bytes": self.smem_bytes,
        }


@dataclass(frozen=True)
class Program:
    launch: Launch
    steps: int
    buffers: dict[str, int]  # name -> bytes
    counters: dict[str, int]  # name -> per_step
    queues: tuple[tuple[Task, ...], ...]
    target: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    # -- views -------------------------------------------------------------------------
    def tasks(self) -> list[tuple[int, int, Task]]:
        """Every task as (block, index in its queue, task), in queue order."""
        return [(b, i, t) for b, q in enumerate(self.queues) for i, t in enumerate(q)]

    @property
    def task_count(self) -> int:
        return sum(len(q) for q in self.queues)

    # -- JSON --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": FORMAT, "version": VERSION}
        if self.target is not None:
            d["target"] = self.target
        d["launch"] = self.launch.to_dict()
        d["steps"] = self.steps
        d["buffers"] = {name: {"bytes": n} for name, n in self.buffers.items()}
        d["counters"] = {name: {"per_step": n} for name, n in self.counters.items()}
        d["queues"] = [[t.to_dict() for t in q] for q in self.queues]
        d.update(self.extra)
        return d

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(indent=1) + "\n")

    @staticmethod
    def from_dict(d: Any) -> Program:
        return _parse_program(d)

    @staticmethod
    def load(path: str | Path) -> Program:
        return Program.from_dict(read_program_json(path))


def read_program_json(path: str | Path) -> Any:
    """The decoded JSON of a program file, or ProgramError naming what is wrong."""
    return read_json(path, "program", ProgramError)


def check_header(d: Any) -> None:
    """Raise ProgramError unless ``d`` is an amk-program object of a version we read."""
    if not isinstance(d, dict):
        raise ProgramError(f"an amk-program is a JSON object, got {type(d).__name__}")
    if d.get("format") != FORMAT:
        raise ProgramError(f"'format' is {d.get('format')!r}, expected {FORMAT!r}")
    if d.get("version") != VERSION:
        raise ProgramError(f"'version' is {d.get('version')!r}; this tool reads version {VERSION}")


_KNOWN_KEYS = {"format", "version", "target", "launch", "steps", "buffers", "counters", "queues"}


def _need(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise ProgramError(f"{where}: missing field {key!r}")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ProgramError(f"{where}.{key} = {value!r} has the wrong type")
    return value


def _optional_int(obj: dict, key: str, where: str) -> int:
    value = obj.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProgramError(f"{where}.{key} = {value!r} has the wrong type")
    return value


def _range(r: Any, where: str, *, write: bool) -> Range:
    stride = r.get("stride", 0) if isinstance(r, dict) else 0
    if isinstance(stride, bool) or not isinstance(stride, int):
        raise ProgramError(f"{where}.stride = {stride!r} has the wrong type")
    accumulate = r.get("accumulate", False) if isinstance(r, dict) else False
    if not isinstance(accumulate, bool):
        raise ProgramError(f"{where}.accumulate = {accumulate!r} has the wrong type (true or "
                           "false)")
    if accumulate and not write:
        raise ProgramError(f"{where}.accumulate = true on a read: only a write accumulates "
                           "(drop the field, or move the range to 'write')")
    return Range(
        _need(r, "buffer", str, where),
        _need(r, "begin", int, where),
        _need(r, "end", int, where),
        stride,
        accumulate,
    )


def _task(t: Any, where: str) -> Task:
    lists = {k: _need(t, k, list, where) for k in ("wait", "read", "write", "signal")}
    args = t.get("args", {})
    if not isinstance(args, dict):
        raise ProgramError(f"{where}.args = {args!r} is not an object")
    return Task(
        id=_need(t, "id", str, where),
        op=_need(t, "op", str, where),
        wait=tuple(
            Wait(_need(w, "counter", str, f"{where}.wait"), _need(w, "value", int, f"{where}.wait"))
            for w in lists["wait"]
        ),
        read=tuple(_range(r, f"{where}.read", write=False) for r in lists["read"]),
        write=tuple(_range(r, f"{where}.write", write=True) for r in lists["write"]),
        signal=tuple(
            Signal(_need(s, "counter", str, f"{where}.signal"),
                   _need(s, "add", int, f"{where}.signal"))
            for s in lists["signal"]
        ),
        smem_bytes=_optional_int(t, "smem_bytes", where),
        args=args,
    )


def _parse_program(d: Any) -> Program:
    check_header(d)
    launch = _need(d, "launch", dict, "program")
    buffers = _need(d, "buffers", dict, "program")
    counters = _need(d, "counters", dict, "program")
    queues = _need(d, "queues", list, "program")
    target = d.get("target")
    if target is not None and not isinstance(target, dict):
        raise ProgramError(f"program.target = {target!r} is not an object")
    for i, q in enumerate(queues):
        if not isinstance(q, list):
            raise ProgramError(f"queues[{i}] is not a list")
    return Program(
        launch=Launch(
            blocks=_need(launch, "blocks", int, "launch"),
            threads=_need(launch, "threads", int, "launch"),
            blocks_per_sm=launch.get("blocks_per_sm", 1),
            smem_bytes=_optional_int(launch, "smem_bytes", "launch"),
        ),
        steps=_need(d, "steps", int, "program"),
        buffers={n: _need(b, "bytes", int, f"buffers[{n!r}]") for n, b in buffers.items()},
        counters={n: _need(c, "per_step", int, f"counters[{n!r}]") for n, c in counters.items()},
        queues=tuple(
            tuple(_task(t, f"queues[{b}][{i}]") for i, t in enumerate(q))
            for b, q in enumerate(queues)
        ),
        target=target,
        extra={k: v for k, v in d.items() if k not in _KNOWN_KEYS},
    )

"""The instruction ABI shared by lowering, the reference VM and (later) the CUDA build.

An instruction is a frozen dataclass whose fields are exactly a task's ``args``. It knows
three things about itself:

- ``accesses(geom)``: the byte ranges it reads and writes, which lowering copies into the
  task (so the declared footprint and the executed one come from one place);
- ``run(ctx, step)``: its NumPy float32 twin, the living definition of its meaning;
- its op name, under which ``REGISTRY`` finds it when a Program is decoded.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from amk_tune.errors import ProgramError
from amk_tune.model.weights import SCALE_SUFFIX
from vm.program import Range

F32 = 4  # bytes of an activation element (fp32 residual stream, fp32 scratch)
I32 = 4
BF16 = 2  # bytes of a bf16 weight element
INT8 = 1


def weight_buffer(tensor: str) -> str:
    """The program buffer that holds weight tensor ``tensor``."""
    return f"w.{tensor}"


def scale_buffer(tensor: str) -> str:
    """The program buffer that holds the float32 scales of int8 weight tensor ``tensor``."""
    return f"w.{tensor}{SCALE_SUFFIX}"


@dataclass(frozen=True)
class Geometry:
    """What an instruction needs to turn its args into byte ranges.

    ``position`` is the sequence position of step 0 of the launch, ``steps`` the decode
    steps of the launch, ``weight_shapes`` the shape of every weight tensor. Weights are
    bf16 unless an instruction says its matrix is int8 (``int8_rows``).
    """

    position: int
    steps: int
    weight_shapes: dict[str, tuple[int, ...]]

    def weight_rows(self, tensor: str, r0: int, r1: int) -> Range:
        cols = self.weight_shapes[tensor][-1]
        return Range(weight_buffer(tensor), r0 * cols * BF16, r1 * cols * BF16)

    def int8_rows(self, tensor: str, r0: int, r1: int, group: int) -> list[Range]:
        """Rows ``[r0, r1)`` of int8 ``tensor``: their codes, and their float32 scales (one
        per ``group`` columns of a row)."""
        cols = self.weight_shapes[tensor][-1]
        per_row = cols // group * F32
        return [Range(weight_buffer(tensor), r0 * cols * INT8, r1 * cols * INT8),
                Range(scale_buffer(tensor), r0 * per_row, r1 * per_row)]

    def weight_all(self, tensor: str) -> Range:
        return Range(weight_buffer(tensor), 0, math.prod(self.weight_shapes[tensor]) * BF16)


class ExecContext(Protocol):
    """What a NumPy twin may touch. Arrays are views: writing them writes the buffer."""

    def f32(self, buffer: str) -> np.ndarray: ...
    def i32(self, buffer: str) -> np.ndarray: ...
    def weight(self, tensor: str) -> np.ndarray: ...
    def position(self, step: int) -> int: ...
    def rope(self, position: int) -> tuple[np.ndarray, np.ndarray]: ...
    def rms_eps(self) -> float: ...
    def forced(self, step: int) -> bool:
        """True when the host supplied the token of step ``step`` (a prompt token)."""
        ...


Accesses = tuple[list[Range], list[Range]]


class Instruction:
    """Base of every instruction dataclass (see the module docstring)."""

    op: ClassVar[str]

    def accesses(self, geom: Geometry) -> Accesses:
        raise NotImplementedError

    def run(self, ctx: ExecContext, step: int) -> None:
        raise NotImplementedError

    def to_args(self) -> dict[str, Any]:
        return {name: plain(getattr(self, name)) for name in field_names(type(self))}

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> Instruction:
        return build_dataclass(cls, args)


REGISTRY: dict[str, type[Instruction]] = {}


def register(cls: type[Instruction]) -> type[Instruction]:
    """Class decorator: make ``cls`` decodable under ``cls.op``."""
    if cls.op in REGISTRY:
        raise ValueError(f"instruction op {cls.op!r} registered twice")
    REGISTRY[cls.op] = cls
    return cls


def decode(op: str, args: dict[str, Any]) -> Instruction:
    """The instruction of a task, or ProgramError for an unknown op or bad args."""
    import instructions  # noqa: F401  (registers every instruction)

    cls = REGISTRY.get(op)
    if cls is None:
        raise ProgramError(f"unknown instruction op {op!r}; known: {', '.join(sorted(REGISTRY))}")
    try:
        return cls.from_args(args)
    except (TypeError, KeyError, ValueError) as e:
        raise ProgramError(f"bad args for op {op!r}: {e}") from None


@functools.cache
def field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


_SCALARS = (int, float, str, bool, type(None))


def plain(value: Any) -> Any:
    """A field value in JSON shape: nested dataclasses as objects, tuples as lists."""
    if type(value) in _SCALARS:
        return value
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if dataclasses.is_dataclass(value):
        to_args = getattr(value, "to_args", None)
        if to_args is not None:
            return to_args()
        return {name: plain(getattr(value, name)) for name in field_names(type(value))}
    return value


def build_dataclass(cls: type, args: Any) -> Any:
    """Rebuild a (possibly nested) frozen dataclass from its ``to_args`` form."""
    if not isinstance(args, dict):
        raise TypeError(f"{cls.__name__} args must be an object, got {args!r}")
    unknown = set(args) - set(field_names(cls))
    if unknown:
        raise KeyError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in args.items():
        nested = NESTED.get((cls.__name__, name))
        if nested is not None:
            kwargs[name] = nested(value)
        elif isinstance(value, list):
            kwargs[name] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


# (dataclass name, field) -> decoder, for fields that hold a nested dataclass
NESTED: dict[tuple[str, str], Any] = {}

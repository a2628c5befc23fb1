"""The task encoding: ONE registry that makes both the Python packer and the CUDA header.

Every task of a Program becomes one fixed-size int32 record::

    header  op, task, n_wait, (counter, per_step, value) x MAX_WAITS,
            n_signal, (counter, add) x MAX_SIGNALS
    args    the op's fields (``OP_FIELDS``), laid out from ``ARGS``; unused slots are 0

A wait passes in step ``s`` when ``counters[counter] >= s * per_step + value``
(PROGRAM_FORMAT.md). Buffer-valued fields hold an index into the launch's buffer table,
whose first two entries are always ``tokens`` and ``out_tokens``; weight tensors are the
buffers ``w.<tensor>`` (an int8 matrix's scales: ``w.<tensor>.scale``); ``-1`` means "none".
``header_text()`` emits the same layout as ``constexpr`` values, so the CUDA side never
hand-copies an offset or an op code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from amk_tune.errors import BuildError
from amk_tune.model.spec import ModelSpec
from amk_tune.model.weights import TRANSPOSE_SUFFIX
from instructions.argmax import Argmax
from instructions.attention import Attention
from instructions.attn_o import AttnO
from instructions.base import decode, scale_buffer, weight_buffer
from instructions.epilogues import (
    LogitsArgmax,
    QkvRope,
    QkvSpan,
    Residual,
    SiluDown,
    SiluMul,
    Store,
)
from instructions.gemv import GEMV_DTYPES, Gemv
from instructions.token import Token
from instructions.unfused import ResidualAdd, RmsNorm, RopeAppend, SiluMulVec
from instructions.vec_source import KINDS as SRC_KINDS
from instructions.vec_source import VecSource
from vm.program import Program

MAX_WAITS = 4
MAX_SIGNALS = 4
FIXED_BUFFERS = ("tokens", "out_tokens")  # indices 0 and 1 of every buffer table

HEADER_FIELDS: tuple[str, ...] = (
    "op", "task", "n_wait",
    *(f"w{i}_{f}" for i in range(MAX_WAITS) for f in ("counter", "per_step", "value")),
    "n_signal",
    *(f"s{i}_{f}" for i in range(MAX_SIGNALS) for f in ("counter", "add")),
)
ARGS = len(HEADER_FIELDS)


def _vec(prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}_{f}" for f in ("kind", "n", "buf", "parts", "head_dim"))


# op name -> its argument fields, in record order. The op code is the position here.
OP_FIELDS: dict[str, tuple[str, ...]] = {
    "token": ("vocab",),
    "gemv": (
        "matrix", "nseg", "s0a", "s0b", "s1a", "s1b", *_vec("src"), "norm", "epi",
        "dst", *_vec("res"), "head", "p0", "p1", "heads", "kv_heads", "head_dim", "max_seq",
        "q", "k_cache", "v_cache", "vocab", "part", "tile", "wdtype", "scale", "qgroup",
        "copy", "down", "down_cols", "down_scale", "down_group", "down_spr",
        *_vec("cp"), "cp_r0", "cp_r1", "cp_dst0", "cp_dst1",
    ),
    "attention": ("group", "part", "parts", "heads", "kv_heads", "head_dim", "max_seq", "q",
                  "k_cache", "v_cache", "out"),
    "argmax": ("src", "tiles", "vocab"),
    # attention's fields at attention's offsets (attention.cuh reads both through them)
    "attn_o": ("group", "part", "parts", "heads", "kv_heads", "head_dim", "max_seq", "q",
               "k_cache", "v_cache", "out", "matrix", "r0", "r1", "vrow0", "dst0", "dst1"),
    "rmsnorm": (*_vec("src"), "weight", "dst"),
    "rope_append": ("group", "heads", "kv_heads", "head_dim", "max_seq", "src", "q", "k_cache",
                    "v_cache"),
    "residual_add": (*_vec("res"), "src", "dst"),
    "silu_mul": ("n", "src", "dst"),
}
OP_CODES = {name: i for i, name in enumerate(OP_FIELDS)}
EPILOGUE_CODES = {kind: i for i, kind in enumerate(
    ("store", "residual", "silu_mul", "qkv_rope", "logits_argmax", "qkv_span", "silu_down"))}
SRC_CODES = {kind: i for i, kind in enumerate(SRC_KINDS)}
WDTYPE_CODES = {dtype: i for i, dtype in enumerate(GEMV_DTYPES)}  # gemv field ``wdtype``
INT8_ALIGN = 16  # int8 codes per 16-byte load: K and the group are multiples of it
RECORD_INTS = ARGS + max(len(f) for f in OP_FIELDS.values())
_OP, _TASK, _N_WAIT, _N_SIGNAL = (HEADER_FIELDS.index(f) for f in ("op", "task", "n_wait",
                                                                  "n_signal"))
_W0, _S0 = HEADER_FIELDS.index("w0_counter"), HEADER_FIELDS.index("s0_counter")

# The device error record (int32 each), written once by the first block that fails.
ERROR_FIELDS = ("code", "task", "counter", "need", "seen", "step", "block")
ERROR_CODES = {"ok": 0, "watchdog": 1, "bad_token": 2, "bad_op": 3}
# Per block, what it was waiting for when the launch stopped (-1: it was not waiting).
STUCK_FIELDS = ("task", "counter", "need", "seen", "step")


@dataclass(frozen=True)
class Encoded:
    """A program as the kernel reads it. ``table[offsets[b]:offsets[b+1]]`` is block b's
    queue; ``buffers``/``counters``/``task_ids`` name the indices the records hold."""

    table: np.ndarray  # int32 [tasks, RECORD_INTS]
    offsets: np.ndarray  # int32 [blocks + 1]
    buffers: tuple[str, ...]
    counters: tuple[str, ...]
    task_ids: tuple[str, ...]

    def field(self, task: int, name: str) -> int:
        """One field of one record, by its registry name (header or the task's op)."""
        return int(self.table[task, offset(OP_NAMES[int(self.table[task, 0])], name)])


OP_NAMES = {code: name for name, code in OP_CODES.items()}


def offset(op: str, name: str) -> int:
    """Record offset of field ``name`` of ``op`` (header fields are common to all ops)."""
    if name in HEADER_FIELDS:
        return HEADER_FIELDS.index(name)
    return ARGS + OP_FIELDS[op].index(name)


# -- packing ---------------------------------------------------------------------------
class _Resolver:
    def __init__(self, buffers: dict[str, int], spec: ModelSpec) -> None:
        self.index = {name: i for i, name in enumerate(buffers)}
        self.spec = spec

    def buf(self, name: str) -> int:
        try:
            return self.index[name]
        except KeyError:
            raise BuildError(f"task refers to buffer {name!r}, which the program does not "
                             "declare") from None

    def weight(self, tensor: str | None) -> int:
        return -1 if tensor is None else self.buf(weight_buffer(tensor))

    def vec(self, prefix: str, v: VecSource, allowed: tuple[str, ...] = SRC_KINDS) -> dict:
        if v.kind not in allowed:
            raise BuildError(f"vector source kind {v.kind!r} is not supported here "
                             f"(supported: {allowed})")
        buf = self.weight("embed") if v.kind == "embed" else self.buf(v.buffer)
        return {f"{prefix}_kind": SRC_CODES[v.kind], f"{prefix}_n": v.n, f"{prefix}_buf": buf,
                f"{prefix}_parts": v.parts, f"{prefix}_head_dim": v.head_dim}


def _gemv(g: Gemv, r: _Resolver) -> dict[str, int]:
    if not 1 <= len(g.rows) <= 2:
        raise BuildError(f"a GEMV tile has 1 or 2 row segments, got {len(g.rows)}")
    (s0a, s0b), (s1a, s1b) = g.rows[0], g.rows[-1] if len(g.rows) == 2 else (0, 0)
    if len(g.rows) == 2 and s1b - s1a != s0b - s0a:
        raise BuildError(f"the two row segments of a GEMV tile differ in length: {g.rows}")
    if g.src.n % 8:
        raise BuildError(f"GEMV input length {g.src.n} is not a multiple of 8 (16-byte loads)")
    e = g.epilogue
    out = {"matrix": r.weight(g.matrix), "nseg": len(g.rows), "s0a": s0a, "s0b": s0b,
           "s1a": s1a, "s1b": s1b, **r.vec("src", g.src), "norm": r.weight(g.norm),
           "epi": EPILOGUE_CODES[e.kind], "copy": -1, "down_scale": -1,
           **_weight_format(g, r)}
    if isinstance(e, Store | SiluMul):
        out["dst"] = r.buf(e.dst)
    elif isinstance(e, Residual):
        out |= {"dst": r.buf(e.dst), **r.vec("res", e.res, ("buffer", "embed")),
                "copy": r.buf(e.copy) if e.copy else -1}
    elif isinstance(e, SiluDown):
        if e.dtype != g.dtype:
            raise BuildError(f"epilogue silu_down of {g.matrix!r}: down weights {e.dtype} "
                             f"under a {g.dtype} tile (the kernel streams both alike)")
        per_load = 16 if e.dtype == "int8" else 8  # elements of one 16-byte load
        if r.spec.hidden % per_load:
            raise BuildError(f"silu_down: hidden size {r.spec.hidden} is not a multiple of "
                             f"{per_load} (16-byte loads of the transposed {e.dtype} down rows)")
        out |= {"dst": r.buf(e.dst), "down": r.weight(e.down), "down_cols": r.spec.hidden}
        if e.dtype == "int8":
            base = e.down.removesuffix(TRANSPOSE_SUFFIX)
            out |= {"down_scale": r.buf(scale_buffer(base)), "down_group": e.group,
                    "down_spr": r.spec.intermediate // e.group}
    elif isinstance(e, QkvRope):
        out |= {"head": e.head, "p0": e.p0, "p1": e.p1, "heads": e.heads,
                "kv_heads": e.kv_heads, "head_dim": e.head_dim, "max_seq": e.max_seq,
                "q": r.buf(e.q), "k_cache": r.buf(e.k_cache), "v_cache": r.buf(e.v_cache)}
    elif isinstance(e, QkvSpan):  # p0 / p1: the flattened pair range f0 / f1, head unused
        out |= {"head": 0, "p0": e.f0, "p1": e.f1, "heads": e.heads,
                "kv_heads": e.kv_heads, "head_dim": e.head_dim, "max_seq": e.max_seq,
                "q": r.buf(e.q), "k_cache": r.buf(e.k_cache), "v_cache": r.buf(e.v_cache)}
    elif isinstance(e, LogitsArgmax):
        out |= {"dst": r.buf(e.logits), "vocab": e.vocab, "part": r.buf(e.part),
                "tile": e.tile}
    if g.copy is not None:
        cp = g.copy
        out |= {**r.vec("cp", cp.src, ("buffer", "embed")), "cp_r0": cp.r0, "cp_r1": cp.r1,
                "cp_dst0": r.buf(cp.dsts[0]),
                "cp_dst1": r.buf(cp.dsts[1]) if len(cp.dsts) > 1 else -1}
    if len(g.rows) == 2 and not isinstance(e, Store | Residual | SiluMul | SiluDown | QkvRope
                                           | QkvSpan):
        raise BuildError(f"epilogue {e.kind!r} takes one row segment")
    if isinstance(e, SiluMul | SiluDown | QkvRope | QkvSpan) and len(g.rows) != 2:
        raise BuildError(f"epilogue {e.kind!r} takes two row segments")
    return out


def _weight_format(g: Gemv, r: _Resolver) -> dict[str, int]:
    """``wdtype``, ``scale`` (the scales' buffer, -1 for bf16) and ``qgroup`` (columns per
    scale, 0 for bf16) of a GEMV tile."""
    if g.dtype == "bf16":
        return {"wdtype": WDTYPE_CODES["bf16"], "scale": -1, "qgroup": 0}
    k = g.src.n
    if k % INT8_ALIGN or g.group % INT8_ALIGN or k % g.group:
        raise BuildError(f"int8 GEMV of {g.matrix!r}: row length {k} and group {g.group} must "
                         f"be multiples of {INT8_ALIGN} (16-code loads), the group dividing K")
    return {"wdtype": WDTYPE_CODES[g.dtype], "scale": r.buf(scale_buffer(g.matrix)),
            "qgroup": g.group}


def _attention(a: Attention, r: _Resolver) -> dict[str, int]:
    return {"group": a.group, "part": a.part, "parts": a.parts, "heads": a.heads,
            "kv_heads": a.kv_heads, "head_dim": a.head_dim, "max_seq": a.max_seq,
            "q": r.buf(a.q), "k_cache": r.buf(a.k_cache), "v_cache": r.buf(a.v_cache),
            "out": r.buf(a.out) if a.out else -1}


def _attn_o(a: AttnO, r: _Resolver) -> dict[str, int]:
    ocols = a.heads // a.kv_heads * a.head_dim
    if ocols % 8:
        raise BuildError(f"attn_o: a KV group's {ocols} O columns are not a multiple of 8 "
                         "(16-byte loads)")
    hidden = r.spec.hidden  # the view's row of O row r0 over the group's columns
    return {**_attention(a, r), "out": -1, "matrix": r.weight(a.matrix), "r0": a.r0,
            "r1": a.r1, "vrow0": a.group * hidden + a.r0, "dst0": r.buf(a.dsts[0]),
            "dst1": r.buf(a.dsts[1]) if len(a.dsts) > 1 else -1}


def _rope_append(a: RopeAppend, r: _Resolver) -> dict[str, int]:
    return {"group": a.group, "heads": a.heads, "kv_heads": a.kv_heads,
            "head_dim": a.head_dim, "max_seq": a.max_seq, "src": r.buf(a.src),
            "q": r.buf(a.q), "k_cache": r.buf(a.k_cache), "v_cache": r.buf(a.v_cache)}


ENCODERS: dict[type, Callable[[Any, _Resolver], dict[str, int]]] = {
    Token: lambda t, r: {"vocab": r.spec.vocab},
    Gemv: _gemv,
    Attention: _attention,
    AttnO: _attn_o,
    Argmax: lambda a, r: {"src": r.buf(a.src), "tiles": a.tiles, "vocab": a.vocab},
    RmsNorm: lambda a, r: {**r.vec("src", a.src, ("buffer", "embed")),
                           "weight": r.weight(a.weight), "dst": r.buf(a.dst)},
    RopeAppend: _rope_append,
    ResidualAdd: lambda a, r: {**r.vec("res", a.res, ("buffer", "embed")), "src": r.buf(a.src),
                               "dst": r.buf(a.dst)},
    SiluMulVec: lambda a, r: {"n": a.n, "src": r.buf(a.src), "dst": r.buf(a.dst)},
}


def buffer_order(program: Program) -> tuple[str, ...]:
    """The launch's buffer table: ``tokens``, ``out_tokens``, then the rest in program order."""
    missing = [b for b in FIXED_BUFFERS if b not in program.buffers]
    if missing:
        raise BuildError(f"program lacks the buffer(s) {missing} every launch needs")
    return (*FIXED_BUFFERS, *(b for b in program.buffers if b not in FIXED_BUFFERS))


def encode(program: Program, spec: ModelSpec) -> Encoded:
    """Pack every queue of ``program`` into records (BuildError for what the kernel lacks)."""
    names = buffer_order(program)
    resolver = _Resolver({n: program.buffers[n] for n in names}, spec)
    counters = {name: i for i, name in enumerate(program.counters)}
    tasks = program.tasks()
    table = np.zeros((len(tasks), RECORD_INTS), dtype=np.int32)
    offsets = np.zeros(len(program.queues) + 1, dtype=np.int32)
    for b, q in enumerate(program.queues):
        offsets[b + 1] = offsets[b] + len(q)
    for row, (_, _, task) in enumerate(tasks):
        if task.op not in OP_CODES:
            raise BuildError(f"task {task.id!r}: op {task.op!r} has no CUDA implementation")
        if len(task.wait) > MAX_WAITS or len(task.signal) > MAX_SIGNALS:
            raise BuildError(f"task {task.id!r} has {len(task.wait)} waits / "
                             f"{len(task.signal)} signals; the record holds {MAX_WAITS} / "
                             f"{MAX_SIGNALS}")
        rec = table[row]
        rec[_OP], rec[_TASK], rec[_N_WAIT] = OP_CODES[task.op], row, len(task.wait)
        for i, w in enumerate(task.wait):
            if w.counter not in counters:
                raise BuildError(f"task {task.id!r} waits on undeclared counter {w.counter!r}")
            rec[_W0 + 3 * i : _W0 + 3 * i + 3] = (counters[w.counter],
                                                  program.counters[w.counter], w.value)
        rec[_N_SIGNAL] = len(task.signal)
        for i, s in enumerate(task.signal):
            if s.counter not in counters:
                raise BuildError(f"task {task.id!r} signals undeclared counter {s.counter!r}")
            rec[_S0 + 2 * i : _S0 + 2 * i + 2] = (counters[s.counter], s.add)
        instr = task.instr if getattr(task.instr, "op", None) == task.op else (
            decode(task.op, task.args))
        fields = ENCODERS[type(instr)](instr, resolver)
        layout = OP_FIELDS[task.op]
        for name, value in fields.items():
            rec[ARGS + layout.index(name)] = value
    return Encoded(table, offsets, names, tuple(program.counters), tuple(t.id for _, _, t in tasks))


# -- the CUDA side ---------------------------------------------------------------------
def _ident(name: str) -> str:
    return name.upper()


def header_text() -> str:
    """``enc::`` constants: record layout, op/epilogue/source codes, error record."""
    lines = [
        "// GENERATED by vm/encoding.py: the task encoding. Do not edit.",
        "#pragma once",
        "namespace enc {",
        f"constexpr int kRecordInts = {RECORD_INTS};",
        f"constexpr int kMaxWaits = {MAX_WAITS};",
        f"constexpr int kMaxSignals = {MAX_SIGNALS};",
        f"constexpr int kArgs = {ARGS};",
        *(f"constexpr int F_{_ident(f)} = {i};" for i, f in enumerate(HEADER_FIELDS)),
        *(f"constexpr int OP_{_ident(op)} = {c};" for op, c in OP_CODES.items()),
        *(f"constexpr int EPI_{_ident(k)} = {c};" for k, c in EPILOGUE_CODES.items()),
        *(f"constexpr int SRC_{_ident(k)} = {c};" for k, c in SRC_CODES.items()),
        *(f"constexpr int WDT_{_ident(k)} = {c};" for k, c in WDTYPE_CODES.items()),
        *(f"constexpr int kBuf{n.title().replace('_', '')} = {i};"
          for i, n in enumerate(FIXED_BUFFERS)),
        f"constexpr int kErrorInts = {len(ERROR_FIELDS)};",
        *(f"constexpr int ERRF_{_ident(f)} = {i};" for i, f in enumerate(ERROR_FIELDS)),
        *(f"constexpr int ERR_{_ident(k)} = {c};" for k, c in ERROR_CODES.items()),
        f"constexpr int kStuckInts = {len(STUCK_FIELDS)};",
        *(f"constexpr int STUCK_{_ident(f)} = {i};" for i, f in enumerate(STUCK_FIELDS)),
    ]
    for op, fields in OP_FIELDS.items():
        body = " ".join(f"constexpr int {_ident(f)} = {ARGS + i};" for i, f in enumerate(fields))
        lines.append(f"namespace {op} {{ {body} }}")
    lines.append("}  // namespace enc")
    return "\n".join(lines) + "\n"

"""Lowering: ModelSpec + Schedule -> Program (PROGRAM_FORMAT.md).

One decode step is a list of *stages* in dependency order; every task waits only on
counters signalled by earlier stages, and every block runs its tasks in stage order, so
the program is deadlock-free by construction (the validator checks it anyway). Per step:

    token (block 0)                              signals tok
    per layer l:
      [rmsnorm]            unless fuse_norm
      QKV tiles            signal qkv.L{l}.g{g} per KV group (RoPE + KV append fused;
                           qkv_span: a tile of two groups signals both)
      [rope_append x G]    unless fuse_rope
      attention G x split  waits on its group only; signals attn.L{l}
      O tiles (+residual)  signal h.L{l}          [residual_add unless fuse_residual]
      [rmsnorm]
      gate/up tiles (+SiLU-mul)  signal act.L{l}  [silu_mul unless fuse_silu]
      down tiles (+residual)     signal x.L{l}    [residual_add]
      (fuse_down: the O tiles also write x.L{l} = h, and the gate/up tiles add their
       down-projection parts into it with atomic adds and signal x.L{l}; no down stage)
      (fuse_o: the QKV tiles also copy the layer input into h.L{l} (and x.L{l} with
       fuse_down) and signal one counter qkv.L{l}; attention tasks of tiles / G rows of O
       each add their O rows into them and signal h.L{l}; no O stage)
    [rmsnorm], LM-head tiles (+partial argmax) signal lm
    argmax (block 0)                             writes tokens[step + 1]

Cross-step order comes from block 0 alone: argmax of step s precedes token of step s + 1.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field

from amk_tune.model.quantise import gemv_matrices, group_problem
from amk_tune.model.spec import ModelSpec
from amk_tune.model.weights import (
    GROUPED_SUFFIX,
    SCALE_SUFFIX,
    TRANSPOSE_SUFFIX,
    VIEW_SUFFIX,
    lm_head_tensor,
    view_base,
    view_shapes,
    weight_shapes,
)
from amk_tune.targets import Target
from instructions.argmax import Argmax
from instructions.attention import Attention
from instructions.attn_o import AttnO
from instructions.base import BF16, F32, I32, INT8, Geometry, Instruction, weight_buffer
from instructions.epilogues import (
    LogitsArgmax,
    QkvRope,
    QkvSpan,
    Residual,
    SiluDown,
    SiluMul,
    Store,
)
from instructions.gemv import Gemv
from instructions.row_copy import RowCopy
from instructions.token import Token
from instructions.unfused import ResidualAdd, RmsNorm, RopeAppend, SiluMulVec
from instructions.vec_source import VecSource
from space.schedule import Schedule
from vm.placement import place
from vm.program import Launch, Program, Signal, Task, Wait

WEIGHT_BYTES = {"bf16": BF16, "int8": INT8}  # bytes of one GEMV-matrix element


@dataclass
class Draft:
    """A task before placement: its instruction, its waits (full waits on named
    counters, value = per_step) and the counter it signals."""

    id: str
    instr: Instruction
    waits: tuple[str, ...] = ()
    signal: str | tuple[str, ...] | None = None

    def signals(self) -> tuple[str, ...]:
        if self.signal is None:
            return ()
        return (self.signal,) if isinstance(self.signal, str) else self.signal


@dataclass
class Stage:
    name: str
    tasks: list[Draft] = field(default_factory=list)


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """``[0, n)`` in ``min(parts, n)`` contiguous near-equal ranges."""
    parts = max(1, min(parts, n))
    return [(i * n // parts, (i + 1) * n // parts) for i in range(parts)]


def qkv_tiles(spec: ModelSpec, target: int) -> list[tuple[int, int, int]]:
    """(head in [q; k; v], p0, p1): every head split into the same number of RoPE-pair
    ranges, the divisor of D/2 whose tile count is closest to ``target`` (ties: fewer
    tiles, so that with one tile per block no block runs two QKV tiles in a row)."""
    half, heads = spec.head_dim // 2, spec.heads + 2 * spec.kv_heads
    divisors = [d for d in range(1, half + 1) if half % d == 0]
    per_head = min(divisors, key=lambda d: (abs(heads * d - target), d))
    return [(h, a, b) for h in range(heads) for a, b in split(half, per_head)]


def qkv_spans(spec: ModelSpec, target: int) -> list[tuple[int, int]]:
    """``min(target, pairs)`` equal ranges ``(f0, f1)`` of the RoPE pairs of all heads of
    [q; k; v], flattened head-major (``qkv_span``)."""
    pairs = (spec.heads + 2 * spec.kv_heads) * spec.head_dim // 2
    return split(pairs, min(target, pairs))


def _qkv_group(spec: ModelSpec, head: int) -> int:
    if head < spec.heads:
        return head // spec.group
    return (head - spec.heads) % spec.kv_heads


class _Lowerer:
    def __init__(self, spec: ModelSpec, sched: Schedule, target: Target, *, steps: int,
                 max_seq: int, dtype: str, quant_group: int) -> None:
        self.spec, self.s, self.target = spec, sched, target
        self.steps, self.max_seq = steps, max_seq
        self.blocks = target.sms * sched.blocks_per_sm
        self.tiles = sched.tiles or self.blocks
        self.dtype, self.quant_group = dtype, quant_group
        self.wbytes = WEIGHT_BYTES[dtype]
        self.shapes = weight_shapes(spec, dtype) | view_shapes(spec)
        self.quantised = set(gemv_matrices(spec, dtype))
        self.quantised |= {v for v in view_shapes(spec) if view_base(v) in self.quantised}
        self.buffers: dict[str, int] = {}
        self.stages: list[Stage] = []

    # -- helpers ---------------------------------------------------------------------
    def buf(self, name: str, nbytes: int) -> str:
        self.buffers[name] = nbytes
        return name

    def vec(self, name: str, n: int) -> VecSource:
        return VecSource("buffer", n, self.buf(name, n * F32))

    def stage(self, name: str, tasks: list[Draft]) -> None:
        self.stages.append(Stage(name, tasks))

    def norm_input(self, src: VecSource, weight: str, dst: str, wait: tuple[str, ...],
                   tag: str) -> tuple[VecSource, str | None, tuple[str, ...]]:
        """(input, folded norm weight, waits) for a GEMV stage reading ``src`` normed."""
        if self.s.fuse_norm:
            return src, weight, wait
        out = self.vec(dst, src.n)
        self.stage(tag, [Draft(tag, RmsNorm(src, weight, out.buffer), wait, tag)])
        return out, None, (tag,)

    def gemv_stage(self, tag: str, matrix: str, rows: list[tuple[tuple[int, int], ...]],
                   src: VecSource, norm: str | None, waits: tuple[str, ...], epilogue,
                   signal, copies: list[RowCopy] | None = None) -> None:
        """One GEMV tile per row-segment tuple; ``epilogue(i, rows)`` and ``signal(i)``;
        tile ``i`` also carries ``copies[i]`` when there is one."""
        fmt = {}
        if self.dtype == "int8":
            fmt = {"dtype": "int8", "group": self.quant_group or self.shapes[matrix][-1]}
        copies = copies or []
        self.stage(tag, [
            Draft(f"{tag}.{i}", Gemv(matrix, r, src, norm, epilogue(i, r), **fmt,
                                     copy=copies[i] if i < len(copies) else None), waits,
                  signal(i))
            for i, r in enumerate(rows)
        ])

    def input_copies(self, x: VecSource, tiles: int, dsts: tuple[str, ...]) -> list[RowCopy]:
        """``fuse_o``: the rows of ``x`` split over ``tiles`` tiles, copied into ``dsts``."""
        return [RowCopy(x, a, b, dsts) for a, b in split(x.n, tiles)]

    # -- the model -----------------------------------------------------------------------
    def build(self) -> _Lowerer:
        sp = self.spec
        self.buf("tokens", (self.steps + 1) * I32)
        self.buf("out_tokens", self.steps * I32)
        self.stage("token", [Draft("token", Token(), (), "tok")])
        x = VecSource("embed", sp.hidden)
        ready: tuple[str, ...] = ("tok",)
        for layer in range(sp.layers):
            x, ready = self.layer(layer, x, ready)
        self.lm_head(x, ready)
        self.place()
        return self

    def layer(self, index: int, x: VecSource,
              ready: tuple[str, ...]) -> tuple[VecSource, tuple[str, ...]]:
        sp, s, L = self.spec, self.s, f"L{index}"
        d = sp.head_dim
        q = self.buf(f"q.{L}", sp.heads * d * F32)
        cache = sp.kv_heads * self.max_seq * d * F32
        kc, vc = self.buf(f"k_cache.{L}", cache), self.buf(f"v_cache.{L}", cache)
        # attention input: QKV tiles (RoPE + append fused, or raw + rope_append per group)
        src, norm, waits = self.norm_input(x, f"{L}.attn_norm", f"xn.{L}.attn", ready,
                                           f"{L}.norm_attn")
        out_name = f"x.{L}"
        starts = (f"h.{L}", out_name) if s.fuse_down else (f"h.{L}",)  # fuse_o's sums
        for name in starts if s.fuse_o else ():
            self.vec(name, sp.hidden)
        if s.qkv_span:
            self.qkv_span_stage(L, src, norm, waits, q, kc, vc, x, starts)
        else:
            self.qkv_head_stage(L, src, norm, waits, q, kc, vc, x, starts)
        if s.fuse_o:
            h = self.attn_o_stage(L, q, kc, vc, starts)
        else:
            h = self.attn_stage(L, q, kc, vc, x, out_name)
        # MLP
        src, norm, waits = self.norm_input(h, f"{L}.mlp_norm", f"xn.{L}.mlp", (f"h.{L}",),
                                           f"{L}.norm_mlp")
        inter = sp.intermediate
        if s.fuse_down:  # gate/up + SiLU-mul + down, added into x.L (started before)
            rows = [((a, b), (inter + a, inter + b)) for a, b in split(inter, self.tiles)]
            down = f"{L}.wd{TRANSPOSE_SUFFIX}"
            fmt = {}
            if self.dtype == "int8":
                fmt = {"dtype": "int8", "group": self.quant_group or inter}
            self.gemv_stage(f"{L}.gu", f"{L}.wgu", rows, src, norm, waits,
                            lambda i, r: SiluDown(out_name, down, **fmt), lambda i: out_name)
            out = VecSource("buffer", sp.hidden, out_name)
            return out, (out_name,)
        return self.mlp_unfused_down(L, h, src, norm, waits, out_name)

    def attn_stage(self, L: str, q: str, kc: str, vc: str, x: VecSource,
                   out_name: str) -> VecSource:
        """Attention per KV group and partition, then the O tiles (+ residual): ``h.L``."""
        sp, s, d, kvh = self.spec, self.s, self.spec.head_dim, self.spec.kv_heads
        parts = s.split_kv
        if parts == 1:
            att = self.buf(f"attn.{L}", sp.heads * d * F32)
            o_src = VecSource("buffer", sp.heads * d, att)
        else:
            att = self.buf(f"attn_part.{L}", sp.heads * parts * (d + 2) * F32)
            o_src = VecSource("attn_partials", sp.heads * d, att, parts, d)
        self.stage(f"{L}.attn", [
            Draft(f"{L}.attn.g{g}.p{j}",
                  Attention(g, j, parts, sp.heads, kvh, d, self.max_seq, q, kc, vc, att),
                  (f"qkv.{L}.g{g}",), f"attn.{L}")
            for g in range(kvh) for j in range(parts)
        ])
        return self.residual_gemv(f"{L}.o", f"{L}.wo", o_src, None, (f"attn.{L}",), x,
                                  f"h.{L}", f"o.{L}", f"{L}.res_attn",
                                  copy=out_name if s.fuse_down else "")

    def attn_o_stage(self, L: str, q: str, kc: str, vc: str,
                     starts: tuple[str, ...]) -> VecSource:
        """``fuse_o``: per KV group, ``tiles / G`` tasks of attention + a row range of O,
        added into ``starts`` (the QKV tiles copied the layer input there first, so every
        task waits for all of them). Signals ``h.L``."""
        sp = self.spec
        per_group = max(1, min(self.tiles // sp.kv_heads, sp.hidden))
        self.stage(f"{L}.attn", [
            Draft(f"{L}.attn.g{g}.o{c}",
                  AttnO(g, 0, 1, sp.heads, sp.kv_heads, sp.head_dim, self.max_seq, q, kc, vc,
                        "", f"{L}.wo{GROUPED_SUFFIX}", a, b, starts),
                  (f"qkv.{L}",), f"h.{L}")
            for g in range(sp.kv_heads) for c, (a, b) in enumerate(split(sp.hidden, per_group))
        ])
        return VecSource("buffer", sp.hidden, f"h.{L}")

    def mlp_unfused_down(self, L: str, h: VecSource, src: VecSource, norm: str | None,
                         waits: tuple[str, ...], out_name: str) -> tuple[VecSource,
                                                                          tuple[str, ...]]:
        """Gate/up (+ SiLU-mul, or its own stage), then the down tiles (+ residual)."""
        s, inter = self.s, self.spec.intermediate
        if s.fuse_silu:
            act = self.vec(f"act.{L}", inter)
            rows = [((a, b), (inter + a, inter + b)) for a, b in split(inter, self.tiles)]
            self.gemv_stage(f"{L}.gu", f"{L}.wgu", rows, src, norm, waits,
                            lambda i, r: SiluMul(act.buffer), lambda i: f"act.{L}")
        else:
            gu = self.buf(f"gu.{L}", 2 * inter * F32)
            rows = [((a, b),) for a, b in split(2 * inter, self.tiles)]
            self.gemv_stage(f"{L}.gu", f"{L}.wgu", rows, src, norm, waits,
                            lambda i, r: Store(gu), lambda i: f"gu.{L}")
            act = self.vec(f"act.{L}", inter)
            self.stage(f"{L}.silu", [Draft(f"{L}.silu", SiluMulVec(inter, gu, act.buffer),
                                           (f"gu.{L}",), f"act.{L}")])
        out = self.residual_gemv(f"{L}.down", f"{L}.wd", act, None, (f"act.{L}",), h,
                                 out_name, f"d.{L}", f"{L}.res_mlp")
        return out, (out.buffer,)

    def qkv_head_stage(self, L: str, src: VecSource, norm: str | None,
                       waits: tuple[str, ...], q: str, kc: str, vc: str, x: VecSource,
                       starts: tuple[str, ...]) -> None:
        """QKV tiles of one head each (``qkv_tiles``): RoPE + append fused, or raw rows and a
        rope_append task per KV group. Each tile signals its group's ``qkv.L.g`` counter
        (``fuse_o``: the one ``qkv.L``, and it copies its rows of ``x`` into ``starts``)."""
        sp, d = self.spec, self.spec.head_dim
        tiles = qkv_tiles(sp, self.tiles)
        half = d // 2
        seg = [((h * d + a, h * d + b), (h * d + half + a, h * d + half + b)) for h, a, b in tiles]
        if self.s.fuse_rope:
            def epi(i, rows):
                h, a, b = tiles[i]
                return QkvRope(h, a, b, sp.heads, sp.kv_heads, d, self.max_seq, q, kc, vc)
            group_ready = f"qkv.{L}.g"
        else:
            raw = self.buf(f"qkv.{L}", sp.qkv_rows * F32)
            def epi(i, rows):
                return Store(raw)
            group_ready = f"qkvraw.{L}.g"
        if self.s.fuse_o:
            self.gemv_stage(f"{L}.qkv", f"{L}.wqkv", seg, src, norm, waits, epi,
                            lambda i: f"qkv.{L}", self.input_copies(x, len(seg), starts))
            return
        self.gemv_stage(f"{L}.qkv", f"{L}.wqkv", seg, src, norm, waits, epi,
                        lambda i: f"{group_ready}{_qkv_group(sp, tiles[i][0])}")
        if not self.s.fuse_rope:
            self.stage(f"{L}.rope", [
                Draft(f"{L}.rope.g{g}",
                      RopeAppend(g, sp.heads, sp.kv_heads, d, self.max_seq, raw, q, kc, vc),
                      (f"qkvraw.{L}.g{g}",), f"qkv.{L}.g{g}")
                for g in range(sp.kv_heads)
            ])

    def qkv_span_stage(self, L: str, src: VecSource, norm: str | None,
                       waits: tuple[str, ...], q: str, kc: str, vc: str, x: VecSource,
                       starts: tuple[str, ...]) -> None:
        """QKV tiles of equal pair ranges across heads (``qkv_spans``) over the halves
        view: a tile signals the ``qkv.L.g`` counter of every KV group it writes. There are
        as many tiles as the projections' tile count less the attention tasks, so that
        with one tile per block (rotate) the attention tasks land on blocks that ran no QKV
        tile and start as soon as their group is written (on a block still running its own
        tile, the H200 trace showed the hop into attention take 2.1 us instead of 0.8).
        With ``fuse_o`` every attention task waits for every tile (which copy the layer
        input into ``starts``): one tile per block, one counter ``qkv.L``."""
        sp, half = self.spec, self.spec.head_dim // 2
        count = self.tiles if self.s.fuse_o else self.tiles - sp.kv_heads * self.s.split_kv
        spans = qkv_spans(sp, max(1, count))
        total = (sp.heads + 2 * sp.kv_heads) * half
        rows = [((a, b), (total + a, total + b)) for a, b in spans]

        def groups(i: int) -> tuple[str, ...]:
            a, b = spans[i]
            found = dict.fromkeys(_qkv_group(sp, h) for h in range(a // half, (b - 1) // half + 1))
            return tuple(f"qkv.{L}.g{g}" for g in found)

        def epi(i: int, r: object) -> QkvSpan:
            return QkvSpan(*spans[i], sp.heads, sp.kv_heads, sp.head_dim, self.max_seq, q, kc,
                           vc)

        if self.s.fuse_o:
            self.gemv_stage(f"{L}.qkv", f"{L}.wqkv{VIEW_SUFFIX}", rows, src, norm, waits, epi,
                            lambda i: f"qkv.{L}", self.input_copies(x, len(rows), starts))
        else:
            self.gemv_stage(f"{L}.qkv", f"{L}.wqkv{VIEW_SUFFIX}", rows, src, norm, waits, epi,
                            groups)

    def residual_gemv(self, tag: str, matrix: str, src: VecSource, norm: str | None,
                      waits: tuple[str, ...], res: VecSource, dst: str, raw: str,
                      res_tag: str, copy: str = "") -> VecSource:
        """``dst = res + W @ src``, the add fused into the tiles or as its own stage.
        The ready counter of ``dst`` is named after it. ``copy``: a second buffer the
        fused tiles write the same rows to (``Residual.copy``)."""
        n = self.shapes[matrix][0]
        rows = [((a, b),) for a, b in split(n, self.tiles)]
        out = self.vec(dst, n)
        if copy:
            self.vec(copy, n)
        if self.s.fuse_residual:
            self.gemv_stage(tag, matrix, rows, src, norm, waits,
                            lambda i, r: Residual(dst, res, copy), lambda i: dst)
        else:
            tmp = self.vec(raw, n)
            self.gemv_stage(tag, matrix, rows, src, norm, waits,
                            lambda i, r: Store(tmp.buffer), lambda i: raw)
            self.stage(res_tag, [Draft(res_tag, ResidualAdd(res, raw, dst), (raw,), dst)])
        return out

    def lm_head(self, x: VecSource, ready: tuple[str, ...]) -> None:
        sp, s = self.spec, self.s
        src, norm, waits = self.norm_input(x, "final_norm", "xn.final", ready, "final_norm")
        matrix = lm_head_tensor(sp, self.dtype)
        logits = self.buf("logits", self.steps * sp.vocab * F32)
        rows = [((a, b),) for a, b in split(sp.vocab, s.lm_tiles or self.blocks)]
        part = self.buf("lm_part", 2 * len(rows) * F32)
        self.gemv_stage("lm", matrix, rows, src, norm, waits,
                        lambda i, r: LogitsArgmax(logits, sp.vocab, part, i), lambda i: "lm")
        tiles = len(rows) if s.fuse_argmax else 0
        src_buf = part if s.fuse_argmax else logits
        self.stage("argmax", [Draft("argmax", Argmax(src_buf, tiles, sp.vocab), ("lm",))])

    # -- assembly --------------------------------------------------------------------------
    def place(self) -> None:
        """Place the stages on blocks and fix everything of a task that does not depend on
        the launch's position (all but its byte ranges)."""
        per_step: dict[str, int] = {}
        for st in self.stages:
            for t in st.tasks:
                for c in t.signals():
                    per_step[c] = per_step.get(c, 0) + 1
        self.counters = per_step
        self.placed = tuple(
            tuple(
                Task(
                    id=t.id,
                    op=t.instr.op,
                    wait=tuple(Wait(c, per_step[c]) for c in t.waits),
                    signal=tuple(Signal(c, 1) for c in t.signals()),
                    smem_bytes=self.task_smem(t.instr),
                    args=t.instr.to_args(),
                    instr=t.instr,
                )
                for t in q
            )
            for q in place(self.stages, self.blocks, self.s.sm_policy)
        )

    def program(self, position: int) -> Program:
        """The program of a launch whose step 0 is at sequence ``position``."""
        geom = Geometry(position, self.steps, self.shapes)
        buffers = dict(self.buffers)
        queues = []
        for q in self.placed:
            tasks = []
            for t in q:
                reads, writes = t.instr.accesses(geom)
                for r in reads:
                    if r.buffer.startswith("w.") and r.buffer not in buffers:
                        buffers[r.buffer] = self.weight_buffer_bytes(r.buffer[2:])
                tasks.append(Task(t.id, t.op, t.wait, tuple(reads), tuple(writes), t.signal,
                                  t.smem_bytes, t.args, t.instr))
            queues.append(tuple(tasks))
        return Program(
            launch=Launch(self.blocks, self.s.threads, self.s.blocks_per_sm, self.s.smem_bytes),
            steps=self.steps,
            buffers=buffers,
            counters=dict(self.counters),
            queues=tuple(queues),
            target=self.target.program_dict(),
            extra={
                "model": dataclasses.asdict(self.spec),
                "dtype": self.dtype,
                **({"quant_group": self.quant_group} if self.dtype == "int8" else {}),
                "position": position,
                "max_seq": self.max_seq,
                "schedule": self.s.to_dict(),
            },
        )

    def weight_buffer_bytes(self, tensor: str) -> int:
        """Bytes of buffer ``w.<tensor>``: int8 codes or float32 scales of a quantised GEMV
        matrix (quantise.py), else a bf16 tensor."""
        if tensor.endswith(SCALE_SUFFIX):
            rows, cols = self.shapes[tensor.removesuffix(SCALE_SUFFIX)]
            return rows * (cols // (self.quant_group or cols)) * F32
        if self.dtype == "int8" and tensor in self.quantised:
            return math.prod(self.shapes[tensor]) * INT8
        return math.prod(self.shapes[tensor]) * BF16

    def task_smem(self, instr: Instruction) -> int:
        """Shared memory a task stages: a GEMV tile's weights, up to the launch's budget."""
        if not isinstance(instr, Gemv):
            return 0
        cols = self.shapes[instr.matrix][-1]
        rows = sum(b - a for a, b in instr.rows)
        return min(rows * cols * self.wbytes, self.s.smem_bytes)


def lower(spec: ModelSpec, schedule: Schedule, target: Target, *, steps: int | None = None,
          position: int = 0, max_seq: int | None = None, dtype: str = "bf16",
          quant_group: int = 0) -> Program:
    """The program of ``steps`` decode steps (default ``schedule.steps_per_launch``) starting
    at sequence ``position``, with KV caches of ``max_seq`` rows (default: just enough), for
    weights stored as ``dtype`` (int8: ``quant_group`` columns per scale, 0 = per row)."""
    from amk_tune.errors import ScheduleError

    steps = schedule.steps_per_launch if steps is None else steps
    max_seq = position + steps if max_seq is None else max_seq
    if steps < 1:
        raise ScheduleError(f"steps = {steps!r}: a launch runs at least one decode step")
    if position < 0 or position + steps > max_seq:
        raise ScheduleError(
            f"positions {position}..{position + steps - 1} do not fit a KV cache of "
            f"{max_seq} rows: raise max_seq or lower the position"
        )
    if dtype not in WEIGHT_BYTES:
        raise ScheduleError(
            f"dtype {dtype!r} is not lowered yet; choose one of {list(WEIGHT_BYTES)}"
        )
    if schedule.fuse_o and dtype != "bf16":
        raise ScheduleError(f"fuse_o = true with {dtype} weights: the fused O rows read the "
                            "grouped bf16 view of O (set fuse_o to false)")
    if dtype == "int8":
        problem = group_problem(spec, quant_group)
        if problem:
            raise ScheduleError(problem)
    elif quant_group != 0:
        raise ScheduleError(f"quant_group = {quant_group!r} for {dtype} weights: a "
                            "quantisation group only applies to int8 (use dtype int8, or "
                            "group 0)")
    return _placed(spec, schedule, target, steps, max_seq, dtype,
                   quant_group).program(position)


@functools.lru_cache(maxsize=4)
def _placed(spec: ModelSpec, schedule: Schedule, target: Target, steps: int, max_seq: int,
            dtype: str, quant_group: int) -> _Lowerer:
    """The position-independent part of a lowering: a generation's launches share it."""
    return _Lowerer(spec, schedule, target, steps=steps, max_seq=max_seq, dtype=dtype,
                    quant_group=quant_group).build()


__all__ = ["lower", "qkv_tiles", "split", "weight_buffer"]

"""The CPU reference VM: runs a Program task by task in NumPy float32.

It is the living definition of the program's meaning: blocks run their queues in order,
``steps`` times; a task starts only when its waits pass (``counter >= step * per_step +
value``), runs its instruction's NumPy twin, then adds its signals. In seeded mode the next
block to advance is drawn at random among the runnable ones, so a missing dependency shows
up as a wrong answer (scratch buffers start as NaN) instead of hiding behind a lucky order.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

import numpy as np

from amk_tune.errors import VmDeadlock, VmError
from amk_tune.model.rope import rope_cos_sin
from amk_tune.model.spec import ModelSpec, RopeScaling
from amk_tune.model.weights import ModelWeights, storage_name
from instructions.base import Instruction, decode
from vm.program import Program, Task


def spec_of(program: Program) -> ModelSpec:
    """The ModelSpec lowering recorded in the program (extension field ``model``)."""
    try:
        d = dict(program.extra["model"])
    except KeyError:
        raise VmError("program has no 'model' field: only lowered programs can run") from None
    if d.get("rope_scaling") is not None:
        d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
    return ModelSpec(**d)


def check_storage(program: Program, weights: ModelWeights) -> None:
    """VmError unless ``weights`` are stored as ``program`` was lowered for (its extension
    fields ``dtype`` and ``quant_group``)."""
    want = (program.extra.get("dtype", "bf16"), program.extra.get("quant_group", 0))
    if want != (weights.dtype, weights.quant_group):
        raise VmError(f"program was lowered for {storage_name(*want)} weights but these are "
                      f"{weights.storage}: lower it for these weights")


@dataclass
class VmState:
    """Buffers that outlive one launch: the KV caches (and every scratch buffer, re-poisoned
    only when created). One state serves all launches of one generation."""

    buffers: dict[str, np.ndarray] = field(default_factory=dict)

    def ensure(self, name: str, nbytes: int) -> np.ndarray:
        buf = self.buffers.get(name)
        if buf is None or buf.nbytes != nbytes:
            buf = np.full(nbytes // 4, np.nan, dtype=np.float32).view(np.uint8)
            self.buffers[name] = buf
        return buf


@dataclass(frozen=True)
class LaunchResult:
    tokens: np.ndarray  # [steps] greedy token of every step
    logits: np.ndarray  # [steps, vocab]


class _Context:
    """The ExecContext the instruction twins see."""

    def __init__(self, vm: ReferenceVM, forced_upto: int) -> None:
        self.vm, self.forced_upto = vm, forced_upto
        self._rope: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def f32(self, buffer: str) -> np.ndarray:
        return self.vm.state.buffers[buffer].view(np.float32)

    def i32(self, buffer: str) -> np.ndarray:
        return self.vm.state.buffers[buffer].view(np.int32)

    def weight(self, tensor: str) -> np.ndarray:
        return self.vm.weights.tensor(tensor)

    def position(self, step: int) -> int:
        return self.vm.position + step

    def rope(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        if position not in self._rope:
            self._rope[position] = rope_cos_sin(self.vm.spec, position)
        return self._rope[position]

    def rms_eps(self) -> float:
        return self.vm.spec.rms_eps

    def forced(self, step: int) -> bool:
        return step < self.forced_upto


class ReferenceVM:
    def __init__(self, program: Program, weights: ModelWeights, state: VmState | None = None):
        self.program = program
        self.spec = spec_of(program)
        if self.spec != weights.spec:
            raise VmError(
                f"program was lowered for model {self.spec.name!r} but the weights are "
                f"{weights.spec.name!r}: lower the program for these weights"
            )
        check_storage(program, weights)
        self.weights = weights
        self.position = int(program.extra.get("position", 0))
        self.state = state or VmState()
        self.instrs: list[list[Instruction]] = [
            [t.instr if getattr(t.instr, "op", None) == t.op else decode(t.op, t.args) for t in q]
            for q in program.queues
        ]

    def run(self, tokens: list[int], *, seed: int | None = None) -> LaunchResult:
        """One launch. ``tokens`` are the host-supplied tokens of steps ``0..len-1`` (at
        least the first); later steps take the previous step's argmax. ``seed`` picks a
        random valid interleaving of the blocks; None runs them in a fixed order."""
        p = self.program
        if not 1 <= len(tokens) <= p.steps:
            raise VmError(
                f"a launch of {p.steps} steps takes 1..{p.steps} tokens, got {len(tokens)}"
            )
        for name, nbytes in p.buffers.items():
            if not name.startswith("w."):
                self.state.ensure(name, nbytes)
        tok = self.state.buffers["tokens"].view(np.int32)
        tok[:] = -1
        tok[: len(tokens)] = tokens
        ctx = _Context(self, len(tokens))
        _Scheduler(p, self.instrs, ctx, seed).run()
        vocab = self.spec.vocab
        logits = self.state.buffers["logits"].view(np.float32).reshape(p.steps, vocab).copy()
        out = self.state.buffers["out_tokens"].view(np.int32).copy()
        return LaunchResult(out, logits)


class _Scheduler:
    """Event-driven interleaving: a block is runnable when its head task's waits pass;
    blocked blocks park on the counter they wait for and wake when it is signalled."""

    def __init__(self, program: Program, instrs, ctx: _Context, seed: int | None) -> None:
        self.p, self.instrs, self.ctx = program, instrs, ctx
        self.rng = random.Random(seed) if seed is not None else None
        self.counters = dict.fromkeys(program.counters, 0)
        self.pc = [0] * len(program.queues)  # index into queue
        self.step = [0] * len(program.queues)
        # counter -> heap of (threshold, block): a signal wakes only the blocks it satisfies
        self.parked: dict[str, list[tuple[int, int]]] = {}

    def blocker(self, b: int) -> tuple[str, int] | None:
        """The first (counter, threshold) the head task of block ``b`` still waits for."""
        task = self.p.queues[b][self.pc[b]]
        for w in task.wait:
            need = self.step[b] * self.p.counters[w.counter] + w.value
            if self.counters[w.counter] < need:
                return w.counter, need
        return None

    def run(self) -> None:
        steps = self.p.steps
        live = [b for b, q in enumerate(self.p.queues) if q]
        ready: list[int] = []
        for b in live:
            self.try_ready(b, ready)
        done = 0
        while ready:
            i = self.rng.randrange(len(ready)) if self.rng else 0
            b = ready[i]
            ready[i] = ready[-1]
            ready.pop()
            task = self.p.queues[b][self.pc[b]]
            self.execute(b, task)
            self.pc[b] += 1
            if self.pc[b] == len(self.p.queues[b]):
                self.pc[b], self.step[b] = 0, self.step[b] + 1
            if self.step[b] == steps:
                done += 1
            else:
                self.try_ready(b, ready)
            for sig in task.signal:
                heap = self.parked.get(sig.counter)
                value = self.counters[sig.counter]
                while heap and heap[0][0] <= value:
                    self.try_ready(heapq.heappop(heap)[1], ready)
        if done != len(live):
            self.deadlock()

    def try_ready(self, b: int, ready: list[int]) -> None:
        blk = self.blocker(b)
        if blk is None:
            ready.append(b)
        else:
            heapq.heappush(self.parked.setdefault(blk[0], []), (blk[1], b))

    def execute(self, b: int, task: Task) -> None:
        try:
            self.instrs[b][self.pc[b]].run(self.ctx, self.step[b])
        except (ValueError, IndexError) as e:
            raise VmError(f"task {task.id!r} (block {b}, step {self.step[b]}) failed: {e}") from e
        for sig in task.signal:
            self.counters[sig.counter] += sig.add

    def deadlock(self) -> None:
        stuck = []
        for b, q in enumerate(self.p.queues):
            if q and self.step[b] < self.p.steps:
                c, need = self.blocker(b) or ("?", 0)
                stuck.append(
                    f"block {b} task {q[self.pc[b]].id!r} (step {self.step[b]}) waits "
                    f"{c} >= {need}, has {self.counters.get(c)}"
                )
        shown = "; ".join(stuck[:5]) + (f"; ... {len(stuck) - 5} more" if len(stuck) > 5 else "")
        raise VmDeadlock(f"deadlock: {shown}")

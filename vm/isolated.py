"""One task alone, on the GPU and through its NumPy twin, on the same random inputs.

``isolate`` cuts a task out of a lowered program into a one-block, one-step program that
declares only the buffers the task touches (its waits and signals dropped). ``random_state``
fills every activation buffer with fresh random numbers and poisons the task's declared
writes with NaN. ``compare`` then checks, buffer by buffer, that the GPU wrote every byte
it declared (no NaN left), agrees with the twin there, and left every other byte alone.
``stage_only`` keeps some tasks of a program on their own blocks, unsynchronised: loop 1
times a role's whole stage that way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from amk_tune.model.quantise import dequantise, gemv_matrices, quantise_rows
from amk_tune.model.weights import (
    SCALE_SUFFIX,
    ModelWeights,
    round_to_bf16,
    view_base,
    view_shapes,
    weight_shapes,
)
from vm.program import Launch, Program, Task
from vm.reference_vm import ReferenceVM, VmState, spec_of

ALWAYS = ("tokens", "out_tokens", "logits")  # every launch (and the reference VM) needs them


def _named(args, buffers: dict[str, int]) -> set[str]:
    """Every buffer an args tree names (a QKV tile holds q and both caches, touching one)."""
    if isinstance(args, dict):
        return set().union(*(_named(v, buffers) for v in args.values()))
    if isinstance(args, list | tuple):
        return set().union(*(_named(v, buffers) for v in args))
    if isinstance(args, str):
        return {n for n in (args, f"w.{args}") if n in buffers}
    return set()


def _touched(program: Program, tasks: list[Task]) -> dict[str, int]:
    """The buffers of ``program`` that ``tasks`` read, write or name (and ALWAYS)."""
    names = set(ALWAYS)
    for task in tasks:
        names |= {r.buffer for r in (*task.read, *task.write)} | _named(task.args,
                                                                       program.buffers)
    return {n: b for n, b in program.buffers.items() if n in names}


def isolate(program: Program, task: Task, threads: int | None = None) -> Program:
    buffers = _touched(program, [task])
    lone = dataclasses.replace(task, wait=(), signal=())
    launch = Launch(1, threads or program.launch.threads, 1, program.launch.smem_bytes)
    return dataclasses.replace(program, launch=launch, buffers=buffers, counters={},
                               queues=((lone,),))


def stage_only(program: Program, task_ids: set[str]) -> Program:
    """The tasks ``task_ids`` of ``program``, each on the block the program placed it on,
    their waits and signals dropped, with only the buffers they touch. One launch runs them
    the way their stages run inside the megakernel, all blocks at once, minus the hand-offs
    between stages. Only for timing: tasks that read what another of them writes race."""
    kept = [t for _, _, t in program.tasks() if t.id in task_ids]
    queues = tuple(tuple(dataclasses.replace(t, wait=(), signal=()) for t in q
                         if t.id in task_ids) for q in program.queues)
    return dataclasses.replace(program, buffers=_touched(program, kept), counters={},
                               queues=queues)


def task_weights(program: Program, seed: int) -> ModelWeights:
    """Random weights for exactly the tensors the program's buffers name, in the program's
    storage (bf16; or int8: its GEMV matrices quantised as amk_tune/model/quantise.py does)."""
    spec = spec_of(program)
    dtype, group = program.extra.get("dtype", "bf16"), program.extra.get("quant_group", 0)
    shapes = weight_shapes(spec, dtype) | view_shapes(spec)
    quantised = set(gemv_matrices(spec, dtype)) if dtype == "int8" else set()
    quantised |= {v for v in view_shapes(spec) if view_base(v) in quantised}
    rng = np.random.default_rng(seed)
    tensors, codes, scales = {}, {}, {}
    for name in program.buffers:
        tensor = name[2:]
        if not name.startswith("w.") or tensor.endswith(SCALE_SUFFIX):
            continue
        shape = shapes[tensor]
        if len(shape) == 1:
            a = 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
        else:
            a = rng.standard_normal(shape, dtype=np.float32)
            a *= np.float32(1.0 / np.sqrt(shape[1]))
        tensors[tensor] = round_to_bf16(a)
        if tensor in quantised:
            codes[tensor], scales[tensor] = quantise_rows(tensors[tensor], group)
            tensors[tensor] = dequantise(codes[tensor], scales[tensor])
    return ModelWeights(spec, dtype, tensors, group, codes, scales)


@dataclass(frozen=True)
class Inputs:
    buffers: dict[str, np.ndarray]  # float32 views of every activation buffer
    written: dict[str, np.ndarray]  # bool masks (per float) of the declared writes
    token: int


def random_state(program: Program, seed: int) -> Inputs:
    spec = spec_of(program)
    rng = np.random.default_rng(seed)
    (task,) = program.queues[0]
    token = int(rng.integers(0, spec.vocab))
    bufs, masks = {}, {}
    for name, nbytes in program.buffers.items():
        if name.startswith("w."):
            continue
        a = rng.standard_normal(nbytes // 4, dtype=np.float32)
        if name.startswith("attn_part"):  # flash partials: (max, sum > 0, acc[D]) per row
            w = program.extra["model"]["head_dim"] + 2
            a.reshape(-1, w)[:, 1] = rng.uniform(0.5, 2.0, a.size // w)
        if name == "lm_part":  # (max value, token index) pairs
            a.reshape(-1, 2)[:, 1] = rng.integers(0, spec.vocab, a.size // 2)
        if name in ("tokens", "out_tokens"):
            a = np.full(nbytes // 4, -1, np.int32).view(np.float32)
            a.view(np.int32)[0] = token
        masks[name] = np.zeros(a.size, bool)
        bufs[name] = a
    for r in task.write:
        a, b = r.at(0)
        masks[r.buffer][a // 4 : b // 4] = True
        if r.buffer not in ("tokens", "out_tokens"):
            bufs[r.buffer][a // 4 : b // 4] = np.nan
    return Inputs(bufs, masks, token)


def run_twin(program: Program, weights: ModelWeights, inputs: Inputs) -> dict[str, np.ndarray]:
    state = VmState({n: a.copy().view(np.uint8) for n, a in inputs.buffers.items()})
    ReferenceVM(program, weights, state).run([inputs.token])
    return {n: state.buffers[n].view(np.float32) for n in inputs.buffers}


def run_gpu(program: Program, weights: ModelWeights, inputs: Inputs,
            machine=None) -> dict[str, np.ndarray]:
    from vm.gpu_runner import GpuMachine

    m = machine or GpuMachine(weights)
    for name, a in inputs.buffers.items():
        m.buffers[name] = m.cp.asarray(a)
    m.launch(program, [inputs.token])
    return {n: m.buffers[n].get() for n in inputs.buffers}


def compare(inputs: Inputs, gpu: dict[str, np.ndarray], twin: dict[str, np.ndarray],
            rtol: float = 1e-4) -> list[str]:
    """Problems found (empty = pass). Floats in declared writes: never NaN (the poison),
    infinities exactly where the twin has them, the rest within ``rtol`` of the twin
    relative to the twin's largest magnitude there; int buffers equal; every undeclared
    float bit-identical to the input."""
    problems = []
    for name, before in inputs.buffers.items():
        g, t, mask = gpu[name], twin[name], inputs.written[name]
        if name in ("tokens", "out_tokens"):
            if not np.array_equal(g.view(np.int32), t.view(np.int32)):
                problems.append(f"{name}: gpu {g.view(np.int32)} twin {t.view(np.int32)}")
            continue
        if not np.array_equal(g[~mask].view(np.uint32), before[~mask].view(np.uint32)):
            problems.append(f"{name}: bytes outside the declared writes changed")
        if not mask.any():
            continue
        if name == "lm_part":  # the (value, index) pairs: indices exactly
            gi, ti = g.reshape(-1, 2)[:, 1], t.reshape(-1, 2)[:, 1]
            if not np.array_equal(gi[mask[1::2]], ti[mask[1::2]]):
                problems.append(f"{name}: arg-max indices differ")
        gw, tw = g[mask], t[mask]
        if np.isnan(gw).any():
            problems.append(f"{name}: {int(np.isnan(gw).sum())} declared floats not written "
                            "(still NaN) or NaN")
            continue
        inf = ~np.isfinite(gw) | ~np.isfinite(tw)  # e.g. the -inf max of an empty partition
        if not np.array_equal(gw[inf], tw[inf]):
            problems.append(f"{name}: infinities differ from the twin's")
            continue
        gw, tw = gw[~inf], tw[~inf]
        if not gw.size:
            continue
        scale = max(float(np.abs(tw).max()), 1e-6)
        err = float(np.abs(gw - tw).max()) / scale
        if not err <= rtol:
            problems.append(f"{name}: max error {err:.2e} of max |twin| {scale:.3g} > {rtol}")
    return problems

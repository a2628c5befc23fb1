"""Run programs on the GPU: the loader (residency check, cooperative launch, watchdog
report) and the Runner that ``vm.decode.greedy_generate`` drives.

``GpuMachine`` is one generation's device state: weights uploaded once as stored (bf16, or
int8 codes + float32 scales: ``ModelWeights.stored``), every activation / KV-cache buffer
fp32 and poisoned with NaN when first created (as the reference VM's ``VmState``), counters
zeroed once per launch. A launch whose blocks cannot all be resident is refused before it
starts; a wait that spins past the watchdog bound stops the kernel and is raised here as
``VmDeadlock`` naming the task and the counter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np

from amk_tune.errors import VmDeadlock, VmError
from amk_tune.model.rope import rope_cos_sin
from amk_tune.model.weights import ModelWeights
from space.kernel_knobs import KernelKnobs
from vm import encoding
from vm.build import (
    KERNEL_NAME,
    TRACE_STAMPS,
    Built,
    KernelConfig,
    build,
    config_for,
    epilogue_operands,
)
from vm.program import Program
from vm.reference_vm import LaunchResult, check_storage, spec_of

DEFAULT_WATCHDOG_S = 2.0


def _cupy():
    try:
        import cupy
    except ImportError as e:
        raise VmError("the GPU runner needs CuPy: pip install 'amk-tune[gpu]'") from e
    return cupy


def device_arch() -> str:
    cp = _cupy()
    return f"sm_{cp.cuda.Device().compute_capability}"


class GpuKernel:
    """A built megakernel loaded on the current device, with its residency limit."""

    def __init__(self, built: Built) -> None:
        cp = _cupy()
        self.built, self.config = built, built.config
        module = cp.RawModule(path=str(built.cubin), enable_cooperative_groups=True)
        self.fn = module.get_function(KERNEL_NAME)
        smem = self.config.smem_bytes
        if smem > 48 * 1024:
            self.fn.max_dynamic_shared_size_bytes = smem
        self.per_sm = cp.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(
            self.fn.kernel.ptr, self.config.threads, smem)
        self.sms = cp.cuda.Device().attributes["MultiProcessorCount"]
        self.registers = self.fn.num_regs
        self.spills = self.fn.local_size_bytes

    def check_resident(self, blocks: int) -> None:
        """Refuse a grid that cannot be co-resident: its spin-waits could hang forever."""
        if blocks > self.sms * self.per_sm:
            raise VmError(
                f"refusing to launch {blocks} blocks: only {self.per_sm} block(s) of "
                f"{self.config.threads} threads with {self.config.smem_bytes} B of shared "
                f"memory ({self.registers} registers/thread) fit on each of {self.sms} SMs; "
                "lower blocks_per_sm, threads or smem_bytes"
            )


@cache
def load_kernel(cfg: KernelConfig, arch: str) -> GpuKernel:
    return GpuKernel(build(cfg, arch))


@dataclass
class Prepared:
    """One launch ready to go (and to replay: bench times ``start`` back to back)."""

    kernel: GpuKernel
    args: tuple
    blocks: int
    steps: int
    encoded: encoding.Encoded
    trace_stride: int  # tasks per block over the launch (trace builds; else 0)


class GpuMachine:
    """Device buffers of one generation; ``launch`` runs one program on them."""

    def __init__(self, weights: ModelWeights, *, watchdog_s: float = DEFAULT_WATCHDOG_S,
                 arch: str | None = None, kernel: GpuKernel | None = None,
                 knobs: KernelKnobs | None = None, trace: bool = False) -> None:
        self.cp = _cupy()
        self.knobs = knobs or KernelKnobs()  # kernel knobs of what it builds (not ``kernel``)
        self.weights, self.spec = weights, weights.spec
        self.watchdog_ns = int(watchdog_s * 1e9)
        self.arch = arch or device_arch()
        self.kernel = kernel  # prebuilt for this generation's programs (an artifact's binary)
        self.buffers: dict[str, object] = {}
        self._weights: dict[str, object] = {}
        self._rope_rows: list[np.ndarray] = []
        self._rope = None
        self.counters = self.cp.zeros(1, dtype=self.cp.int32)
        self.error = self.cp.zeros(len(encoding.ERROR_FIELDS), dtype=self.cp.int32)
        self.stuck = self.cp.full(1, -1, dtype=self.cp.int32)
        self.trace = trace  # build with per-task time stamps (``traces``)
        self._trace = self.cp.zeros(1, dtype=self.cp.int64)

    # -- buffers ---------------------------------------------------------------------------
    def weight(self, name: str):
        """Upload buffer ``w.<name>`` once, as the weights store it (``ModelWeights.stored``)."""
        buf = self._weights.get(name)
        if buf is None:
            buf = self.cp.asarray(self.weights.stored(name))
            self._weights[name] = buf
        return buf

    def ensure(self, name: str, nbytes: int):
        """The fp32 buffer ``name``; created NaN-poisoned, kept while its size holds."""
        buf = self.buffers.get(name)
        if buf is None or buf.nbytes != nbytes:
            buf = self.cp.full(nbytes // 4, np.nan, dtype=self.cp.float32)
            self.buffers[name] = buf
        return buf

    def rope(self, positions: int):
        """Device table [positions][cos(D/2) | sin(D/2)], HF's exact float32 values."""
        while len(self._rope_rows) < positions:
            cos, sin = rope_cos_sin(self.spec, len(self._rope_rows))
            self._rope_rows.append(np.concatenate([cos, sin]).astype(np.float32))
            self._rope = None
        if self._rope is None or self._rope.shape[0] < positions:
            self._rope = self.cp.asarray(np.stack(self._rope_rows))
        return self._rope

    # -- launches --------------------------------------------------------------------------
    def prepare(self, program: Program, tokens: list[int]) -> Prepared:
        if spec_of(program) != self.spec:
            raise VmError(f"program was lowered for model {spec_of(program).name!r} but the "
                          f"weights are {self.spec.name!r}: lower it for these weights")
        check_storage(program, self.weights)
        steps = program.steps
        if not 1 <= len(tokens) <= steps:
            raise VmError(f"a launch of {steps} steps takes 1..{steps} tokens, got {len(tokens)}")
        if len(program.queues) != program.launch.blocks:
            raise VmError(f"{len(program.queues)} queues for a grid of {program.launch.blocks}")
        kernel = self.kernel or load_kernel(
            dataclasses.replace(config_for(program, self.spec, self.knobs), trace=self.trace),
            self.arch)
        kernel.check_resident(program.launch.blocks)
        need = epilogue_operands(program)
        if need > kernel.config.epi_floats:
            raise VmError(f"a GEMV tile of this program loads {need} epilogue operands but the "
                          f"kernel was built for at most {kernel.config.epi_floats}: build it "
                          "for this program (vm.build.config_for)")
        enc = encoding.encode(program, self.spec)  # ~0.3 s for SmolLM2: less than lowering
        table, offsets = self.cp.asarray(enc.table.ravel()), self.cp.asarray(enc.offsets)
        ptrs = []
        for name in enc.buffers:
            if name.startswith("w."):
                ptrs.append(self.weight(name[2:]).data.ptr)
            else:
                ptrs.append(self.ensure(name, program.buffers[name]).data.ptr)
        tok = np.full(steps + 1, -1, dtype=np.int32)
        tok[: len(tokens)] = tokens
        self.buffers["tokens"].set(tok.view(np.float32))
        if self.counters.size != max(1, len(enc.counters)):
            self.counters = self.cp.zeros(max(1, len(enc.counters)), dtype=self.cp.int32)
        nstuck = program.launch.blocks * len(encoding.STUCK_FIELDS)
        if self.stuck.size != nstuck:  # written only by a failing launch; reset after one
            self.stuck = self.cp.full(nstuck, -1, dtype=self.cp.int32)
        position = int(program.extra.get("position", 0))
        rope = self.rope(position + steps)
        stride = 0
        if kernel.config.trace:
            stride = steps * int(np.diff(enc.offsets).max())
            size = program.launch.blocks * stride * len(TRACE_STAMPS)
            if self._trace.size != size:
                self._trace = self.cp.zeros(size, dtype=self.cp.int64)
        args = (table, offsets, self.cp.asarray(np.array(ptrs, dtype=np.uint64)),
                self.counters, self.error, self.stuck, rope, np.int32(steps), np.int32(position),
                np.int32(len(tokens)), np.int64(self.watchdog_ns), self._trace,
                np.int32(stride))
        return Prepared(kernel, args, program.launch.blocks, steps, enc, stride)

    def traces(self, p: Prepared) -> np.ndarray:
        """The last launch's stamps [block, task g, ``vm.build.TRACE_STAMPS``] in ns of the
        GPU's global timer; g counts a block's tasks over all steps, 0 = unused."""
        if not p.trace_stride:
            raise VmError("this launch was not traced: make the GpuMachine with trace=True")
        return self._trace.get().reshape(p.blocks, p.trace_stride, len(TRACE_STAMPS))

    def start(self, p: Prepared) -> None:
        """Zero the counters and the error record, launch (asynchronous)."""
        self.counters.fill(0)
        self.error.fill(0)
        p.kernel.fn((p.blocks,), (p.kernel.config.threads,), p.args,
                    shared_mem=p.kernel.config.smem_bytes)

    def finish(self, p: Prepared) -> None:
        """Wait for the launch; raise what the device reported."""
        try:
            self.cp.cuda.Device().synchronize()
        except Exception as e:  # a fault: the context is gone, say which launch
            raise VmError(f"the megakernel crashed: {e}") from e
        err = dict(zip(encoding.ERROR_FIELDS, self.error.get().tolist(), strict=True))
        if err["code"]:
            stuck = self.stuck.get().reshape(-1, len(encoding.STUCK_FIELDS))
            self.stuck.fill(-1)
            raise _device_error(err, stuck, p.encoded)

    def launch(self, program: Program, tokens: list[int]) -> LaunchResult:
        p = self.prepare(program, tokens)
        self.start(p)
        self.finish(p)
        vocab = self.spec.vocab
        logits = self.buffers["logits"].get().reshape(program.steps, vocab)
        out = self.buffers["out_tokens"].get().view(np.int32).copy()
        return LaunchResult(out, logits)


def _device_error(err: dict[str, int], stuck: np.ndarray, enc: encoding.Encoded) -> VmError:
    task = enc.task_ids[err["task"]] if 0 <= err["task"] < len(enc.task_ids) else "?"
    where = f"task {task!r} (block {err['block']}, step {err['step']})"
    if err["code"] == encoding.ERROR_CODES["watchdog"]:
        counter = enc.counters[err["counter"]]
        waiting = [
            f"block {b} task {enc.task_ids[t]!r} (step {s}) waits {enc.counters[c]} >= {n}, "
            f"has {seen}"
            for b, (t, c, n, seen, s) in enumerate(stuck.tolist()) if t >= 0
        ]
        shown = "; ".join(waiting[:6]) + (f"; ... {len(waiting) - 6} more"
                                          if len(waiting) > 6 else "")
        return VmDeadlock(f"GPU watchdog: {where} waited on counter {counter!r} >= "
                          f"{err['need']} but it stayed at {err['seen']}; the kernel stopped. "
                          f"Stuck: {shown}")
    if err["code"] == encoding.ERROR_CODES["bad_token"]:
        return VmError(f"{where}: token {err['seen']} is outside the vocabulary "
                       f"(0..{err['need'] - 1}); it was never written")
    return VmError(f"{where}: the kernel reported error code {err['code']} ({err})")


def gpu_runner(weights: ModelWeights, **kw) -> Callable[[Program, list[int]], LaunchResult]:
    """A ``vm.decode.Runner`` on the GPU; the KV caches live on between its launches."""
    machine = GpuMachine(weights, **kw)

    def run(program: Program, tokens: list[int]) -> LaunchResult:
        return machine.launch(program, tokens)

    run.machine = machine  # type: ignore[attr-defined]
    return run

"""The GPU backend of the worker: build, oracle and bench of one trial on the live device.

State kept across trials: per weight format a trial asks for, its weights (uploaded once by
its own ``GpuMachine``) and its HF reference; the built kernels (``vm.gpu_runner.load_kernel``'s
cache and the on-disk build cache) and the torch baselines, timed once at start in this same
process on the study's bf16 weights (an int8 study is compared with bf16 torch).

A trial (amk_tune/bench.py's method): build the kernel for the schedule's launch shape and
the kernel knobs (timed: ``compile_s``; a build-cache hit says so), run the prompt in one
launch then one launch of ``steps_per_launch`` steps into freshly NaN-poisoned buffers,
judge it against HF, then replay that launch ``iters`` times between CUDA events:
us/token = median launch time / steps. The oracle verdict travels with the timing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from amk_tune.baselines import Timing, torch_baselines
from amk_tune.bench import device_name, run_checked, time_launch
from amk_tune.errors import BuildError, ScheduleError, VmDeadlock, VmError
from amk_tune.oracle import Reference, compare
from amk_tune.study.common import (
    FormatWeights,
    load_study_model,
    spec_dict,
    trial_format,
    trial_knobs,
    versions,
    worker_format,
)
from amk_tune.study.reference import cached_reference, prefix, verdict_dict
from amk_tune.study.worker import WorkerSpec
from amk_tune.targets import get_target
from space.weight_format import WeightFormat
from vm.build import assemble, compiler, config_for
from vm.lowering import lower


def _timing_dict(t: Timing | str) -> dict | str:
    if isinstance(t, str):
        return t
    return {"median_us": t.median_us, "p10_us": t.p10_us, "p90_us": t.p90_us,
            "samples": t.samples}


@dataclass(frozen=True)
class _Format:
    """One weight format on the device: its weights, their machine, HF's answer on them."""

    weights: FormatWeights
    machine: Any  # vm.gpu_runner.GpuMachine (CuPy is imported only in the worker)
    reference: Reference


class GpuBackend:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.target = get_target(spec.target)
        self.model = load_study_model(spec)
        self.default = worker_format(spec)
        self.formats: dict[WeightFormat, _Format] = {}
        self.format(self.default)
        self.baselines = None
        if spec.measure_baselines:
            self.baselines = {
                name: _timing_dict(t)
                for name, t in torch_baselines(self.model.bf16, spec.prompt_len,
                                               spec.iters).items()
            }

    def format(self, fmt: WeightFormat) -> _Format:
        """Format ``fmt`` made, uploaded and its reference computed (or read) once."""
        from vm.gpu_runner import GpuMachine

        if fmt not in self.formats:
            fw = self.model.weights(fmt)
            ref = cached_reference(fw.weights, fw.sha256, self.model.prompt,
                                   self.spec.max_steps, self.spec.cache_dir)
            self.formats[fmt] = _Format(fw, GpuMachine(fw.weights), ref)
        return self.formats[fmt]

    def info(self) -> dict:
        import cupy

        first = self.format(self.default)
        return {
            "device": device_name(first.machine),
            "measured": True,
            "weights_sha256": first.weights.sha256,
            "model_source": self.model.source,
            "spec": spec_dict(self.model.bf16),
            "oracle_scope": "the megakernel on the GPU vs HF eager float32, whole model",
            "baselines": self.baselines,
            "versions": versions(cupy=cupy.__version__, compiler=compiler()),
        }

    def evaluate(self, request: dict, *, corrupt_logits: bool = False) -> dict:
        from vm.gpu_runner import load_kernel

        schedule, knobs = trial_knobs(request)
        fmt = self.format(trial_format(request, self.default))
        steps, w, m = schedule.steps_per_launch, fmt.weights.weights, fmt.machine
        prompt = self.model.prompt
        timed = lower(w.spec, schedule, self.target, steps=steps, position=len(prompt),
                      max_seq=len(prompt) + steps, dtype=w.dtype, quant_group=w.quant_group)
        cfg = config_for(timed, w.spec, knobs)
        t0 = time.perf_counter()
        kernel = load_kernel(cfg, m.arch)
        compile_s = time.perf_counter() - t0
        m.knobs = knobs
        m.buffers.clear()  # fresh NaN-poisoned activations: no trial reads another's values
        prepared, logits, tokens = run_checked(m, w, self.target, schedule, prompt, steps)
        if corrupt_logits:
            logits = logits + np.float32(1.0)
        verdict = compare(prefix(fmt.reference, steps), tokens, logits)
        timing = time_launch(m, prepared, self.spec.iters)
        return {
            "ok": True,
            "measured": True,
            "latency_us": timing.median_us,
            "p10_us": timing.p10_us,
            "p90_us": timing.p90_us,
            "oracle": verdict_dict(verdict),
            "oracle_scope": "whole model on the GPU",
            "weights_sha256": fmt.weights.sha256,
            "compile_s": compile_s,
            "build_cached": kernel.built.cached,
            "registers": int(kernel.registers),
            "spills": int(kernel.spills),
            "smem_bytes": cfg.smem_bytes,
            "cuda_source": assemble(cfg),
            "binary": kernel.built.cubin.read_bytes(),
            "arch": m.arch,
        }

    def is_fatal(self, error: Exception) -> bool:
        """Errors that leave the CUDA context usable keep the worker; anything else (a crashed
        kernel, an unexpected exception) ends it and the next trial starts a fresh one."""
        if isinstance(error, BuildError | ScheduleError | VmDeadlock):
            return False
        return not (isinstance(error, VmError) and str(error).startswith("refusing to launch"))

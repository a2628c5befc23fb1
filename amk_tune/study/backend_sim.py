"""The ``--simulate`` backend of the worker: no GPU anywhere.

Oracle: the CPU reference VM runs the trial's program (prompt launch, then one launch of
``steps_per_launch`` steps, in a seeded random block interleaving) against HF eager on the
same weights. The reference VM is slow on deep models, so a model of more than
``ORACLE_MAX_LAYERS`` layers is checked on a copy cut to its first ``ORACLE_LAYERS`` layers
(the same weights and schedule); ``info()["oracle_scope"]`` says which, and every output
repeats it. Latency: the analytic cost model (cost_model.py), on the full program's stats.
Nothing here is a measurement: every result says ``measured: False``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from amk_tune.errors import AmkError
from amk_tune.model.weights import ModelWeights
from amk_tune.oracle import Reference, compare
from amk_tune.study.common import (
    first_layers,
    load_study_model,
    spec_dict,
    trial_format,
    trial_knobs,
    versions,
    worker_format,
)
from amk_tune.study.cost_model import predict
from amk_tune.study.reference import cached_reference, prefix, verdict_dict
from amk_tune.study.worker import WorkerSpec
from amk_tune.targets import get_target
from space.weight_format import WeightFormat
from vm.build import assemble, config_for
from vm.decode import cpu_runner
from vm.lowering import lower

ORACLE_MAX_LAYERS = 4
ORACLE_LAYERS = 2


@dataclass(frozen=True)
class _Oracle:
    """One weight format's oracle: what the reference VM runs (maybe the first layers) and
    HF's answer on exactly that; ``sha256`` identifies the format's whole weights."""

    weights: ModelWeights
    sha256: str
    reference: Reference


class SimBackend:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.target = get_target(spec.target)
        self.model = load_study_model(spec)
        layers = self.model.bf16.spec.layers
        self.cut = layers > ORACLE_MAX_LAYERS
        if self.cut:
            self.scope = (f"CPU reference VM on the first {ORACLE_LAYERS} of {layers} layers "
                          f"(simulated; the reference VM is too slow for {layers})")
        else:
            self.scope = f"CPU reference VM on the whole model, {layers} layer(s) (simulated)"
        self.default = worker_format(spec)
        self.oracles: dict[WeightFormat, _Oracle] = {}
        self.oracle(self.default)

    def oracle(self, fmt: WeightFormat) -> _Oracle:
        """The oracle of format ``fmt``, made (and HF run, or read from the cache) once."""
        if fmt not in self.oracles:
            full = self.model.weights(fmt)
            w = first_layers(full.weights, ORACLE_LAYERS) if self.cut else full.weights
            sha = f"{full.sha256}-cut" if self.cut else full.sha256
            ref = cached_reference(w, sha, self.model.prompt, self.spec.max_steps,
                                   self.spec.cache_dir)
            self.oracles[fmt] = _Oracle(w, full.sha256, ref)
        return self.oracles[fmt]

    def info(self) -> dict:
        return {
            "device": f"simulated {self.target.name} (no GPU: analytic cost model)",
            "measured": False,
            "weights_sha256": self.oracle(self.default).sha256,
            "model_source": self.model.source,
            "spec": spec_dict(self.model.bf16),
            "oracle_scope": self.scope,
            "baselines": None,
            "versions": versions(),
        }

    def evaluate(self, request: dict, *, corrupt_logits: bool = False) -> dict:
        schedule, knobs = trial_knobs(request)
        oracle = self.oracle(trial_format(request, self.default))
        steps = schedule.steps_per_launch
        w, prompt = oracle.weights, self.model.prompt
        total = len(prompt) + steps
        runner = cpu_runner(w, seed=int(request["number"]))
        pre = lower(w.spec, schedule, self.target, steps=len(prompt), position=0,
                    max_seq=total, dtype=w.dtype, quant_group=w.quant_group)
        first = runner(pre, prompt)
        timed = lower(w.spec, schedule, self.target, steps=steps, position=len(prompt),
                      max_seq=total, dtype=w.dtype, quant_group=w.quant_group)
        second = runner(timed, [int(first.tokens[-1])])
        logits = np.concatenate([first.logits, second.logits])
        if corrupt_logits:
            logits = logits + np.float32(1.0)
        tokens = [int(first.tokens[-1]), *(int(t) for t in second.tokens)]
        verdict = compare(prefix(oracle.reference, steps), tokens, logits)
        cost = predict(request["stats"], schedule, knobs, self.target)
        cfg = config_for(timed, w.spec, knobs)  # same kernel as the full model's
        return {
            "ok": True,
            "measured": False,
            "latency_us": cost.total_us,
            "p10_us": None,
            "p90_us": None,
            "cost_terms": cost.to_dict(),
            "oracle": verdict_dict(verdict),
            "oracle_scope": self.scope,
            "weights_sha256": oracle.sha256,
            "compile_s": None,
            "registers": None,
            "spills": None,
            "smem_bytes": cfg.smem_bytes,
            "cuda_source": assemble(cfg),
            "binary": None,
            "arch": None,
        }

    def is_fatal(self, error: Exception) -> bool:
        """No device state to lose: only an unexpected error restarts the worker."""
        return not isinstance(error, AmkError)

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

import numpy as np

from amk_tune.errors import AmkError
from amk_tune.oracle import compare
from amk_tune.study.common import (
    first_layers,
    load_study_model,
    spec_dict,
    trial_knobs,
    versions,
)
from amk_tune.study.cost_model import predict
from amk_tune.study.reference import cached_reference, prefix, verdict_dict
from amk_tune.study.worker import WorkerSpec
from amk_tune.targets import get_target
from vm.build import assemble, config_for
from vm.decode import cpu_runner
from vm.lowering import lower

ORACLE_MAX_LAYERS = 4
ORACLE_LAYERS = 2


class SimBackend:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.target = get_target(spec.target)
        self.model = load_study_model(spec)
        full = self.model.weights
        layers = full.spec.layers
        if layers > ORACLE_MAX_LAYERS:
            self.oracle_weights = first_layers(full, ORACLE_LAYERS)
            self.scope = (f"CPU reference VM on the first {ORACLE_LAYERS} of {layers} layers "
                          f"(simulated; the reference VM is too slow for {layers})")
        else:
            self.oracle_weights = full
            self.scope = f"CPU reference VM on the whole model, {layers} layer(s) (simulated)"
        sha = self.model.sha256 if self.oracle_weights is full else f"{self.model.sha256}-cut"
        self.reference = cached_reference(self.oracle_weights, sha, self.model.prompt,
                                          spec.max_steps, spec.cache_dir)

    def info(self) -> dict:
        return {
            "device": f"simulated {self.target.name} (no GPU: analytic cost model)",
            "measured": False,
            "weights_sha256": self.model.sha256,
            "model_source": self.model.source,
            "spec": spec_dict(self.model.weights),
            "oracle_scope": self.scope,
            "baselines": None,
            "versions": versions(),
        }

    def evaluate(self, request: dict, *, corrupt_logits: bool = False) -> dict:
        schedule, knobs = trial_knobs(request)
        steps = schedule.steps_per_launch
        w, prompt = self.oracle_weights, self.model.prompt
        total = len(prompt) + steps
        runner = cpu_runner(w, seed=int(request["number"]))
        pre = lower(w.spec, schedule, self.target, steps=len(prompt), position=0,
                    max_seq=total, dtype=w.dtype)
        first = runner(pre, prompt)
        timed = lower(w.spec, schedule, self.target, steps=steps, position=len(prompt),
                      max_seq=total, dtype=w.dtype)
        second = runner(timed, [int(first.tokens[-1])])
        logits = np.concatenate([first.logits, second.logits])
        if corrupt_logits:
            logits = logits + np.float32(1.0)
        tokens = [int(first.tokens[-1]), *(int(t) for t in second.tokens)]
        verdict = compare(prefix(self.reference, steps), tokens, logits)
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

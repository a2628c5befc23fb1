"""The study's HF reference: computed once per (weights, prompt, length), kept on disk.

A trial runs the prompt in one launch, then one launch of ``steps_per_launch`` decode steps
(amk_tune/bench.py ``run_checked``), and is judged on the logits of every step and on its
``steps + 1`` greedy tokens. The reference is computed once for the longest launch a trial
may ask for; a shorter launch is judged on its prefix (HF decoding is causal: the first
tokens and the logits of the first positions do not depend on what follows).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from amk_tune.model.weights import ModelWeights
from amk_tune.oracle import OracleVerdict, Reference, hf_reference


def cached_reference(weights: ModelWeights, weights_sha: str, prompt: list[int],
                     max_steps: int, cache_dir: str | Path) -> Reference:
    """HF's answer for ``prompt`` + ``max_steps + 1`` greedy tokens, from ``cache_dir`` when a
    previous worker of the study computed it already."""
    key = hashlib.sha256(f"{weights_sha} {prompt} {max_steps}".encode()).hexdigest()[:24]
    path = Path(cache_dir) / f"reference-{key}.npz"
    if path.is_file():
        data = np.load(path)
        return Reference(tuple(int(t) for t in data["prompt"]),
                         tuple(int(t) for t in data["tokens"]), data["logits"])
    ref = hf_reference(weights, prompt, max_steps + 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, prompt=np.array(ref.prompt), tokens=np.array(ref.tokens), logits=ref.logits)
    tmp.replace(path)
    return ref


def prefix(ref: Reference, steps: int) -> Reference:
    """The reference of a launch of ``steps`` decode steps after the prompt."""
    rows = len(ref.prompt) + steps
    if steps + 1 > len(ref.tokens):
        raise ValueError(f"the reference covers {len(ref.tokens) - 1} steps, not {steps}")
    return dataclasses.replace(ref, tokens=ref.tokens[: steps + 1], logits=ref.logits[:rows])


def verdict_dict(v: OracleVerdict) -> dict[str, Any]:
    """The verdict as plain data (user attrs, artifact bundles)."""
    return dataclasses.asdict(v)

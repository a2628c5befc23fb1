"""Greedy decoding through a sequence of megakernel launches.

The prompt goes through the decode program token by token (no prefill yet): step ``p``
consumes token ``p`` of the sequence and produces the logits at position ``p``. A launch
runs ``schedule.steps_per_launch`` steps; the KV caches live on in the runner's state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from amk_tune.errors import AmkError
from amk_tune.model.weights import ModelWeights
from amk_tune.targets import Target
from space.schedule import Schedule
from vm.lowering import lower
from vm.program import Program
from vm.reference_vm import LaunchResult, ReferenceVM, VmState

# (program, host tokens of the launch) -> result; a runner keeps its own state
Runner = Callable[[Program, list[int]], LaunchResult]


@dataclass(frozen=True)
class Generation:
    prompt: list[int]
    tokens: list[int]  # the generated tokens
    logits: np.ndarray  # [len(prompt) + len(tokens) - 1, vocab], position by position
    launches: int


def cpu_runner(weights: ModelWeights, seed: int | None = None) -> Runner:
    """A runner on the reference VM; ``seed`` draws each launch's block interleaving."""
    state = VmState()
    count = [0]

    def run(program: Program, tokens: list[int]) -> LaunchResult:
        count[0] += 1
        launch_seed = None if seed is None else seed * 7919 + count[0]
        return ReferenceVM(program, weights, state).run(tokens, seed=launch_seed)

    return run


def greedy_generate(weights: ModelWeights, schedule: Schedule, target: Target,
                    prompt: list[int], max_new_tokens: int, runner: Runner) -> Generation:
    if not prompt:
        raise AmkError("the prompt is empty: give at least one token")
    if max_new_tokens < 1:
        raise AmkError(f"max_new_tokens = {max_new_tokens}: generate at least one token")
    vocab = weights.spec.vocab
    bad = [t for t in prompt if not 0 <= t < vocab]
    if bad:
        raise AmkError(f"prompt token ids {bad[:5]} are outside the vocabulary (0..{vocab - 1})")
    total = len(prompt) + max_new_tokens - 1  # positions to run
    seq = list(prompt)
    logits = []
    pos = launches = 0
    while pos < total:
        steps = min(schedule.steps_per_launch, total - pos)
        program = lower(weights.spec, schedule, target, steps=steps, position=pos,
                        max_seq=total, dtype=weights.dtype, quant_group=weights.quant_group)
        result = runner(program, seq[pos : min(pos + steps, len(seq))])
        launches += 1
        logits.append(result.logits)
        for j, tok in enumerate(result.tokens.tolist()):
            if pos + j + 1 >= len(seq):
                seq.append(int(tok))
        pos += steps
    return Generation(list(prompt), seq[len(prompt) :], np.concatenate(logits), launches)

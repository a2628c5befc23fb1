"""The correctness oracle: HuggingFace eager float32 on exactly the kernel's weights.

Convention (shared with the decode program): the prompt is fed one token per step, so
step ``p`` produces the logits of position ``p``; generated token ``k`` is the argmax of the
logits at step ``len(prompt) - 1 + k`` and is the input of step ``len(prompt) + k``. A run of
``max_new_tokens`` therefore has ``len(prompt) + max_new_tokens - 1`` steps with logits.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from transformers import GenerationConfig, LlamaForCausalLM

from amk_tune.errors import AmkError, OracleMismatch
from amk_tune.model.hf_config import spec_to_hf_config
from amk_tune.model.loaders import weights_to_hf_state_dict
from amk_tune.model.weights import ModelWeights

ORACLE_THREADS = 4


def configure_torch(threads: int = ORACLE_THREADS) -> None:
    """Plain IEEE float32 everywhere (no TF32, no reduced-precision matmul), few threads.

    CPU float32 results depend on the thread count (it changes the reduction split), so the
    oracle pins it to ``min(threads, cpu count)``.
    """
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    torch.set_num_threads(max(1, min(threads, os.cpu_count() or 1)))


def hf_model(weights: ModelWeights) -> LlamaForCausalLM:
    """HF ``LlamaForCausalLM``, float32, eager attention, CPU, holding exactly ``weights``.

    The parameters share memory with ``weights.tensors``: treat both as read-only. int8
    weights run untied: their LM head is quantised, their embedding lookup is bf16.
    """
    configure_torch()
    config = spec_to_hf_config(weights.spec)
    config.tie_word_embeddings = weights.lm_head_name() == "embed"
    model, info = LlamaForCausalLM.from_pretrained(
        None,
        config=config,
        state_dict=weights_to_hf_state_dict(weights),
        attn_implementation="eager",
        dtype=torch.float32,
        output_loading_info=True,
    )
    problems = {k: v for k, v in info.items() if v}  # missing/unexpected/mismatched keys
    if problems:
        raise AmkError(f"HF did not take our weights for {weights.spec.name!r}: {problems}")
    # A clean generation config: no EOS stop, no penalties, no defaults from anywhere.
    model.generation_config = GenerationConfig()
    return model.eval()


@dataclass(frozen=True, eq=False)
class Reference:
    """HF's answer for one prompt: greedy tokens and the logits of every step."""

    prompt: tuple[int, ...]
    tokens: tuple[int, ...]  # the max_new_tokens greedy tokens of HF generate
    logits: np.ndarray  # float32 [len(prompt) + max_new_tokens - 1, vocab]

    @property
    def steps(self) -> int:
        return self.logits.shape[0]

    def step_of_token(self, k: int) -> int:
        """The step whose logits choose generated token ``k``."""
        return len(self.prompt) - 1 + k

    def margin(self, k: int) -> float:
        """HF's top-1 minus top-2 logit where token ``k`` was chosen (small: a near tie)."""
        row = self.logits[self.step_of_token(k)]
        top2 = np.partition(row, -2)[-2:]
        return float(top2[1] - top2[0])


def hf_reference(
    model_or_weights: LlamaForCausalLM | ModelWeights, prompt_ids: list[int], max_new_tokens: int
) -> Reference:
    """HF greedy decode of ``max_new_tokens`` tokens (no EOS stop) and the logits of every step.

    Tokens come from ``generate(do_sample=False)`` (KV-cached decode); logits from one
    no-cache forward pass over ``prompt + tokens[:-1]``.
    """
    if isinstance(model_or_weights, ModelWeights):
        model = hf_model(model_or_weights)
    else:
        model = model_or_weights
        configure_torch()
    cfg = model.config
    prompt = [int(t) for t in prompt_ids]
    if not prompt:
        raise AmkError("the oracle needs a non-empty prompt")
    if max_new_tokens < 1:
        raise AmkError(f"max_new_tokens={max_new_tokens} must be >= 1")
    bad = [t for t in prompt if not 0 <= t < cfg.vocab_size]
    if bad:
        raise AmkError(f"prompt token {bad[0]} is outside the vocabulary 0..{cfg.vocab_size - 1}")
    if len(prompt) + max_new_tokens - 1 > cfg.max_position_embeddings:
        raise AmkError(
            f"prompt ({len(prompt)}) + max_new_tokens ({max_new_tokens}) - 1 positions exceed "
            f"max_position_embeddings={cfg.max_position_embeddings}"
        )
    greedy = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        eos_token_id=None,
        pad_token_id=0,  # batch of one: never used, but silences the "no pad id" fallback
    )
    ids = torch.tensor([prompt], dtype=torch.long)
    with torch.no_grad():
        out = model.generate(ids, generation_config=greedy, attention_mask=torch.ones_like(ids))
        tokens = tuple(int(t) for t in out[0, len(prompt):])
        if len(tokens) != max_new_tokens:
            raise AmkError(f"HF generated {len(tokens)} tokens, not {max_new_tokens}")
        full = torch.tensor([prompt + list(tokens[:-1])], dtype=torch.long)
        logits = model(full, use_cache=False).logits[0].to(torch.float32).numpy()
    return Reference(tuple(prompt), tokens, np.ascontiguousarray(logits))


@dataclass(frozen=True)
class Tolerance:
    """Pass iff, at every step, every logit has ``|ours - HF| <= atol + rtol * max|HF|``.

    The bound scales with the step's largest HF logit, not with each logit's own size:
    the weights are identical, so the error is float32 rounding of the final hidden state
    ``dh``, and logit ``i`` is off by ``embed[i] . dh``, which does not shrink when logit
    ``i`` happens to be near zero (an element-wise rtol fails real models on such logits).

    Default for float32 vs float32 with a different summation order (blocked GEMVs, split-K,
    fused epilogues), measured with an independent NumPy float32 token-by-token decode vs
    HF eager: max |dlogit| / max|logit| is 1e-6 to 2.5e-6 on 2-layer and 30-layer random
    presets and 2.3e-6 to 6.1e-6 on the real SmolLM2-135M-Instruct (30 layers, logits up
    to 46, 24 to 144 steps, four prompts; no growth with length); worst |dlogit| 1.7e-4.
    ``rtol=5e-5`` leaves 8x headroom over the worst case; ``atol=1e-5`` only matters for rows
    of tiny logits. Rounding the RMSNorm outputs to bf16 (one reduced-precision activation)
    gives 2e-3 to 1.3e-2 of the scale while every greedy token still agrees: the logit check
    is what catches it.
    """

    atol: float = 1e-5
    rtol: float = 5e-5

    def __post_init__(self) -> None:
        if not (self.atol >= 0 and self.rtol >= 0):
            raise ValueError(f"tolerances must be >= 0, got atol={self.atol}, rtol={self.rtol}")

    def __str__(self) -> str:
        return f"tol {self.atol:.0e} + {self.rtol:.0e}*max|logit|"


@dataclass(frozen=True)
class OracleVerdict:
    passed: bool
    steps: int
    max_abs_err: float
    max_rel_err: float  # max over steps of max|dlogit| / max|HF logit| of that step
    tokens_equal: bool
    first_mismatch: int | None  # the first step whose logits or chosen token disagree
    message: str


def compare(
    reference: Reference, tokens: list[int], logits: np.ndarray, tol: Tolerance | None = None
) -> OracleVerdict:
    """Judge a run's greedy ``tokens`` and per-step ``logits`` against ``reference``."""
    tol = tol or Tolerance()
    ref = reference.logits
    steps, n_tok = ref.shape[0], len(reference.tokens)
    ours = np.asarray(logits, dtype=np.float32)
    tokens = [int(t) for t in tokens]
    if ours.shape != ref.shape or len(tokens) != n_tok:
        return OracleVerdict(
            False, steps, math.inf, math.inf, False, 0,
            f"FAIL: shape mismatch: logits {ours.shape} vs HF {ref.shape}, "
            f"{len(tokens)} tokens vs HF {n_tok}",
        )
    diff = np.abs(ours.astype(np.float64) - ref)
    scale = np.max(np.abs(ref), axis=1)
    bound = tol.atol + tol.rtol * scale
    bad = ~(diff <= bound[:, None])  # NaN counts as bad
    row_err = np.max(diff, axis=1)
    max_abs = float(np.max(row_err))
    max_rel = float(np.max(row_err / np.maximum(scale, 1e-30)))
    bad_steps = np.flatnonzero(bad.any(axis=1))
    wrong = [k for k in range(n_tok) if tokens[k] != reference.tokens[k]]

    logit_part = f"max |dlogit| {max_abs:.1e} ({tol})"
    if bad_steps.size:
        s = int(bad_steps[0])
        v = int(np.argmax(np.nan_to_num(diff[s], nan=np.inf)))
        logit_part = (
            f"{bad_steps.size}/{steps} steps out of tolerance, first at step {s}: logit {v} "
            f"ours {ours[s, v]:.6g} vs HF {ref[s, v]:.6g} (bound {bound[s]:.1e}); {logit_part}"
        )
    token_part = f"{n_tok - len(wrong)}/{n_tok} greedy tokens equal"
    if wrong:
        k = wrong[0]
        token_part += (
            f", first differs at generated token {k} (step {reference.step_of_token(k)}): "
            f"ours {tokens[k]}, HF {reference.tokens[k]} (HF top-2 margin "
            f"{reference.margin(k):.1e})"
        )
    firsts = [int(s) for s in bad_steps[:1]] + [reference.step_of_token(k) for k in wrong[:1]]
    passed = not firsts
    return OracleVerdict(
        passed=passed,
        steps=steps,
        max_abs_err=max_abs,
        max_rel_err=max_rel,
        tokens_equal=not wrong,
        first_mismatch=min(firsts) if firsts else None,
        message=f"{'PASS' if passed else 'FAIL'}: {steps} steps, {logit_part}, {token_part}",
    )


def verify_or_raise(verdict: OracleVerdict) -> OracleVerdict:
    """Return ``verdict`` if it passed; raise OracleMismatch with its message otherwise."""
    if not verdict.passed:
        raise OracleMismatch(verdict.message)
    return verdict

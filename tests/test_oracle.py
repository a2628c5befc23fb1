"""The oracle against an independent NumPy float32 decode, and its failure messages."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from amk_tune.errors import OracleMismatch
from amk_tune.model.loaders import weights_to_hf_state_dict
from amk_tune.model.presets import preset_spec, random_weights
from amk_tune.model.spec import ModelSpec, RopeScaling
from amk_tune.model.weights import ModelWeights
from amk_tune.oracle import (
    Reference,
    Tolerance,
    compare,
    hf_model,
    hf_reference,
    verify_or_raise,
)

PROMPT = [1, 504, 3575, 282, 4649, 314]  # "The capital of France is" after a BOS
NEW = 32


def _rms(x: np.ndarray, gain: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x) + np.float32(eps)) * gain


def _inv_freq(spec: ModelSpec) -> np.ndarray:
    """Llama RoPE frequencies in float64 (independent of HF's float32 torch ops)."""
    inv = 1.0 / spec.rope_theta ** (np.arange(0, spec.head_dim, 2) / spec.head_dim)
    s = spec.rope_scaling
    if s is None:
        return inv
    wavelen = 2 * np.pi / inv
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor)
    mixed = (1 - smooth) * inv / s.factor + smooth * inv
    low = wavelen > s.original_max_position_embeddings / s.low_freq_factor
    high = wavelen < s.original_max_position_embeddings / s.high_freq_factor
    return np.where(low, inv / s.factor, np.where(high, inv, mixed))


def numpy_decode(w: ModelWeights, prompt: list[int], new: int) -> tuple[list[int], np.ndarray]:
    """Token-by-token float32 decode with a KV cache: the decode program's convention."""
    s, t = w.spec, w.tensors
    H, G, D, inter = s.heads, s.kv_heads, s.head_dim, s.intermediate
    inv = _inv_freq(s)
    keys: list[list[np.ndarray]] = [[] for _ in range(s.layers)]
    values: list[list[np.ndarray]] = [[] for _ in range(s.layers)]
    feed, out, generated = list(prompt), [], []
    for pos in range(len(prompt) + new - 1):
        x = t["embed"][feed[pos]].copy()
        cos = np.cos(pos * inv).astype(np.float32)
        sin = np.sin(pos * inv).astype(np.float32)
        for layer in range(s.layers):
            qkv = t[f"L{layer}.wqkv"] @ _rms(x, t[f"L{layer}.attn_norm"], s.rms_eps)
            q = qkv[: H * D].reshape(H, D)
            k = qkv[H * D : (H + G) * D].reshape(G, D)
            v = qkv[(H + G) * D :].reshape(G, D)
            q, k = (np.concatenate([a[:, : D // 2] * cos - a[:, D // 2 :] * sin,
                                    a[:, D // 2 :] * cos + a[:, : D // 2] * sin], axis=1)
                    for a in (q, k))
            keys[layer].append(k)
            values[layer].append(v)
            kc, vc = np.stack(keys[layer]), np.stack(values[layer])  # [pos+1, G, D]
            attn = np.empty((H, D), np.float32)
            for h in range(H):
                scores = kc[:, h // (H // G)] @ q[h] / np.float32(np.sqrt(D))
                p = np.exp(scores - scores.max())
                attn[h] = (p / p.sum()) @ vc[:, h // (H // G)]
            x = x + t[f"L{layer}.wo"] @ attn.reshape(-1)
            gu = t[f"L{layer}.wgu"] @ _rms(x, t[f"L{layer}.mlp_norm"], s.rms_eps)
            gate, up = gu[:inter], gu[inter:]
            x = x + t[f"L{layer}.wd"] @ (gate / (np.float32(1) + np.exp(-gate)) * up)
        logits = w.lm_head() @ _rms(x, t["final_norm"], s.rms_eps)
        out.append(logits)
        if pos >= len(prompt) - 1:
            generated.append(int(np.argmax(logits)))
            feed.append(generated[-1])
    return generated, np.stack(out).astype(np.float32)


@pytest.fixture(scope="module")
def smol():
    weights = random_weights(preset_spec("smollm2-135m", layers=2), seed=1)
    model = hf_model(weights)
    return weights, model, hf_reference(model, PROMPT, NEW)


def test_reference_shape_and_convention(smol):
    _, _, ref = smol
    assert isinstance(ref, Reference) and ref.prompt == tuple(PROMPT)
    assert len(ref.tokens) == NEW
    assert ref.logits.shape == (len(PROMPT) + NEW - 1, 49152) and ref.logits.dtype == np.float32
    for k, token in enumerate(ref.tokens):  # token k is the argmax at step len(prompt)-1+k
        assert int(np.argmax(ref.logits[ref.step_of_token(k)])) == token


def test_hf_model_holds_exactly_our_weights(smol):
    weights, model, _ = smol
    assert model.config._attn_implementation == "eager" and model.dtype == torch.float32
    assert not model.training
    theirs = model.state_dict()
    for name, tensor in weights_to_hf_state_dict(weights).items():
        assert torch.equal(theirs[name], tensor), name
    assert torch.equal(theirs["lm_head.weight"], theirs["model.embed_tokens.weight"])


def test_numpy_decode_passes(smol):
    weights, _, ref = smol
    tokens, logits = numpy_decode(weights, PROMPT, NEW)
    verdict = verify_or_raise(compare(ref, tokens, logits))
    assert verdict.passed and verdict.tokens_equal and verdict.first_mismatch is None
    assert verdict.steps == len(PROMPT) + NEW - 1
    assert verdict.max_abs_err < 1e-5  # measured ~2e-6
    assert verdict.message.startswith(f"PASS: {verdict.steps} steps, max |dlogit| ")
    assert f"{NEW}/{NEW} greedy tokens equal" in verdict.message


def test_llama3_untied_gqa_model_passes():
    spec = ModelSpec(
        name="tiny-llama3", hidden=128, layers=2, heads=8, kv_heads=2, head_dim=32,
        intermediate=256, vocab=512, rms_eps=1e-5, rope_theta=500000.0, tie_embeddings=False,
        max_position=131072, rope_scaling=RopeScaling(32.0, 1.0, 4.0, 8192),
    )
    weights = random_weights(spec, seed=2)
    ref = hf_reference(weights, [3, 1, 4, 1, 5, 9, 2, 6], 24)
    verify_or_raise(compare(ref, *numpy_decode(weights, list(ref.prompt), 24)))


def test_eos_does_not_stop_generation(smol):
    weights, _, ref = smol
    eos_first = dataclasses.replace(weights.spec, eos_token_id=ref.tokens[0])
    again = hf_reference(ModelWeights(eos_first, weights.dtype, weights.tensors), PROMPT, 8)
    assert again.tokens == ref.tokens[:8]


def test_perturbed_logit_fails_clearly(smol):
    _, _, ref = smol
    tokens, logits = list(ref.tokens), ref.logits.copy()
    logits[10, 77] += 1e-2
    verdict = compare(ref, tokens, logits)
    assert not verdict.passed and verdict.tokens_equal and verdict.first_mismatch == 10
    assert verdict.max_abs_err == pytest.approx(1e-2, rel=1e-3)
    assert verdict.message.startswith("FAIL: ")
    assert "1/37 steps out of tolerance, first at step 10: logit 77" in verdict.message
    with pytest.raises(OracleMismatch, match="step 10: logit 77"):
        verify_or_raise(verdict)


def test_wrong_token_fails_even_with_exact_logits(smol):
    _, _, ref = smol
    tokens = list(ref.tokens)
    tokens[3] = (tokens[3] + 1) % 49152
    verdict = compare(ref, tokens, ref.logits)
    assert not verdict.passed and not verdict.tokens_equal
    assert verdict.max_abs_err == 0 and verdict.first_mismatch == len(PROMPT) - 1 + 3
    assert "31/32 greedy tokens equal, first differs at generated token 3" in verdict.message


def test_nan_and_shape_mismatch_fail(smol):
    _, _, ref = smol
    logits = ref.logits.copy()
    logits[0, 0] = np.nan
    assert not compare(ref, list(ref.tokens), logits).passed
    short = compare(ref, list(ref.tokens), ref.logits[:-1])
    assert not short.passed and "shape mismatch" in short.message


def test_tolerance_is_relative_to_step_scale(smol):
    _, _, ref = smol
    step_scale = np.abs(ref.logits[5]).max()
    tol = Tolerance(atol=0.0, rtol=1e-3)
    logits = ref.logits.copy()
    logits[5, int(np.argmin(np.abs(logits[5])))] += 0.5e-3 * step_scale  # tiny logit, in bound
    assert compare(ref, list(ref.tokens), logits, tol).passed
    logits[5, 0] += 2e-3 * step_scale
    assert not compare(ref, list(ref.tokens), logits, tol).passed
    with pytest.raises(ValueError, match="atol=-1"):
        Tolerance(atol=-1)

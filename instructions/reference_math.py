"""Float32 NumPy building blocks shared by the instruction twins.

Each follows HuggingFace's Llama eager code operation for operation (same dtype, same
order where it matters), so the reference VM and the oracle differ only by summation order.
"""

from __future__ import annotations

import numpy as np


def rmsnorm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """``weight * (x * rsqrt(mean(x^2) + eps))`` in float32, as LlamaRMSNorm."""
    x = x.astype(np.float32, copy=False)
    variance = np.mean(x * x, dtype=np.float32)
    inv = np.float32(1.0) / np.sqrt(variance + np.float32(eps), dtype=np.float32)
    return weight * (x * inv)


def silu(x: np.ndarray) -> np.ndarray:
    return x / (np.float32(1.0) + np.exp(-x))


def rope_pairs(
    lo: np.ndarray, hi: np.ndarray, cos: np.ndarray, sin: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate pairs ``(lo[i], hi[i])`` = dims ``(i, i + D/2)`` of a head (HF rotate_half)."""
    return lo * cos - hi * sin, hi * cos + lo * sin


def attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """Softmax attention of one query head over ``k``/``v`` rows [n, D]."""
    scores = (k @ q) * np.float32(scale)
    scores = np.exp(scores - scores.max())
    return (scores / scores.sum(dtype=np.float32)) @ v


def attend_partial(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float
) -> tuple[np.float32, np.float32, np.ndarray]:
    """Flash-decoding partial over a chunk: (max score, sum of exp, unnormalised output)."""
    if k.shape[0] == 0:
        return np.float32(-np.inf), np.float32(0.0), np.zeros(v.shape[1], np.float32)
    scores = (k @ q) * np.float32(scale)
    m = scores.max()
    p = np.exp(scores - m)
    return m, p.sum(dtype=np.float32), p @ v


def combine_partials(partials: np.ndarray) -> np.ndarray:
    """Merge split-KV partials [parts, D + 2] (columns: max, sum, acc...) into one output."""
    m = partials[:, 0]
    top = m.max()
    w = np.where(np.isneginf(m), np.float32(0.0), np.exp(m - top)).astype(np.float32)
    total = (w * partials[:, 1]).sum(dtype=np.float32)
    return (w[:, None] * partials[:, 2:]).sum(axis=0, dtype=np.float32) / total

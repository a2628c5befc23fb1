"""RoPE cos/sin exactly as HuggingFace's LlamaRotaryEmbedding computes them.

HF builds ``inv_freq`` in float32 torch ops at init, then per position
``freqs = position * inv_freq`` (float32) and ``cos``/``sin`` of it with torch's float32 CPU
kernels. Those kernels are not correctly rounded (about 5% of values differ by one ulp from
a float64 reference), so this module runs the very same torch ops on the same shapes: on
the CPU the oracle runs on, the tables are bit-identical to HF's (tested). The GPU kernel
and the reference VM read these tables; they never recompute the angles.

The result has ``head_dim / 2`` entries: entry ``i`` rotates dimensions ``i`` and
``i + head_dim / 2`` of every head (HF's ``rotate_half``); HF's cos is this table twice.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from amk_tune.model.spec import ModelSpec


def _inv_freq(spec: ModelSpec) -> torch.Tensor:
    """float32 inverse frequencies [head_dim / 2], HF's default or llama3 rule, same ops."""
    dim = spec.head_dim
    base = spec.rope_theta
    freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(torch.float) / dim))
    s = spec.rope_scaling
    if s is None:
        return freq
    # transformers' _compute_llama3_parameters, operation for operation.
    low_freq_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_freq_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * math.pi / freq
    scaled = torch.where(wavelen > low_freq_wavelen, freq / s.factor, freq)
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def rope_table(spec: ModelSpec, positions: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 (cos, sin), each [positions, head_dim / 2], for positions 0 .. positions-1."""
    if positions < 0:
        raise ValueError(f"positions={positions} must be >= 0")
    return _cos_sin(spec, torch.arange(positions)[None, :])


def rope_cos_sin(spec: ModelSpec, position: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 (cos, sin), each [head_dim / 2], of one position, as HF computes it in decode."""
    if not 0 <= position < spec.max_position:
        raise ValueError(
            f"position={position} is outside 0..{spec.max_position - 1} "
            f"(max_position_embeddings of {spec.name!r})"
        )
    cos, sin = _cos_sin(spec, torch.tensor([[position]]))
    return cos[0], sin[0]


def _cos_sin(spec: ModelSpec, position_ids: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    # LlamaRotaryEmbedding.forward: attention_scaling is 1.0 for both default and llama3.
    with torch.no_grad():
        freqs = position_ids[..., None].float() * _inv_freq(spec)
        emb = torch.cat((freqs, freqs), dim=-1)
        half = spec.head_dim // 2
        cos = emb.cos()[0, :, :half].numpy().copy()
        sin = emb.sin()[0, :, :half].numpy().copy()
    return cos, sin

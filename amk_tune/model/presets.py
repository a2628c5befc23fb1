"""Synthetic presets: the exact shapes of real Llama-family models, with seeded random weights.

Shapes follow the published ``config.json`` files of the base models (token ids included), and
each preset's parameter count equals the published one (tests/model/test_presets.py). Weights are
N(0, 0.02) for matrices and 1 + N(0, 0.02) for RMSNorm gains, drawn in float32 and rounded to
the storage dtype. Every block of ``_BLOCK`` elements of every tensor has its own generator,
seeded by (seed, tensor name, block index): the values do not depend on the thread count,
blocks are drawn in parallel, and the reduced form ``layers=N`` holds exactly the first N
layers of the full model.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from amk_tune.errors import ModelError
from amk_tune.model.quantise import check_storage, to_storage
from amk_tune.model.spec import ModelSpec, RopeScaling
from amk_tune.model.weights import ModelWeights, round_to_bf16, weight_shapes

MATRIX_STD = 0.02
NORM_STD = 0.02
_BLOCK = 1 << 22

_LLAMA3_ROPE = RopeScaling(
    factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
)


def _spec(name: str, hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int,
          vocab: int, *, theta: float, tied: bool, max_position: int, head_dim: int | None = None,
          rope_scaling: RopeScaling | None = None, bos: int, eos: int) -> ModelSpec:
    return ModelSpec(
        name=name, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads,
        head_dim=head_dim or hidden // heads, intermediate=intermediate, vocab=vocab,
        rms_eps=1e-5, rope_theta=theta, tie_embeddings=tied, max_position=max_position,
        rope_scaling=rope_scaling, bos_token_id=bos, eos_token_id=eos,
    )


PRESETS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        _spec("smollm2-135m", 576, 30, 9, 3, 1536, 49152, theta=100000.0, tied=True,
              max_position=8192, bos=0, eos=0),
        _spec("smollm2-360m", 960, 32, 15, 5, 2560, 49152, theta=100000.0, tied=True,
              max_position=8192, bos=0, eos=0),
        _spec("smollm2-1.7b", 2048, 24, 32, 32, 8192, 49152, theta=130000.0, tied=True,
              max_position=8192, bos=0, eos=0),
        _spec("llama-3.2-1b", 2048, 16, 32, 8, 8192, 128256, theta=500000.0, tied=True,
              max_position=131072, head_dim=64, rope_scaling=_LLAMA3_ROPE, bos=128000,
              eos=128001),
        _spec("llama-3.2-3b", 3072, 28, 24, 8, 8192, 128256, theta=500000.0, tied=True,
              max_position=131072, head_dim=128, rope_scaling=_LLAMA3_ROPE, bos=128000,
              eos=128001),
        _spec("tinyllama-1.1b", 2048, 22, 32, 4, 5632, 32000, theta=10000.0, tied=False,
              max_position=2048, bos=1, eos=2),
        _spec("llama-2-7b", 4096, 32, 32, 32, 11008, 32000, theta=10000.0, tied=False,
              max_position=4096, bos=1, eos=2),
    )
}


def preset_spec(name: str, layers: int | None = None) -> ModelSpec:
    """A preset's spec; ``layers=N`` keeps the first N layers and every other dimension."""
    if name not in PRESETS:
        raise ModelError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return with_layers(PRESETS[name], layers)


def with_layers(spec: ModelSpec, layers: int | None) -> ModelSpec:
    """``spec`` cut to its first ``layers`` layers (None: unchanged)."""
    if layers is None:
        return spec
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= spec.layers:
        raise ModelError(f"layers={layers!r} must be an integer in 1..{spec.layers} for "
                         f"{spec.name!r}")
    return dataclasses.replace(spec, layers=layers)


def random_weights(spec: ModelSpec, *, seed: int = 0, dtype: str = "bf16",
                   quant_group: int = 0) -> ModelWeights:
    """Seeded random weights for ``spec`` in the layout of weights.py, rounded to bf16, then
    stored as ``dtype`` (int8: quantised with ``quant_group``, amk_tune/model/quantise.py)."""
    check_storage(dtype, quant_group)
    tensors = {name: np.empty(shape, np.float32) for name, shape in weight_shapes(spec).items()}

    def fill(job: tuple[str, int]) -> None:
        name, block = job
        a = tensors[name]
        part = a.reshape(-1)[block * _BLOCK : (block + 1) * _BLOCK]
        rng = np.random.default_rng([seed, zlib.crc32(name.encode()), block])
        rng.standard_normal(out=part, dtype=np.float32)
        if a.ndim == 1:
            part *= np.float32(NORM_STD)
            part += np.float32(1.0)
        else:
            part *= np.float32(MATRIX_STD)
        part[:] = round_to_bf16(part)

    jobs = [(name, b) for name, a in tensors.items() for b in range(-(-a.size // _BLOCK))]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(fill, jobs))  # numpy releases the GIL while drawing and rounding
    return to_storage(ModelWeights(spec=spec, dtype="bf16", tensors=tensors), dtype, quant_group)

"""int8 weight storage (W8A16): symmetric int8 codes, float32 scales, bf16 everything else.

What is quantised: every matrix a GEMV tile streams, i.e. ``L*.wqkv``, ``L*.wo``, ``L*.wgu``,
``L*.wd`` and the LM head. A tied model's LM head becomes its own tensor ``lm_head``,
quantised from ``embed``; the token lookup (a row gather, not a GEMV) keeps reading the bf16
``embed``, and so do the RMSNorm gains. The source values are the bf16 weights (the bf16
model of the same source), so int8 is always compared with, and derived from, bf16.

Scheme, per output row and group of ``g`` consecutive input columns (``g = group``, or the
row length K when ``group`` is 0: one scale per output channel)::

    scale = float32(max|w| / 127)        (0 for an all-zero group: every code 0)
    code  = round_half_even(w / scale)   in -127..127
    value = float32(code) * scale        (one float32 rounding)

``value`` is what everything computes with: the megakernel dequantises in registers, the
reference VM and the HF oracle run on these float32 values (``ModelWeights.tensors``), so the
oracle's float32 tolerance applies unchanged. Scales are float32, not bf16: exact, and
4 bytes per group is 6 % on top of the codes at g = 64 (nothing per channel).

A group must be a multiple of 16 (the kernel loads 16 codes at a time and a 16-byte chunk
must not straddle two scales) and divide every K of the model.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from amk_tune.errors import ModelError
from amk_tune.model.spec import ModelSpec
from amk_tune.model.weights import STORAGE_DTYPES, ModelWeights, lm_head_tensor

CODE_MAX = 127
GROUP_ALIGN = 16  # codes per 16-byte load
_CHUNK = 1 << 20  # elements quantised per job


def gemv_matrices(spec: ModelSpec, dtype: str) -> tuple[str, ...]:
    """The weight tensors GEMV tiles stream (the quantised ones when ``dtype`` is int8)."""
    layers = (f"L{i}.{m}" for i in range(spec.layers) for m in ("wqkv", "wo", "wgu", "wd"))
    return (*layers, lm_head_tensor(spec, dtype))


def row_lengths(spec: ModelSpec) -> tuple[int, ...]:
    """Every K (input length) of the model's GEMV matrices."""
    return tuple(sorted({spec.hidden, spec.heads * spec.head_dim, spec.intermediate}))


def allowed_groups(spec: ModelSpec) -> tuple[int, ...]:
    """The quantisation groups ``spec`` takes: 0 (per output channel), then every multiple
    of 16 that divides all its row lengths."""
    common = math.gcd(*row_lengths(spec))
    return (0, *(g for g in range(GROUP_ALIGN, common + 1, GROUP_ALIGN) if common % g == 0))


def group_problem(spec: ModelSpec, group: object) -> str | None:
    """Why ``group`` cannot quantise ``spec`` (None when it can); names the allowed ones."""
    odd = [k for k in row_lengths(spec) if k % GROUP_ALIGN]
    if odd:
        return (f"{spec.name!r} has row length(s) {odd} that are not multiples of "
                f"{GROUP_ALIGN}: its weights cannot be stored as int8 (16-code loads)")
    allowed = allowed_groups(spec)
    if isinstance(group, bool) or group not in allowed:
        return (f"quantisation group {group!r} does not fit {spec.name!r} (row lengths "
                f"{list(row_lengths(spec))}): a group is a multiple of {GROUP_ALIGN} dividing "
                f"every row length; choose one of {list(allowed)} (0: one scale per output "
                "channel)")
    return None


def quantise_rows(w: np.ndarray, group: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 codes [N, K], float32 scales [N, K / g]) of a float32 matrix ``w`` [N, K];
    ``group`` 0 means ``g = K``."""
    n, k = w.shape
    g = group or k
    blocks = np.ascontiguousarray(w, dtype=np.float32).reshape(n, k // g, g)
    scale = np.abs(blocks).max(axis=2) / np.float32(CODE_MAX)
    safe = np.where(scale > 0, scale, np.float32(1))
    codes = np.rint(blocks / safe[..., None]).clip(-CODE_MAX, CODE_MAX).astype(np.int8)
    return codes.reshape(n, k), scale.astype(np.float32)


def dequantise(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """float32(code) * scale, the values every consumer computes with."""
    n, k = codes.shape
    per = k // scales.shape[1]
    out = codes.reshape(n, -1, per).astype(np.float32) * scales[..., None]
    return out.reshape(n, k)


def check_storage(dtype: str, group: object) -> None:
    """ModelError unless (``dtype``, ``group``) is a storage format at all (the group's fit
    to a model is ``group_problem``'s business)."""
    if dtype not in STORAGE_DTYPES:
        raise ModelError(f"unknown storage dtype {dtype!r}; choose one of {list(STORAGE_DTYPES)}")
    if dtype != "int8" and group:
        raise ModelError(f"quantisation group {group!r} given for {dtype} weights: a group "
                         "only applies to --dtype int8 (leave it out, or pass 0)")
    if isinstance(group, bool) or not isinstance(group, int) or group < 0:
        raise ModelError(f"quantisation group {group!r}: give 0 (one scale per output "
                         f"channel) or a positive multiple of {GROUP_ALIGN}")


def check_fits(spec: ModelSpec, dtype: str, group: int) -> None:
    """ModelError unless ``spec``'s weights can be stored as (``dtype``, ``group``)."""
    check_storage(dtype, group)
    problem = group_problem(spec, group) if dtype == "int8" else None
    if problem:
        raise ModelError(problem)


def to_storage(weights: ModelWeights, dtype: str, group: int = 0) -> ModelWeights:
    """bf16 ``weights`` in storage ``dtype``: themselves for bf16, quantised for int8."""
    check_storage(dtype, group)
    if weights.dtype != "bf16":
        raise ModelError(f"only bf16 weights are converted, these are {weights.dtype!r}")
    return quantise(weights, group) if dtype == "int8" else weights


def quantise(weights: ModelWeights, group: int) -> ModelWeights:
    """The int8 form of bf16 ``weights`` (module docstring); ``weights`` is not modified.
    Raises ModelError naming the allowed groups when ``group`` does not fit the model."""
    spec = weights.spec
    problem = group_problem(spec, group)
    if problem:
        raise ModelError(problem)
    sources = {m: weights.tensors["embed" if m == "lm_head" and spec.tie_embeddings else m]
               for m in gemv_matrices(spec, "int8")}
    codes = {m: np.empty(a.shape, np.int8) for m, a in sources.items()}
    scales = {m: np.empty((a.shape[0], a.shape[1] // (group or a.shape[1])), np.float32)
              for m, a in sources.items()}
    values = {m: np.empty(a.shape, np.float32) for m, a in sources.items()}

    def one(job: tuple[str, int, int]) -> None:
        m, r0, r1 = job
        c, s = quantise_rows(sources[m][r0:r1], group)
        codes[m][r0:r1], scales[m][r0:r1] = c, s
        values[m][r0:r1] = dequantise(c, s)

    jobs = []
    for m, a in sources.items():
        rows = max(1, _CHUNK // a.shape[1])
        jobs += [(m, r, min(r + rows, a.shape[0])) for r in range(0, a.shape[0], rows)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(one, jobs))  # numpy releases the GIL in the heavy steps
    tensors = {**weights.tensors, **values}
    return ModelWeights(spec, "int8", tensors, group, codes, scales)

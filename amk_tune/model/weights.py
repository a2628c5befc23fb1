"""Model weights in their storage dtype, as the megakernel and the oracle both see them.

``ModelWeights.tensors`` holds float32 arrays whose values are exactly representable in the
storage dtype (for bf16: rounded to nearest-even and widened back). The reference VM, the
GPU build (which narrows them losslessly) and the HF oracle therefore all use identical
numbers. Tensor names and shapes (``D = head_dim``, ``H = heads``, ``G = kv_heads``):

- ``embed`` [vocab, hidden]; ``final_norm`` [hidden]; ``lm_head`` [vocab, hidden] if untied
- ``L{l}.attn_norm`` [hidden], ``L{l}.mlp_norm`` [hidden]
- ``L{l}.wqkv`` [(H + 2G) * D, hidden]: q rows, then k rows, then v rows (HF q/k/v_proj)
- ``L{l}.wo`` [hidden, H * D]
- ``L{l}.wgu`` [2 * intermediate, hidden]: gate rows, then up rows
- ``L{l}.wd`` [hidden, intermediate]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from amk_tune.model.spec import ModelSpec

STORAGE_DTYPES = ("bf16",)


def round_to_bf16(a: np.ndarray) -> np.ndarray:
    """float32 -> nearest bf16 (ties to even) -> float32, vectorised; NaN stays NaN."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    bits = a.view(np.uint32)
    rounding = np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    out = ((bits + rounding) & np.uint32(0xFFFF0000)).view(np.float32)
    return np.where(np.isnan(a), a, out)


def bf16_bits(a: np.ndarray) -> np.ndarray:
    """The bf16 bit patterns (uint16) of an array that already holds bf16 values."""
    return (np.ascontiguousarray(a, dtype=np.float32).view(np.uint32) >> np.uint32(16)).astype(
        np.uint16
    )


def weight_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Every tensor name of the layout above with its shape."""
    shapes: dict[str, tuple[int, ...]] = {
        "embed": (spec.vocab, spec.hidden),
        "final_norm": (spec.hidden,),
    }
    if not spec.tie_embeddings:
        shapes["lm_head"] = (spec.vocab, spec.hidden)
    for layer in range(spec.layers):
        shapes[f"L{layer}.attn_norm"] = (spec.hidden,)
        shapes[f"L{layer}.wqkv"] = (spec.qkv_rows, spec.hidden)
        shapes[f"L{layer}.wo"] = (spec.hidden, spec.heads * spec.head_dim)
        shapes[f"L{layer}.mlp_norm"] = (spec.hidden,)
        shapes[f"L{layer}.wgu"] = (2 * spec.intermediate, spec.hidden)
        shapes[f"L{layer}.wd"] = (spec.hidden, spec.intermediate)
    return shapes


@dataclass
class ModelWeights:
    spec: ModelSpec
    dtype: str
    tensors: dict[str, np.ndarray] = field(repr=False)

    def lm_head(self) -> np.ndarray:
        return self.tensors["embed" if self.spec.tie_embeddings else "lm_head"]

    def lm_head_name(self) -> str:
        return "embed" if self.spec.tie_embeddings else "lm_head"


def round_to_bf16_inplace(a: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """:func:`round_to_bf16` into ``a`` itself (float32, C-contiguous), a chunk at a time.

    Same values as ``round_to_bf16(a)``; about 4x faster on GB-sized tables because the
    temporaries stay small. Returns ``a``.
    """
    if a.dtype != np.float32 or not a.flags.c_contiguous or not a.flags.writeable:
        raise ValueError("round_to_bf16_inplace needs a writeable C-contiguous float32 array")
    flat = a.reshape(-1)
    for start in range(0, flat.size, chunk):
        flat[start : start + chunk] = round_to_bf16(flat[start : start + chunk])
    return a

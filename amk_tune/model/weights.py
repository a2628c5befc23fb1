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

Views (``VIEW_SUFFIX``), derived from a tensor above on first use and never stored or hashed:

- ``L{l}.wqkv_halves``: the rows of ``L{l}.wqkv`` with the first half of every head's
  dims first (head-major), then the second half of every head's dims. RoPE pair ``f`` of
  the flattened [q; k; v] heads is then rows ``f`` and ``P + f`` (``P = (H + 2G) * D / 2``),
  so a contiguous pair range may cross heads (the schedule's ``qkv_span``).
- ``L{l}.wd_t`` [intermediate, hidden]: ``L{l}.wd`` transposed, so the down-projection
  columns of a range of intermediate rows are contiguous rows (the schedule's
  ``fuse_down``). For int8 its codes are transposed; the scales stay ``L{l}.wd``'s (one
  per output row and group of intermediate columns), and the kernel reads them there.
- ``L{l}.wo_grp`` [G * hidden, (H / G) * D]: ``L{l}.wo`` cut by KV group: row
  ``g * hidden + r`` is row ``r`` over group ``g``'s head columns (the schedule's
  ``fuse_o``). bf16 only.

``dtype = "int8"`` (amk_tune/model/quantise.py) stores every GEMV matrix as int8 codes with
float32 scales (``codes`` and ``scales``); ``tensors`` then holds their dequantised float32
values (what the reference VM and the HF oracle run on), plus a separate ``lm_head`` when the
model ties it to ``embed`` (the token lookup keeps reading the bf16 ``embed``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from amk_tune.model.spec import ModelSpec

STORAGE_DTYPES = ("bf16", "int8")
SCALE_SUFFIX = ".scale"  # buffer w.<matrix>.scale holds an int8 matrix's scales
VIEW_SUFFIX = "_halves"  # L{l}.wqkv_halves: a row permutation of L{l}.wqkv (docstring)
TRANSPOSE_SUFFIX = "_t"  # L{l}.wd_t: L{l}.wd transposed (docstring)
GROUPED_SUFFIX = "_grp"  # L{l}.wo_grp: L{l}.wo cut by KV group (docstring)


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


def separate_lm_head(spec: ModelSpec, dtype: str) -> bool:
    """Whether the LM head is its own tensor ``lm_head``: untied models, and int8 storage
    (a tied LM head is quantised, the embedding lookup is not)."""
    return not spec.tie_embeddings or dtype == "int8"


def lm_head_tensor(spec: ModelSpec, dtype: str) -> str:
    return "lm_head" if separate_lm_head(spec, dtype) else "embed"


def storage_name(dtype: str, quant_group: int) -> str:
    if dtype != "int8":
        return dtype
    return f"int8, {f'group {quant_group}' if quant_group else 'per-channel scales'}"


def weight_shapes(spec: ModelSpec, dtype: str = "bf16") -> dict[str, tuple[int, ...]]:
    """Every tensor name of the layout above with its shape, for storage ``dtype``."""
    shapes: dict[str, tuple[int, ...]] = {
        "embed": (spec.vocab, spec.hidden),
        "final_norm": (spec.hidden,),
    }
    if separate_lm_head(spec, dtype):
        shapes["lm_head"] = (spec.vocab, spec.hidden)
    for layer in range(spec.layers):
        shapes[f"L{layer}.attn_norm"] = (spec.hidden,)
        shapes[f"L{layer}.wqkv"] = (spec.qkv_rows, spec.hidden)
        shapes[f"L{layer}.wo"] = (spec.hidden, spec.heads * spec.head_dim)
        shapes[f"L{layer}.mlp_norm"] = (spec.hidden,)
        shapes[f"L{layer}.wgu"] = (2 * spec.intermediate, spec.hidden)
        shapes[f"L{layer}.wd"] = (spec.hidden, spec.intermediate)
    return shapes


def halves_order(spec: ModelSpec) -> np.ndarray:
    """Row ``i`` of ``L{l}.wqkv_halves`` is row ``halves_order(spec)[i]`` of ``L{l}.wqkv``."""
    d, half = spec.head_dim, spec.head_dim // 2
    heads = spec.heads + 2 * spec.kv_heads
    lo = (np.arange(heads)[:, None] * d + np.arange(half)[None, :]).ravel()
    return np.concatenate([lo, lo + half])


def view_base(name: str) -> str | None:
    """The tensor a view name derives from (None: not a view)."""
    if name.endswith(".wqkv" + VIEW_SUFFIX):
        return name.removesuffix(VIEW_SUFFIX)
    if name.endswith(".wd" + TRANSPOSE_SUFFIX):
        return name.removesuffix(TRANSPOSE_SUFFIX)
    if name.endswith(".wo" + GROUPED_SUFFIX):
        return name.removesuffix(GROUPED_SUFFIX)
    return None


def view_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Every view's name and shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in range(spec.layers):
        shapes[f"L{layer}.wqkv{VIEW_SUFFIX}"] = (spec.qkv_rows, spec.hidden)
        shapes[f"L{layer}.wd{TRANSPOSE_SUFFIX}"] = (spec.intermediate, spec.hidden)
        shapes[f"L{layer}.wo{GROUPED_SUFFIX}"] = (spec.kv_heads * spec.hidden,
                                                  spec.group * spec.head_dim)
    return shapes


@dataclass
class ModelWeights:
    """``tensors``: float32 values of every tensor (see the module docstring). For int8,
    ``codes[m]`` (int8 [N, K]) and ``scales[m]`` (float32 [N, K / g]) of every GEMV matrix
    ``m``, with ``g`` = ``quant_group`` (0: ``g = K``, one scale per output row)."""

    spec: ModelSpec
    dtype: str
    tensors: dict[str, np.ndarray] = field(repr=False)
    quant_group: int = 0
    codes: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    scales: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _views: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def storage(self) -> str:
        """One human phrase: ``bf16``, ``int8, per-channel scales`` or ``int8, group 64``."""
        return storage_name(self.dtype, self.quant_group)

    def lm_head(self) -> np.ndarray:
        return self.tensors[self.lm_head_name()]

    def lm_head_name(self) -> str:
        return lm_head_tensor(self.spec, self.dtype)

    def tensor(self, name: str) -> np.ndarray:
        """Float32 values of tensor ``name``, a view (``view_base``) included."""
        return self._view("tensors", name)

    def stored(self, name: str) -> np.ndarray:
        """The flat array the kernel's buffer ``w.<name>`` holds: int8 codes of a quantised
        matrix, float32 scales for ``<matrix>.scale``, else bf16 bit patterns."""
        matrix = name.removesuffix(SCALE_SUFFIX)
        if name.endswith(SCALE_SUFFIX) and (matrix in self.scales
                                            or view_base(matrix) in self.scales):
            return self._view("scales", matrix).ravel()
        if name in self.codes or view_base(name) in self.codes:
            return self._view("codes", name).ravel()
        return bf16_bits(self.tensor(name)).ravel()

    def _view(self, kind: str, name: str) -> np.ndarray:
        """``tensors``, ``codes`` or ``scales`` (``kind``) of ``name``: the stored array, or
        the view ``name`` derived from its base's (rows permuted, or transposed; cached)."""
        table: dict[str, np.ndarray] = getattr(self, kind)
        if name in table:
            return table[name]
        base = view_base(name)
        if base is None or base not in table:
            raise KeyError(name)
        key = f"{kind}:{name}"
        if key not in self._views:
            if name.endswith(TRANSPOSE_SUFFIX):
                if kind == "scales":  # they stay the base's (docstring)
                    raise KeyError(f"{name}{SCALE_SUFFIX}: a transposed view has no scales of "
                                   f"its own; read {base}{SCALE_SUFFIX}")
                view = table[base].T
            elif name.endswith(GROUPED_SUFFIX):
                if kind != "tensors":
                    raise KeyError(f"{name} of int8 weights: the grouped view is bf16 only")
                sp, w = self.spec, table[base]
                view = w.reshape(sp.hidden, sp.kv_heads, -1).transpose(1, 0, 2).reshape(
                    sp.kv_heads * sp.hidden, -1)
            else:
                view = table[base][halves_order(self.spec)]
            self._views[key] = np.ascontiguousarray(view)
        return self._views[key]


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

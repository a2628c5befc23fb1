"""A corpus row (knobs + model shape + GPU profile + dtype) -> a fixed numeric vector.

Sizes enter as log2, categoricals one-hot (``sm_policy``, ``dtype``), the int8 group as the
scale bytes per weight byte it adds (4 / group; 0 per channel or bf16), and the knobs that only
mean something relative to the GPU as ratios to it (tiles per block, shared memory and
threads per SM against the profile), so a prior trained on one GPU can rank for another.
The order of ``FEATURES`` is the contract: ``vector`` returns exactly that many numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from amk_tune.model.weights import STORAGE_DTYPES
from space.schedule import SM_POLICIES
from space.search_space import FUSIONS

FEATURES = (
    "log2_hidden", "log2_layers", "log2_heads", "log2_kv_heads", "log2_head_dim",
    "log2_intermediate", "log2_vocab", "tie_embeddings",
    "log2_sms", "log2_measured_gbps", "log2_smem_per_sm",
    *(f"dtype_{d}" for d in STORAGE_DTYPES), "scale_bytes_per_weight",
    "tiles_custom", "tiles_per_block", "lm_tiles_custom", "lm_tiles_per_block",
    *(f"sm_policy_{p}" for p in SM_POLICIES),
    "split_kv", *FUSIONS, "log2_steps_per_launch", "blocks_per_sm", "log2_threads",
    "smem_per_block_kib", "smem_fraction_of_sm", "threads_per_sm_over_2048",
    "rows_per_warp", "unroll", "spin_sleep_us", "prefetch", "lm_rows_per_warp", "lm_unroll",
    "log2_k_split", "lm_ring", "ring", "ring_pairs", "ring_prefill", "weights_evict_first",
    "bulk_stage", "qkv_span", "fuse_down", "fuse_o", "down_slot",
)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _flag(v: Any) -> float:
    """A bool that may have come back from CSV as a string."""
    if isinstance(v, str):
        return 1.0 if v.strip().lower() == "true" else 0.0
    return 1.0 if bool(v) else 0.0


def vector(row: Mapping[str, Any]) -> np.ndarray:
    """The features of one row, in the order of ``FEATURES``."""
    blocks = int(row["sms"]) * int(row["blocks_per_sm"])
    tiles, lm_tiles = row["tiles"], row["lm_tiles"]
    per_sm_smem = float(row["smem_bytes"]) * int(row["blocks_per_sm"])
    if row["dtype"] not in STORAGE_DTYPES:
        raise ValueError(f"dtype {row['dtype']!r} is not one of {STORAGE_DTYPES}")
    if row["sm_policy"] not in SM_POLICIES:
        raise ValueError(f"sm_policy {row['sm_policy']!r} is not one of {SM_POLICIES}")
    out = [
        *(math.log2(float(row[f])) for f in ("hidden", "layers", "heads", "kv_heads",
                                              "head_dim", "intermediate", "vocab")),
        _flag(row["tie_embeddings"]),
        math.log2(float(row["sms"])), math.log2(float(row["measured_gbps"])),
        math.log2(float(row["smem_per_sm"])),
        *(float(row["dtype"] == d) for d in STORAGE_DTYPES),
        4.0 / float(row["quant_group"]) if float(row["quant_group"]) > 0 else 0.0,
        0.0 if _missing(tiles) else 1.0,
        1.0 if _missing(tiles) else float(tiles) / blocks,
        0.0 if _missing(lm_tiles) else 1.0,
        1.0 if _missing(lm_tiles) else float(lm_tiles) / blocks,
        *(float(row["sm_policy"] == p) for p in SM_POLICIES),
        float(row["split_kv"]), *(_flag(row[f]) for f in FUSIONS),
        math.log2(float(row["steps_per_launch"])), float(row["blocks_per_sm"]),
        math.log2(float(row["threads"])),
        float(row["smem_bytes"]) / 1024, per_sm_smem / float(row["smem_per_sm"]),
        float(row["threads"]) * int(row["blocks_per_sm"]) / 2048,
        float(row["rows_per_warp"]), float(row["unroll"]), float(row["spin_sleep_ns"]) / 1000,
        float(row["prefetch"]), float(row["lm_rows_per_warp"]), float(row["lm_unroll"]),
        math.log2(float(row.get("k_split", 1))), float(row.get("lm_ring", 0)),
        float(row.get("ring", 0)), _flag(row.get("ring_pairs", False)),
        _flag(row.get("ring_prefill", False)), _flag(row.get("weights_evict_first", False)),
        _flag(row.get("bulk_stage", False)), _flag(row.get("qkv_span", False)),
        _flag(row.get("fuse_down", False)), _flag(row.get("fuse_o", False)),
        _flag(row.get("down_slot", False)),
    ]
    return np.asarray(out, dtype=np.float64)


def matrix(rows: pd.DataFrame) -> np.ndarray:
    """``vector`` of every row: shape (len(rows), len(FEATURES))."""
    if rows.empty:
        return np.zeros((0, len(FEATURES)))
    return np.stack([vector(r) for r in rows.to_dict("records")])

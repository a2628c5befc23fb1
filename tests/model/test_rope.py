from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from amk_tune.model.hf_config import spec_to_hf_config
from amk_tune.model.presets import PRESETS
from amk_tune.model.rope import rope_cos_sin, rope_table

SPECS = ["smollm2-135m", "smollm2-1.7b", "llama-3.2-1b", "llama-3.2-3b", "llama-2-7b"]
POSITIONS = 4096


def hf_cos_sin(spec, position_ids: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    rotary = LlamaRotaryEmbedding(spec_to_hf_config(spec))
    cos, sin = rotary(torch.zeros(1, dtype=torch.float32), position_ids)
    half = spec.head_dim // 2
    # HF's tables are [cos_half, cos_half]: the two halves must be identical.
    assert torch.equal(cos[..., :half], cos[..., half:])
    return cos[0, :, :half].numpy(), sin[0, :, :half].numpy()


@pytest.mark.parametrize("name", SPECS)
def test_table_is_bit_identical_to_hf(name):
    spec = PRESETS[name]
    cos, sin = rope_table(spec, POSITIONS)
    hcos, hsin = hf_cos_sin(spec, torch.arange(POSITIONS)[None])
    assert cos.dtype == np.float32 and cos.shape == (POSITIONS, spec.head_dim // 2)
    np.testing.assert_array_equal(cos, hcos)
    np.testing.assert_array_equal(sin, hsin)


@pytest.mark.parametrize("name", SPECS)
@pytest.mark.parametrize("position", [0, 1, 37, 1000, 4095])
def test_single_position_is_bit_identical_to_hf_decode(name, position):
    spec = PRESETS[name]
    cos, sin = rope_cos_sin(spec, position)
    hcos, hsin = hf_cos_sin(spec, torch.tensor([[position]]))
    assert cos.shape == (spec.head_dim // 2,)
    np.testing.assert_array_equal(cos, hcos[0])
    np.testing.assert_array_equal(sin, hsin[0])


def test_llama3_scaling_changes_low_frequencies_only():
    scaled = PRESETS["llama-3.2-1b"]
    plain = dataclasses.replace(scaled, rope_scaling=None)
    cos_s, _ = rope_cos_sin(scaled, 5000)
    cos_p, _ = rope_cos_sin(plain, 5000)
    assert np.array_equal(cos_s[:4], cos_p[:4])  # high frequencies untouched
    assert not np.allclose(cos_s[-4:], cos_p[-4:])  # low frequencies divided by factor


def test_position_out_of_range():
    spec = PRESETS["smollm2-135m"]
    with pytest.raises(ValueError, match="position=8192"):
        rope_cos_sin(spec, 8192)
    with pytest.raises(ValueError, match="position=-1"):
        rope_cos_sin(spec, -1)

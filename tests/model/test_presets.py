from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from amk_tune.errors import ModelError
from amk_tune.model.presets import PRESETS, preset_spec, random_weights
from amk_tune.model.spec import RopeScaling
from amk_tune.model.weights import STORAGE_DTYPES, round_to_bf16, weight_shapes

LLAMA3 = RopeScaling(32.0, 1.0, 4.0, 8192)
# name: (hidden, layers, heads, kv_heads, head_dim, ffn, vocab, tied, theta, max_pos, rope,
#        published parameter count)
EXPECTED = {
    "smollm2-135m": (576, 30, 9, 3, 64, 1536, 49152, True, 1e5, 8192, None, 134_515_008),
    "smollm2-360m": (960, 32, 15, 5, 64, 2560, 49152, True, 1e5, 8192, None, 361_821_120),
    "smollm2-1.7b": (2048, 24, 32, 32, 64, 8192, 49152, True, 1.3e5, 8192, None,
                     1_711_376_384),
    "llama-3.2-1b": (2048, 16, 32, 8, 64, 8192, 128256, True, 5e5, 131072, LLAMA3,
                     1_235_814_400),
    "llama-3.2-3b": (3072, 28, 24, 8, 128, 8192, 128256, True, 5e5, 131072, LLAMA3,
                     3_212_749_824),
    "tinyllama-1.1b": (2048, 22, 32, 4, 64, 5632, 32000, False, 1e4, 2048, None,
                       1_100_048_384),
    "llama-2-7b": (4096, 32, 32, 32, 128, 11008, 32000, False, 1e4, 4096, None,
                   6_738_415_616),
}


def test_every_preset_is_listed():
    assert set(PRESETS) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_shape(name):
    spec = preset_spec(name)
    got = (spec.hidden, spec.layers, spec.heads, spec.kv_heads, spec.head_dim,
           spec.intermediate, spec.vocab, spec.tie_embeddings, spec.rope_theta,
           spec.max_position, spec.rope_scaling, spec.param_count())
    assert got == EXPECTED[name]
    assert spec.rms_eps == 1e-5 and spec.name == name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reduced_layers_keep_every_other_dimension(name):
    spec = preset_spec(name, layers=2)
    assert spec == dataclasses.replace(PRESETS[name], layers=2)


@pytest.mark.parametrize("layers", [0, -1, 31, 2.0, True])
def test_bad_layers(layers):
    with pytest.raises(ModelError, match=f"layers={layers!r}"):
        preset_spec("smollm2-135m", layers=layers)


def test_unknown_preset_lists_presets():
    with pytest.raises(ModelError, match=r"llama-3\.2-1b") as err:
        preset_spec("gpt-5")
    assert "'gpt-5'" in str(err.value)


@pytest.fixture(scope="module")
def smol2():
    return random_weights(preset_spec("smollm2-135m", layers=2), seed=7)


def test_weights_layout_and_storage_values(smol2):
    assert smol2.dtype == "bf16"
    shapes = weight_shapes(smol2.spec)
    assert {k: v.shape for k, v in smol2.tensors.items()} == shapes
    for name, a in smol2.tensors.items():
        assert a.dtype == np.float32 and a.flags.c_contiguous, name
        np.testing.assert_array_equal(round_to_bf16(a), a, err_msg=name)


def test_weights_statistics(smol2):
    embed = smol2.tensors["embed"]
    assert abs(float(embed.std()) - 0.02) < 5e-4 and abs(float(embed.mean())) < 5e-4
    norm = smol2.tensors["L1.mlp_norm"]
    assert abs(float(norm.mean()) - 1.0) < 5e-3 and 0.01 < float(norm.std()) < 0.03


def test_weights_are_seeded_and_layer_prefix_stable(smol2):
    again = random_weights(preset_spec("smollm2-135m", layers=1), seed=7)
    for name, a in again.tensors.items():  # layers=1 is exactly the first layer of layers=2
        np.testing.assert_array_equal(a, smol2.tensors[name], err_msg=name)
    other = random_weights(preset_spec("smollm2-135m", layers=1), seed=8)
    assert not np.array_equal(other.tensors["L0.wqkv"], again.tensors["L0.wqkv"])


def test_untied_preset_has_lm_head():
    w = random_weights(dataclasses.replace(preset_spec("tinyllama-1.1b", 1), vocab=512))
    assert w.lm_head_name() == "lm_head" and w.lm_head().shape == (512, 2048)
    assert not np.array_equal(w.tensors["lm_head"], w.tensors["embed"])


def test_bad_dtype_lists_storage_dtypes():
    with pytest.raises(ModelError, match="'fp8'") as err:
        random_weights(preset_spec("smollm2-135m", 1), dtype="fp8")
    assert all(d in str(err.value) for d in STORAGE_DTYPES)

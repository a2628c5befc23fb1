"""int8 storage: the quantisation scheme, what is quantised, the kernel's buffers, the groups
a model takes, and the HF oracle on the dequantised weights (tied models run untied)."""

from __future__ import annotations

import numpy as np
import pytest

from amk_tune.errors import ModelError
from amk_tune.model.loaders import load_model, weights_to_hf_state_dict
from amk_tune.model.presets import preset_spec, random_weights
from amk_tune.model.quantise import (
    allowed_groups,
    dequantise,
    gemv_matrices,
    quantise,
    quantise_rows,
    to_storage,
)
from amk_tune.model.weights import bf16_bits, weight_shapes
from amk_tune.oracle import hf_model
from tests.conftest import TINY, TINY_UNTIED, tiny_weights


def test_scheme_symmetric_per_row_and_group():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 64), dtype=np.float32)
    w[3] = 0.0  # an all-zero row: scale 0, codes 0, values 0
    for group, per_row in ((0, 1), (16, 4), (32, 2)):
        codes, scales = quantise_rows(w, group)
        assert codes.dtype == np.int8 and codes.shape == w.shape
        assert scales.dtype == np.float32 and scales.shape == (5, per_row)
        blocks = np.abs(w).reshape(5, per_row, -1).max(axis=2)
        np.testing.assert_array_equal(scales, blocks / np.float32(127))
        assert np.abs(codes).max() == 127 and not codes[3].any() and not scales[3].any()
        values = dequantise(codes, scales)
        err = np.abs(values - w).reshape(5, per_row, -1)
        assert np.all(err <= scales[..., None] / 2 * (1 + 1e-6))  # round to nearest
        expect = codes.astype(np.float32).reshape(5, per_row, -1) * scales[..., None]
        np.testing.assert_array_equal(values, expect.reshape(5, 64))  # one float32 rounding


@pytest.mark.parametrize("spec", [TINY, TINY_UNTIED], ids=lambda s: s.name)
def test_every_gemv_matrix_is_quantised_and_the_rest_is_untouched(spec):
    bf16 = tiny_weights(spec)
    q = quantise(bf16, 16)
    assert q.dtype == "int8" and q.quant_group == 16 and bf16.dtype == "bf16"
    assert set(q.codes) == set(q.scales) == set(gemv_matrices(spec, "int8"))
    assert "lm_head" in q.codes and q.lm_head_name() == "lm_head"
    assert set(q.tensors) == set(weight_shapes(spec, "int8"))
    for name, a in q.tensors.items():
        if name in q.codes:
            np.testing.assert_array_equal(a, dequantise(q.codes[name], q.scales[name]))
            source = bf16.tensors["embed" if name == "lm_head" and spec.tie_embeddings
                                  else name]
            assert 0 < np.abs(a - source).max() <= np.abs(source).max() / 254 * 1.001
        else:
            assert a is bf16.tensors[name]  # norms and the embedding lookup stay bf16
    assert to_storage(bf16, "bf16") is bf16  # bf16 stays bit-identical: no conversion


def test_stored_is_what_the_kernel_buffers_hold():
    q = quantise(tiny_weights(TINY), 0)
    assert q.stored("L0.wqkv").dtype == np.int8 and q.stored("L0.wqkv").size == 128 * 64
    np.testing.assert_array_equal(q.stored("L0.wqkv.scale"), q.scales["L0.wqkv"].ravel())
    np.testing.assert_array_equal(q.stored("embed"), bf16_bits(q.tensors["embed"]).ravel())
    np.testing.assert_array_equal(q.stored("L1.mlp_norm"), bf16_bits(q.tensors["L1.mlp_norm"]))


def test_groups_a_model_takes():
    assert allowed_groups(TINY) == (0, 16, 32)  # row lengths 64, 96
    assert allowed_groups(TINY_UNTIED) == (0, 16)  # 48, 80
    assert allowed_groups(preset_spec("smollm2-135m")) == (0, 16, 32, 48, 64, 96, 192)
    assert 128 in allowed_groups(preset_spec("llama-3.2-1b"))


@pytest.mark.parametrize(("dtype", "group", "message"), [
    ("int8", 128, r"quantisation group 128 does not fit 'smollm2-135m' \(row lengths "
                  r"\[576, 1536\]\).*choose one of \[0, 16, 32, 48, 64, 96, 192\]"),
    ("int8", -1, r"quantisation group -1"),
    ("bf16", 64, r"quantisation group 64 given for bf16 weights"),
    ("int4", 0, r"unknown storage dtype 'int4'; choose one of \['bf16', 'int8'\]"),
])
def test_bad_formats_are_refused_before_any_weight(dtype, group, message, monkeypatch):
    import amk_tune.model.loaders as loaders

    monkeypatch.setattr(loaders, "random_weights", lambda *a, **k: pytest.fail("loaded"))
    with pytest.raises(ModelError, match=message):
        load_model("smollm2-135m", dtype=dtype, quant_group=group, layers=1)


def test_load_model_int8_preset():
    m = load_model("smollm2-135m", dtype="int8", quant_group=64, layers=1, seed=2)
    assert m.weights.dtype == "int8" and m.weights.quant_group == 64
    assert "random int8, group 64 weights" in m.source
    bf16 = random_weights(m.spec, seed=2)
    np.testing.assert_array_equal(m.weights.tensors["lm_head"],
                                  quantise(bf16, 64).tensors["lm_head"])


@pytest.mark.parametrize("spec", [TINY, TINY_UNTIED], ids=lambda s: s.name)
def test_hf_runs_the_dequantised_weights_untied(spec):
    q = quantise(tiny_weights(spec), 0)
    sd = weights_to_hf_state_dict(q)
    assert sd["lm_head.weight"].data_ptr() == q.tensors["lm_head"].ctypes.data
    model = hf_model(q)
    assert model.config.tie_word_embeddings is False
    np.testing.assert_array_equal(model.lm_head.weight.detach().numpy(), q.tensors["lm_head"])
    np.testing.assert_array_equal(model.model.embed_tokens.weight.detach().numpy(),
                                  q.tensors["embed"])

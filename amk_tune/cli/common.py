"""Arguments and helpers several subcommands share."""

from __future__ import annotations

import argparse

from amk_tune.model.spec import ModelSpec


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="preset name, smollm2-135m-instruct, a .gguf file, a local HF "
                        "directory or a hub id (default: smollm2-135m-instruct)")
    p.add_argument("--layers", type=int, help="keep only the first N layers (fast checks)")
    p.add_argument("--dtype", default="bf16",
                   help="weight storage: bf16, or int8 (W8A16: int8 codes with float32 scales, "
                        "every GEMV matrix; default: bf16)")
    p.add_argument("--quant-group", type=int, metavar="G",
                   help="int8: input columns per scale, a multiple of 16 dividing every row "
                        "length of the model; 0 = one scale per output channel (default 0; "
                        "`study` searches the groups that fit unless given)")


def quant_group(args: argparse.Namespace) -> int:
    """``--quant-group``, 0 when not given."""
    return 0 if args.quant_group is None else args.quant_group


def resolve_spec(args: argparse.Namespace) -> ModelSpec:
    from amk_tune.model.loaders import inspect_model
    from amk_tune.model.presets import with_layers

    return with_layers(inspect_model(args.model), args.layers)

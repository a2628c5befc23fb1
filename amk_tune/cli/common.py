"""Arguments and helpers several subcommands share."""

from __future__ import annotations

import argparse

from amk_tune.model.spec import ModelSpec


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="preset name, smollm2-135m-instruct, a .gguf file, a local HF "
                        "directory or a hub id (default: smollm2-135m-instruct)")
    p.add_argument("--layers", type=int, help="keep only the first N layers (fast checks)")
    p.add_argument("--dtype", default="bf16", help="weight storage dtype (default: bf16)")


def resolve_spec(args: argparse.Namespace) -> ModelSpec:
    from amk_tune.model.loaders import inspect_model
    from amk_tune.model.presets import with_layers

    return with_layers(inspect_model(args.model), args.layers)

"""The ``amk-tune`` command line. Each subcommand lives in its own module of this package
and exposes ``register(subparsers)``, which adds its parser and sets ``func`` to a
``run(args) -> int`` callable returning the exit code."""

from __future__ import annotations

import argparse
import importlib
import sys

from amk_tune.errors import AmkError

SUBCOMMANDS = ["doctor", "compile", "generate", "validate", "bench", "study", "export", "run",
               "report", "dashboard", "corpus", "prior"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amk-tune",
        description="Compile Llama-family models into one persistent CUDA megakernel and tune it.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"amk_tune.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except AmkError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

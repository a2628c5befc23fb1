"""``amk-tune run DIR --prompt TEXT --max-new-tokens N``: greedy decoding with an exported
artifact, no search. The artifact is verified first (format, every hash, re-lowering, the
weights' hash, the live GPU arch); a tampered, mismatched or foreign one is refused."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run an exported megakernel artifact (no search)")
    p.add_argument("artifact", type=Path, metavar="DIR",
                   help="directory (or .tar.gz) written by `amk-tune export`")
    p.add_argument("--prompt", help="prompt text (needs a model with a tokenizer)")
    p.add_argument("--prompt-ids", help="comma-separated token ids instead of --prompt")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="cuda: the shipped binary on the live GPU; cpu: the reference VM "
                        "running the shipped program; auto (default): cuda when there is a "
                        "GPU and the artifact has a binary, else cpu")
    p.add_argument("--model", help="load the weights from here instead of the manifest's "
                                   "source (they must hash the same)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from amk_tune.artifacts.runner import load_weights, open_artifact, run_artifact
    from amk_tune.cli.generate import prompt_ids

    art = open_artifact(args.artifact)
    model = load_weights(art, args.model)
    args.model = args.model or art.manifest.model.source
    ids = prompt_ids(args, model.tokenizer)
    device = args.device
    if device == "auto":
        from amk_tune.device import live_gpu

        device = "cuda" if art.manifest.binary and live_gpu() else "cpu"
    t0 = time.perf_counter()
    gen = run_artifact(art, model.weights, ids, args.max_new_tokens, device)
    took = time.perf_counter() - t0
    text = model.tokenizer.decode(gen.tokens) if model.tokenizer else " ".join(map(str, gen.tokens))
    print(text)
    m = art.manifest
    where = (f"shipped {m.binary} on {m.arch}" if device == "cuda"
             else "reference VM on the CPU")
    print(f"[artifact: trial {m.trial} of {m.study!r}, {m.latency_us:.1f} us/token "
          f"{'measured' if m.measured else 'simulated'} on {m.gpu}, verified "
          f"{m.content_sha256[:16]}...; {len(gen.tokens)} tokens, {gen.launches} launches, "
          f"{where}, {took:.1f} s]", file=sys.stderr)
    return 0

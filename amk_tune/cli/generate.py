"""``amk-tune generate``: greedy decoding through the megakernel program."""

from __future__ import annotations

import argparse
import sys
import time

from amk_tune.cli.common import add_model_args, quant_group
from amk_tune.errors import AmkError
from amk_tune.targets import get_target
from space.schedule import Schedule


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="greedy-decode a prompt through the megakernel program")
    add_model_args(p)
    p.add_argument("--prompt", help="prompt text (needs a model with a tokenizer)")
    p.add_argument("--prompt-ids", help="comma-separated token ids instead of --prompt")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cpu: the NumPy reference VM; cuda: the megakernel on the GPU")
    p.add_argument("--gpu", default="auto", help="target profile the program is lowered for")
    p.add_argument("--schedule", help="JSON file of schedule knobs")
    p.add_argument("--steps-per-launch", type=int, help="override the schedule's steps per launch")
    p.add_argument("--interleave-seed", type=int,
                   help="run blocks in a random valid interleaving drawn from this seed")
    p.add_argument("--seed", type=int, default=0, help="seed of a preset's random weights")
    p.add_argument("--verify", action="store_true",
                   help="check logits and greedy tokens against HF transformers eager")
    p.set_defaults(func=run)


def prompt_ids(args: argparse.Namespace, tokenizer) -> list[int]:
    if args.prompt_ids:
        try:
            return [int(t) for t in args.prompt_ids.split(",") if t.strip()]
        except ValueError:
            raise AmkError(f"--prompt-ids {args.prompt_ids!r}: give integers like 1,42,7") from None
    if args.prompt is None:
        raise AmkError("give --prompt TEXT (or --prompt-ids for a model without a tokenizer)")
    if tokenizer is None:
        raise AmkError(f"model {args.model!r} has no tokenizer: pass --prompt-ids 1,2,3 instead")
    return list(tokenizer.encode(args.prompt, add_special_tokens=False))


def run(args: argparse.Namespace) -> int:
    from amk_tune.model.loaders import load_model
    from amk_tune.oracle import Tolerance, compare, hf_reference
    from vm.decode import cpu_runner, greedy_generate

    model = load_model(args.model, dtype=args.dtype, quant_group=quant_group(args),
                       layers=args.layers, seed=args.seed)
    schedule = Schedule.load(args.schedule) if args.schedule else Schedule()
    if args.steps_per_launch:
        schedule = schedule.replace(steps_per_launch=args.steps_per_launch)
    ids = prompt_ids(args, model.tokenizer)
    t0 = time.perf_counter()
    if args.device == "cuda":
        from vm.gpu_runner import gpu_runner

        runner, where = gpu_runner(model.weights), "megakernel on the GPU"
    else:
        runner, where = cpu_runner(model.weights, args.interleave_seed), "reference VM on the CPU"
    gen = greedy_generate(model.weights, schedule, get_target(args.gpu), ids,
                          args.max_new_tokens, runner)
    took = time.perf_counter() - t0
    text = model.tokenizer.decode(gen.tokens) if model.tokenizer else " ".join(map(str, gen.tokens))
    print(text)
    print(f"[{len(gen.tokens)} tokens, {gen.launches} launches, {where}, "
          f"{took:.1f} s; prompt fed token by token]", file=sys.stderr)
    if not args.verify:
        return 0
    ref = hf_reference(model.weights, ids, args.max_new_tokens)
    verdict = compare(ref, gen.tokens, gen.logits, Tolerance())
    print(f"oracle: {verdict.message}")
    return 0 if verdict.passed else 1

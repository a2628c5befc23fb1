"""int8 weights against the original bf16 weights: what quantisation costs in quality.

The oracle never sees this: it compares a megakernel with HF float32 on the *same*
dequantised weights. Here HF float32 (eager, CPU, no megakernel) runs the real
SmolLM2-135M-Instruct twice, on its bf16 weights and on each int8 format
(amk_tune/model/quantise.py), and compares them:

- greedy agreement: ``--tokens`` greedy tokens from a fixed chat prompt, free-running (the
  first generated token where int8 leaves bf16's text, with bf16's top-1 minus top-2 logit
  there: a small margin is a near tie) and teacher-forced (the int8 model fed bf16's greedy
  text: the fraction of positions where its top-1 is bf16's token);
- perplexity of the fixed paragraph ``TEXT`` (written for this file), and the mean
  KL(bf16 || int8) of the next-token distributions over it.

    python3 benchmarks/int8_quality.py [--tokens 256] [--groups 0,32,64,192]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import numpy as np
import torch

from amk_tune.model.loaders import load_model
from amk_tune.model.quantise import allowed_groups, to_storage
from amk_tune.oracle import hf_model, hf_reference

MODEL = "smollm2-135m-instruct"
PROMPT = "Explain to a curious ten-year-old how a lighthouse helps ships at night."
TEXT = (
    "The old railway station at the edge of town had been closed for nearly thirty years "
    "before a group of volunteers decided to turn it into a library. They started with "
    "almost nothing: a leaking roof, a waiting room full of broken benches, and a single "
    "box of donated paperbacks. Every Saturday morning they arrived with ladders, paint and "
    "sandwiches, and by the end of the first summer the roof no longer leaked. The ticket "
    "office became a reading corner for children, and the old timetable board, repaired by "
    "a retired electrician, now shows the opening hours instead of departures. Books arrived "
    "faster than anyone expected. Neighbours brought atlases, cookbooks and detective "
    "novels; a local school sent a crate of science magazines; someone left a complete "
    "encyclopedia on the platform with a note that simply said thank you. The volunteers "
    "sorted everything by hand, writing catalogue cards at the long table where passengers "
    "once waited for the evening train. Today the library lends more than two thousand "
    "books a month. On rainy afternoons the waiting room is full of students doing their "
    "homework, and on the first Sunday of every month a storyteller reads aloud beneath the "
    "station clock, which still runs four minutes fast, exactly as it always did."
)


def greedy_agreement(model, ids: list[int], ref_tokens: tuple[int, ...],
                     tokens: int) -> tuple[int | None, float]:
    """(first generated token that differs from bf16's, or None; teacher-forced top-1
    agreement with bf16's greedy tokens)."""
    own = hf_reference(model, ids, tokens).tokens
    first = next((k for k, (a, b) in enumerate(zip(own, ref_tokens, strict=True)) if a != b),
                 None)
    seq = torch.tensor([ids + list(ref_tokens[:-1])])
    with torch.no_grad():
        logits = model(seq, use_cache=False).logits[0, len(ids) - 1:]
    top1 = logits.argmax(-1).numpy()
    return first, float(np.mean(top1 == np.asarray(ref_tokens)))


def text_logprobs(model, text_ids: list[int]) -> torch.Tensor:
    """log-softmax of the next-token logits at every position of the text but the last."""
    with torch.no_grad():
        logits = model(torch.tensor([text_ids]), use_cache=False).logits[0, :-1]
    return torch.log_softmax(logits.double(), dim=-1)


def perplexity(logp: torch.Tensor, text_ids: list[int]) -> float:
    target = torch.tensor(text_ids[1:])
    return float(torch.exp(-logp[torch.arange(len(target)), target].mean()))


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=256, help="greedy tokens to compare")
    ap.add_argument("--groups", default="0,32,64,192",
                    help="int8 quantisation groups (0: per output channel)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    loaded = load_model(MODEL)
    bf16, tok = loaded.weights, loaded.tokenizer
    groups = [int(g) for g in args.groups.split(",")]
    chat = [{"role": "user", "content": PROMPT}]
    prompt = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    ids = [int(t) for t in tok.encode(prompt, add_special_tokens=False)]
    text_ids = [int(t) for t in tok.encode(TEXT, add_special_tokens=False)]

    base = hf_model(bf16)
    ref = hf_reference(base, ids, args.tokens)
    base_logp = text_logprobs(base, text_ids)
    rows = [("bf16 (original)", "-", "1.000", f"{perplexity(base_logp, text_ids):.3f}", "0")]
    for g in groups:
        weights = to_storage(bf16, "int8", g)
        model = hf_model(weights)
        first, forced = greedy_agreement(model, ids, ref.tokens, args.tokens)
        logp = text_logprobs(model, text_ids)
        kl = float((base_logp.exp() * (base_logp - logp)).sum(-1).mean())
        same = (f"{args.tokens}/{args.tokens}" if first is None else
                f"{first}/{args.tokens} (bf16 top-2 margin there {ref.margin(first):.2f})")
        rows.append((weights.storage, same, f"{forced:.3f}", f"{perplexity(logp, text_ids):.3f}",
                     f"{kl:.2e}"))
        del model, weights

    print(f"{MODEL}, HF eager float32 on the CPU ({cpu_name()}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads), {datetime.date.today().isoformat()}, "
          f"{time.perf_counter() - t0:.0f} s")
    print(f"prompt (chat template): {PROMPT!r} ({len(ids)} tokens); "
          f"text: {len(text_ids)} tokens; groups that fit: {list(allowed_groups(bf16.spec))}")
    print(f"bf16 greedy text: {tok.decode(ref.tokens)!r}")
    print()
    print("| weights | greedy tokens equal to bf16 before the first difference "
          "| teacher-forced top-1 agreement | perplexity of the text | mean KL(bf16 || int8) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()

"""``amk-tune bench``: megakernel us/token against the torch baselines, in one process, on the
same weights, with the oracle verdict of the very launches that were timed.

Method: the prompt (``position`` tokens) goes through one megakernel launch, filling the KV
caches; then a launch of ``steps`` decode steps at ``position`` is prepared once and timed
back to back (CUDA events around each launch, counters reset inside it), after warm-up.
Every replay rewrites the same cache rows with the same values, so the first replay's
logits and tokens are those of every replay: together with the prompt launch they are
checked against HF eager (``amk_tune.oracle``). us/token = launch time / steps.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import numpy as np

from amk_tune.baselines import Timing, torch_baselines
from amk_tune.model.weights import ModelWeights
from amk_tune.targets import Target
from space.kernel_knobs import KernelKnobs
from space.schedule import Schedule
from vm.analysis import weight_bytes
from vm.lowering import lower
from vm.program import Program


@dataclass(frozen=True)
class BenchResult:
    device: str
    model: str
    storage: str  # the weights' storage dtype, in words (ModelWeights.storage)
    position: int
    steps: int
    megakernel: Timing  # us per token
    verdict: str
    baselines: dict[str, Timing | str]  # us per token (one step each)
    floor_us: float
    weight_bytes: int
    gbps: float
    date: str

    def table(self) -> str:
        rows = [("megakernel", self.megakernel, f"{self.steps} steps/launch; oracle "
                 f"{self.verdict}")]
        rows += [(name, t, "") for name, t in self.baselines.items()]
        lines = [
            f"bench: {self.model} {self.storage}, position {self.position}, {self.device}, "
            f"{self.date}",
            f"{'what':<28} {'us/token':>10} {'p10-p90':>17}  note",
        ]
        for name, t, note in rows:
            if isinstance(t, Timing):
                spread = f"{t.p10_us:.1f}-{t.p90_us:.1f}"
                lines.append(f"{name:<28} {t.median_us:>10.1f} {spread:>17}  {note}")
            else:
                lines.append(f"{name:<28} {'-':>10} {'':>17}  {t}")
        frac = self.floor_us / self.megakernel.median_us
        lines.append(f"{'bandwidth floor':<28} {self.floor_us:>10.1f} {'':>17}  "
                     f"{self.weight_bytes / 1e6:.0f} MB at {self.gbps:.0f} GB/s")
        lines.append(f"{'megakernel / floor':<28} {100 * frac:>9.1f}%")
        return "\n".join(lines)


def prompt_ids(weights: ModelWeights, tokenizer, position: int) -> list[int]:
    """``position`` prompt tokens: a real text when there is a tokenizer, else seeded ids."""
    if tokenizer is not None:
        text = ("The lighthouse keeper climbed the stairs every night, counting the steps "
                "and listening to the sea below, until one evening he found a letter. ") * 8
        ids = [int(t) for t in tokenizer.encode(text, add_special_tokens=False)]
        if len(ids) >= position:
            return ids[:position]
    rng = np.random.default_rng(position)
    return [int(t) for t in rng.integers(0, weights.spec.vocab, position)]


def launch_programs(weights: ModelWeights, target: Target, schedule: Schedule, position: int,
                    steps: int) -> tuple[Program, Program]:
    """(the prompt launch of ``position`` steps, the launch of ``steps`` steps after it)."""
    spec, total = weights.spec, position + steps
    fmt = {"dtype": weights.dtype, "quant_group": weights.quant_group}
    return (lower(spec, schedule, target, steps=position, position=0, max_seq=total, **fmt),
            lower(spec, schedule, target, steps=steps, position=position, max_seq=total, **fmt))


def run_checked(machine, weights: ModelWeights, target: Target, schedule: Schedule,
                prompt: list[int], steps: int):
    """The prompt in one launch (filling the KV caches), then one launch of ``steps`` decode
    steps at position ``len(prompt)``, prepared once so that it can be replayed.

    Returns (the prepared launch, logits of every step [len(prompt) + steps, vocab], greedy
    tokens: the prompt launch's last one, then the timed launch's ``steps``)."""
    pre, program = launch_programs(weights, target, schedule, len(prompt), steps)
    first = machine.launch(pre, prompt)
    prepared = machine.prepare(program, [int(first.tokens[-1])])
    machine.start(prepared)
    machine.finish(prepared)
    logits = np.concatenate([first.logits, machine.buffers["logits"].get().reshape(steps, -1)])
    tokens = [int(first.tokens[-1]), *machine.buffers["out_tokens"].get().view(np.int32)]
    return prepared, logits, tokens


FLUSH_BYTES = 256 << 20  # more than any GPU's L2 (H100: 50 MB, H200: 60 MB)


def time_launch(machine, prepared, iters: int, *, cold: bool = False) -> Timing:
    """us per token of ``prepared`` replayed back to back: CUDA events around each of
    ``iters`` launches after 5 warm-up launches, divided by the launch's steps.

    ``cold``: a read of FLUSH_BYTES runs before each timed launch, outside its events, so
    every launch starts with a cold L2. A launch that reads only a few MB of weights (loop
    1's stages) would otherwise find them in L2 on every replay, which the megakernel
    streaming a whole model never does."""
    cp = machine.cp
    junk = cp.ones(FLUSH_BYTES // 4, dtype=cp.float32) if cold else None
    for _ in range(5):
        machine.start(prepared)
    cp.cuda.Device().synchronize()
    events = [(cp.cuda.Event(), cp.cuda.Event()) for _ in range(iters)]
    for a, b in events:
        if junk is not None:
            junk.sum()  # asynchronous: a reduction kernel reading every byte, evicting L2
        a.record()
        machine.start(prepared)
        b.record()
    machine.finish(prepared)
    us = [cp.cuda.get_elapsed_time(a, b) * 1e3 for a, b in events]
    return Timing.of(us).scaled(1 / prepared.steps)


def device_name(machine) -> str:
    dev = machine.cp.cuda.runtime.getDeviceProperties(0)
    name = dev["name"].decode() if isinstance(dev["name"], bytes) else str(dev["name"])
    return f"{name} ({machine.arch}, {dev['multiProcessorCount']} SMs)"


def bench(weights: ModelWeights, target: Target, *, tokenizer=None, position: int = 16,
          steps: int = 8, schedule: Schedule | None = None, iters: int = 200,
          compile_baseline: bool = True, verify: bool = True,
          kernel_knobs: KernelKnobs | None = None) -> BenchResult:
    from vm.gpu_runner import GpuMachine

    if position < 1:
        raise ValueError("position must be >= 1: the prompt fills the cache first")
    spec = weights.spec
    prompt = prompt_ids(weights, tokenizer, position)
    machine = GpuMachine(weights, knobs=kernel_knobs)
    prepared, logits, tokens = run_checked(machine, weights, target, schedule or Schedule(),
                                           prompt, steps)
    verdict = "not checked"
    if verify:
        from amk_tune.oracle import compare, hf_reference

        ref = hf_reference(weights, prompt, steps + 1)
        verdict = compare(ref, tokens, logits).message
    mk = time_launch(machine, prepared, iters)
    base = torch_baselines(weights, position, iters, compile=compile_baseline)
    timed = launch_programs(weights, target, schedule or Schedule(), position, steps)[1]
    wbytes = weight_bytes(timed)
    return BenchResult(
        device=device_name(machine), model=spec.name, storage=weights.storage,
        position=position, steps=steps, megakernel=mk, verdict=verdict,
        baselines=base, floor_us=target.floor_us(wbytes), weight_bytes=wbytes,
        gbps=target.measured_gbps, date=datetime.date.today().isoformat(),
    )

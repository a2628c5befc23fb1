"""The BENCHMARKS.md speed table: every preset, megakernel vs the torch baselines, one run.

For each model, in one process on the same weights:
- the prompt launch, then a timed launch of 8 decode steps at ``--position``, for each
  candidate of ``benchmarks/configs/<model>.json`` (schedule + kernel knobs; for int8
  ``<model>.int8.json`` where there is one; the defaults when there is no file), each
  checked against HF float32 (``amk-tune bench``'s method);
- torch eager, CUDA graph and torch.compile + CUDA graph, once.

The row shows the fastest candidate whose oracle passed; the JSON output keeps every one.
A config file is ``{"candidates": [{"schedule": {...}, "kernel_knobs": {...}}, ...]}``::

    python3 benchmarks/speed_table.py --out speed.json
    python3 benchmarks/speed_table.py --dtype int8 --no-compile llama-3.2-1b llama-3.2-3b
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from amk_tune.baselines import Timing, torch_baselines
from amk_tune.bench import device_name, launch_programs, prompt_ids, run_checked, time_launch
from amk_tune.model.loaders import load_model
from amk_tune.oracle import compare, hf_reference
from amk_tune.targets import get_target
from space.kernel_knobs import KernelKnobs
from space.schedule import Schedule
from vm.analysis import critical_stages, weight_bytes

MODELS = ("smollm2-135m-instruct", "smollm2-360m", "tinyllama-1.1b", "llama-3.2-1b",
          "llama-3.2-3b")
CONFIGS = Path(__file__).resolve().parent / "configs"
BASELINES = ("torch eager", "torch CUDA graph", "torch.compile + CUDA graph")
STEPS = 8


def config_path(model: str, dtype: str = "bf16") -> Path:
    """``<model>.<dtype>.json`` where a dtype has candidates of its own (int8 tiles are half
    the bytes, so other knobs win), else ``<model>.json``."""
    own = CONFIGS / f"{model}.{dtype}.json"
    return own if own.is_file() else CONFIGS / f"{model}.json"


def candidates(model: str, dtype: str = "bf16") -> list[tuple[Schedule, KernelKnobs]]:
    """The (schedule, kernel knobs) to time for ``model`` in ``dtype``: its config file
    (``config_path``), else defaults."""
    path = config_path(model, dtype)
    if not path.is_file():
        return [(Schedule(), KernelKnobs())]
    return [(Schedule.from_dict(c["schedule"]), KernelKnobs.from_dict(c["kernel_knobs"]))
            for c in json.loads(path.read_text())["candidates"]]


def prebuild(models: list[str], args: argparse.Namespace) -> None:
    """Compile every candidate's kernel at once, in parallel (NVRTC is single-threaded and
    the build cache is shared), so the timed loop below only loads cubins."""
    from amk_tune.model.loaders import inspect_model
    from vm.build import build, config_for
    from vm.gpu_runner import device_arch
    from vm.lowering import lower

    target, arch, configs = get_target(args.gpu), device_arch(), set()
    for name in models:
        spec = inspect_model(name)
        for schedule, knobs in candidates(name, args.dtype):
            program = lower(spec, schedule.replace(steps_per_launch=STEPS), target, steps=STEPS,
                            dtype=args.dtype, quant_group=args.quant_group)
            configs.add(config_for(program, spec, knobs))
    with ProcessPoolExecutor(max_workers=8) as pool:
        list(pool.map(build, sorted(configs, key=repr), [arch] * len(configs)))


def _us(t: Timing | str) -> str:
    return f"{t.median_us:,.1f}" if isinstance(t, Timing) else str(t)


def measure(name: str, args: argparse.Namespace) -> dict:
    """Every candidate of ``name`` (timed, oracle-checked) and the baselines, one row."""
    target = get_target(args.gpu)
    model = load_model(name, dtype=args.dtype, quant_group=args.quant_group)
    w = model.weights
    prompt = prompt_ids(w, model.tokenizer, args.position)
    ref = hf_reference(w, prompt, STEPS + 1)
    from vm.gpu_runner import GpuMachine

    tried = []
    for schedule, knobs in candidates(name, args.dtype):
        schedule = schedule.replace(steps_per_launch=STEPS)
        machine = GpuMachine(w, knobs=knobs)
        prepared, logits, tokens = run_checked(machine, w, target, schedule, prompt, STEPS)
        verdict = compare(ref, tokens, logits)
        t = time_launch(machine, prepared, args.iters)
        program = launch_programs(w, target, schedule, args.position, STEPS)[1]
        tried.append({"schedule": schedule.to_dict(), "kernel_knobs": knobs.to_dict(),
                      "us": t.median_us, "p10_us": t.p10_us, "p90_us": t.p90_us,
                      "passed": verdict.passed, "verdict": verdict.message,
                      "critical_stages": critical_stages(program),
                      "weight_bytes": weight_bytes(program), "device": device_name(machine)})
        del machine, prepared
        gc.collect()
    base = torch_baselines(w, args.position, args.iters, compile=not args.no_compile)
    return {"model": name, "storage": w.storage, "position": args.position,
            "date": datetime.date.today().isoformat(), "candidates": tried,
            "baselines": {b: _us(base.get(b, "-")) for b in BASELINES},
            "compile_us": (base["torch.compile + CUDA graph"].median_us
                           if isinstance(base.get("torch.compile + CUDA graph"), Timing)
                           else None),
            "floor_us": target.floor_us(tried[0]["weight_bytes"])}


def row(r: dict) -> str:
    ok = [c for c in r["candidates"] if c["passed"]]
    if not ok:
        return f"| {r['model']} {r['storage']} | no candidate passed the oracle | " + " | ".join(
            c["verdict"] for c in r["candidates"]) + " |"
    best = min(ok, key=lambda c: c["us"])
    ratio = f"{r['compile_us'] / best['us']:.2f}x" if r["compile_us"] else "-"
    return (f"| {r['model']} {r['storage']} | {best['us']:,.1f} ({best['p10_us']:,.1f}-"
            f"{best['p90_us']:,.1f}) | {100 * r['floor_us'] / best['us']:.1f}% of "
            f"{r['floor_us']:.1f} | {best['critical_stages']} | {best['verdict'].split(',')[0]} | "
            + " | ".join(r["baselines"][b] for b in BASELINES) + f" | {ratio} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*", default=list(MODELS))
    ap.add_argument("--gpu", default="auto")
    ap.add_argument("--position", type=int, default=128)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--dtype", default="bf16", help="weight storage: bf16 or int8")
    ap.add_argument("--quant-group", type=int, default=0, help="int8 columns per scale (0: "
                    "one per output channel)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--out", help="write the results here (JSON)")
    args = ap.parse_args()

    print("| model | megakernel us/token (p10-p90) | of floor | critical stages | oracle | "
          "torch eager | torch CUDA graph | torch.compile + graph | compile / megakernel |")
    print("|---|---|---|---|---|---|---|---|---|")
    prebuild(args.models, args)
    results = []
    for name in args.models:
        r = measure(name, args)
        results.append(r)
        print(row(r), flush=True)
        if args.out:  # after every model: a later failure loses nothing
            Path(args.out).write_text(json.dumps(results, indent=1))
        gc.collect()
    return 0 if all(any(c["passed"] for c in r["candidates"]) for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())

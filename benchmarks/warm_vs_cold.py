"""Issue 8's measured benefit: repeated short studies, cold against warm, same budget and
seeds. How many trials (and minutes) until a study is within ``--within`` of the best
known latency?

For every seed of ``--seeds``, two studies of ``--trials`` trials each, each in a fresh
SQLite storage under ``--dir`` (no run sees another's trials):

- cold: ``--no-prior``: the default schedule, then seeded TPE;
- warm: the default schedule, then the prior's top picks (``prior/warm_start.py``, trained
  on the committed corpus under studies/), then the same seeded TPE.

The best known latency is the best feasible us/token over every run of this invocation
and, for measured runs, the committed corpus's measured trials of the same model, GPU and
dtype (the earlier studies the warm start learns from).
For each run the table gives the number of trials that had finished (pruned and failed ones
count: they spent the budget too) when its running best first came within ``--within`` of
it, and the minutes from the study's first trial start to then; "-" when the run never got
there. The torch baselines are not
timed (``StudyOptions.baselines``): they do not change the search. Simulated runs
(``--simulate``) say so in every line and measure nothing::

    python3 benchmarks/warm_vs_cold.py --model smollm2-135m-instruct --trials 12 --seeds 0 1 2
    python3 benchmarks/warm_vs_cold.py --simulate --model smollm2-135m --layers 2 --trials 6
"""

from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from amk_tune.study.run import StudyOptions, run_study
from prior.corpus import CORPUS_PATH, read_corpus, study_rows

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def feasible(t: FrozenTrial) -> bool:
    return (t.state == TrialState.COMPLETE and t.user_attrs.get("feasible", True)
            and t.value is not None and math.isfinite(t.value))


@dataclass(frozen=True)
class Run:
    mode: str  # "cold" | "warm"
    seed: int
    trials: list[FrozenTrial]  # every finished trial, in the order they finished

    @property
    def best(self) -> float:
        return min((t.value for t in self.trials if feasible(t)), default=math.inf)

    def reached(self, target_us: float) -> tuple[int, float] | None:
        """(trials finished, minutes since the first started) when the running best first
        was <= target_us."""
        if not self.trials:
            return None
        start = min(t.datetime_start for t in self.trials)
        for i, t in enumerate(self.trials, start=1):
            if feasible(t) and t.value <= target_us:
                return i, (t.datetime_complete - start).total_seconds() / 60
        return None


def corpus_best(study: optuna.Study) -> float:
    """The best measured us/token the committed corpus holds for ``study``'s model, GPU and
    dtype; inf when it holds none."""
    rows = study_rows(study)
    if not rows:
        return math.inf
    ctx, df = rows[0], read_corpus(CORPUS_PATH)
    same = df[(df["model"] == ctx["model"]) & (df["gpu"] == ctx["gpu"])
              & (df["dtype"] == ctx["dtype"]) & (df["state"] == "complete")
              & (df["measurement"] == "measured")]
    return float(same["us_per_token"].min()) if len(same) else math.inf


def finished_in_order(study: optuna.Study) -> list[FrozenTrial]:
    done = [t for t in study.get_trials(deepcopy=False, states=FINISHED)
            if t.datetime_complete is not None]
    return sorted(done, key=lambda t: t.datetime_complete)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--gpu", default="auto")
    ap.add_argument("--trials", type=int, default=12, help="trials per study (the budget)")
    ap.add_argument("--minutes", type=float, default=9.0, help="time cap per study")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--within", type=float, default=0.05, help="how close to the best known")
    ap.add_argument("--iters", type=int, default=50, help="timed launches per trial")
    ap.add_argument("--simulate", action="store_true")
    ap.add_argument("--dir", default=str(Path(tempfile.gettempdir()) / "amk-warm-vs-cold"),
                    help="where the per-run SQLite storages go (each is recreated)")
    ap.add_argument("--json", help="write the per-run results here")
    args = ap.parse_args()

    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    known = math.inf  # the corpus's best for this model, GPU and dtype (measured runs only)
    for seed in args.seeds:
        for mode in ("cold", "warm"):
            db = root / f"{mode}-seed{seed}.db"
            db.unlink(missing_ok=True)  # a fresh storage: the run starts from nothing
            opts = StudyOptions(model=args.model, gpu=args.gpu, minutes=args.minutes,
                                trials=args.trials, layers=args.layers,
                                storage=f"sqlite:///{db}", seed=seed, simulate=args.simulate,
                                prior=mode == "warm", baselines=False, iters=args.iters)
            outcome = run_study(opts, out=io.StringIO())
            runs.append(Run(mode, seed, finished_in_order(outcome.study)))
            if not args.simulate:
                known = min(known, corpus_best(outcome.study))
            print(f"{mode} seed {seed}: {len(runs[-1].trials)} trials, best "
                  f"{runs[-1].best:.1f} us/token", flush=True)
    ran = min(r.best for r in runs)
    best = min(ran, known)
    if not math.isfinite(best):
        print("no feasible trial in any run")
        return 1
    target = best * (1 + args.within)
    kind = "simulated" if args.simulate else "measured"
    print(f"\nbest known {best:.1f} us/token ({kind}; these runs {ran:.1f}, the corpus "
          f"{known:.1f}); within {args.within:.0%}: <= {target:.1f}")
    print("| mode | seed | best us/token | trials to within | minutes to within |")
    print("|---|---|---|---|---|")
    found: dict[str, list[int]] = {"cold": [], "warm": []}
    rows = []
    for r in runs:
        hit = r.reached(target)
        if hit:
            found[r.mode].append(hit[0])
        print(f"| {r.mode} | {r.seed} | {r.best:.1f} ({kind}) | {hit[0] if hit else '-'} | "
              f"{f'{hit[1]:.1f}' if hit else '-'} |")
        rows.append({"mode": r.mode, "seed": r.seed, "best_us": r.best, "kind": kind,
                     "trials_to_within": hit[0] if hit else None,
                     "minutes_to_within": hit[1] if hit else None})
    for mode, hits in found.items():
        med = statistics.median(hits) if hits else None
        print(f"{mode}: reached in {len(hits)} of {len(args.seeds)} runs; median trials "
              f"{med if med is not None else '-'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"best_us": best, "runs_best_us": ran,
                                               "corpus_best_us": known if math.isfinite(known)
                                               else None, "within": args.within,
                                               "runs": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

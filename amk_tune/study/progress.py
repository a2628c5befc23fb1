"""The live progress display: one line per finished trial, and the time-budget guard.

    [study] trial 12 COMPLETE 843.2 us/token | best 801.1 us/token (#9) | complete 8,
            pruned 3, failed 1, infeasible 0 | 6m12s left

A simulated study says ``simulated`` on every line. ``Progress`` is an Optuna callback; it
also stops the study when the next trial would not finish inside the time budget (the
median duration of this session's trials so far).
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState


def feasible(t: FrozenTrial) -> bool:
    return t.state == TrialState.COMPLETE and t.user_attrs.get("feasible") is True


def best_feasible(trials: list[FrozenTrial]) -> FrozenTrial | None:
    ok = [t for t in trials if feasible(t)]
    return min(ok, key=lambda t: (t.value, t.number)) if ok else None


def counts(trials: list[FrozenTrial]) -> dict[str, int]:
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    return {
        "complete": len(done),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "infeasible": sum(not feasible(t) for t in done),
    }


def clock(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 60}m{s % 60:02d}s"


def describe(t: FrozenTrial) -> str:
    """What happened to one trial, in a few words."""
    if t.state == TrialState.COMPLETE:
        mark = "" if feasible(t) else " INFEASIBLE (oracle failed)"
        return f"COMPLETE {t.value:.1f} us/token{mark}"
    if t.state == TrialState.PRUNED:
        props = sorted({v["property"] for v in t.user_attrs.get("reject", [])})
        return f"PRUNED by the validator ({', '.join(props) or 'rejected'})"
    reason = str(t.user_attrs.get("fail_reason", "see the log"))
    return f"{t.state.name} ({reason[:160]})"


class Progress:
    def __init__(self, deadline: float, *, simulated: bool, stream: TextIO | None = None) -> None:
        self.deadline = deadline  # time.monotonic() value
        self.tag = "[study, simulated]" if simulated else "[study]"
        self.stream = stream or sys.stderr
        self.durations: list[float] = []
        self.stopped = False  # the budget is spent: no further trial would finish in time
        self.finished = 0  # trials this run finished (any state)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.finished += 1
        trials = study.get_trials(deepcopy=False)
        best = best_feasible(trials)
        c = counts(trials)
        best_text = f"best {best.value:.1f} us/token (#{best.number})" if best else "no best yet"
        left = self.deadline - time.monotonic()
        print(f"{self.tag} trial {trial.number} {describe(trial)} | {best_text} | "
              f"complete {c['complete']}, pruned {c['pruned']}, failed {c['failed']}, "
              f"infeasible {c['infeasible']} | {clock(left)} left",
              file=self.stream, flush=True)
        if trial.datetime_start and trial.datetime_complete:
            self.durations.append((trial.datetime_complete - trial.datetime_start).total_seconds())
        if self.durations and left < statistics.median(self.durations):
            print(f"{self.tag} stopping: the next trial would not finish in the "
                  f"{clock(left)} left", file=self.stream, flush=True)
            self.stopped = True
            study.stop()

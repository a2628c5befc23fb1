"""Warm start: enqueue the prior's best validator-accepted candidates into a new study.

1. Training data: the committed corpus plus the finished trials of every amk-tune study in
   the study's storage (measured rows only train the prior; duplicates of corpus rows are
   dropped).
2. The pool: the ``remember`` best measured configurations of the training data (any model
   and GPU: the prior re-ranks them for this study's, so what was learnt on earlier
   studies is tried again where it transfers), then ``candidates`` random points of the
   study's part of the search space (its weight formats: ``WeightChoices.for_study``;
   Optuna's RandomSampler on a throwaway in-memory study), minus those the study has
   already tried or queued.
3. Ranked by the prior's predicted floor/latency fraction; then, best first, each is lowered
   and checked exactly as the objective will (``trial_programs``, ``fit_knobs`` and
   ``validate``) and only ACCEPTED ones are enqueued, until ``k`` are or ``max_checks``
   candidates were tried.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from amk_tune.errors import AmkError, ScheduleError
from amk_tune.model.spec import ModelSpec
from amk_tune.study.objective import fit_knobs, trial_programs
from amk_tune.targets import Target
from prior.corpus import (
    CORPUS_PATH,
    candidate_of_row,
    context_fields,
    knob_fields,
    read_corpus,
    study_rows,
)
from prior.model import Prior, fit_prior, latency_us, training_rows
from space.search_space import Candidate, in_space, params_key, params_of, suggest
from space.weight_format import WHOLE_SPACE, WeightChoices
from validator import validate
from vm.analysis import program_stats
from vm.program import Program

ROLE = "prior pick"


@dataclass(frozen=True)
class Pick:
    """One enqueued candidate and what the prior expects of it."""

    params: dict[str, Any]
    fraction: float  # predicted floor / latency
    predicted_us: float  # predicted us/token (never under the floor)


@dataclass(frozen=True)
class WarmStart:
    """What the warm start did: its picks, and a line saying why it did less (or nothing)."""

    picks: tuple[Pick, ...]
    note: str


def training_data(storage: str | None, corpus: str | Path = CORPUS_PATH) -> pd.DataFrame:
    """The corpus plus the rows of every amk-tune study in ``storage``."""
    frames = [read_corpus(corpus)]
    for name in optuna.get_all_study_names(storage) if storage else ():
        study = optuna.load_study(study_name=name, storage=storage)
        try:
            frames.append(pd.DataFrame(study_rows(study)))
        except AmkError:  # not an amk-tune study, or its model cannot be inspected here
            continue
    frames = [f for f in frames if not f.empty]
    if not frames:
        return read_corpus(corpus)
    rows = pd.concat(frames, ignore_index=True)
    return rows.drop_duplicates(subset=["study", "trial"], keep="first").reset_index(drop=True)


def sample_candidates(target: Target, n: int, seed: int,
                      weights: WeightChoices = WHOLE_SPACE,
                      ) -> list[tuple[dict[str, Any], Candidate]]:
    """Up to ``n`` distinct random (params, candidate) pairs of the search space, with
    weight formats among ``weights``."""
    scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out, seen = [], set()
    for _ in range(n):
        trial = scratch.ask()
        cand = suggest(trial, target, weights)
        key = params_key(trial.params)
        if key not in seen:
            seen.add(key)
            out.append((dict(trial.params), cand))
    return out


def remembered(rows: pd.DataFrame, target: Target, weights: WeightChoices, n: int,
               ) -> list[tuple[dict[str, Any], Candidate]]:
    """Up to ``n`` distinct configurations of the best measured rows (highest floor/latency
    first, any model or GPU) that this study's space holds: a weight format among
    ``weights`` and knob values ``target``'s space can take (a tile count is bounded by the
    SM count)."""
    if n < 1:
        return []
    done = training_rows(rows)
    out, seen = [], set()
    for _, row in done[done["y"] > 0].sort_values("y", ascending=False).iterrows():
        cand = candidate_of_row(row)
        if (cand.weights.dtype not in weights.dtypes
                or cand.weights.quant_group not in weights.quant_groups):
            continue
        params = params_of(cand, target)
        key = params_key(params)
        if key in seen:
            continue
        if not in_space(params, target):
            continue
        seen.add(key)
        out.append((params, cand))
        if len(out) == n:
            break
    return out


def accepted_programs(spec: ModelSpec, target: Target, cand: Candidate,
             prompt_len: int) -> dict[str, Program] | None:
    """The launches the trial would run when its knobs fit the kernel and the validator
    accepts both launches, else None: the objective's checks before any GPU work."""
    try:
        programs = trial_programs(spec, target, cand, prompt_len)
        fit_knobs(programs, spec, cand)
    except ScheduleError:
        return None
    return programs if all(validate(p, target).accepted for p in programs.values()) else None


def queued_params(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial's params; for a WAITING (enqueued) trial, the params it was enqueued with."""
    return t.params or t.system_attrs.get("fixed_params", {})


def pick(study: optuna.Study, prior: Prior, spec: ModelSpec, target: Target, dtype: str, *,
         prompt_len: int, k: int = 4, candidates: int = 512, max_checks: int = 32,
         seed: int = 0, quant_group: int | None = None,
         known: pd.DataFrame | None = None, remember: int = 32) -> tuple[Pick, ...]:
    """Rank the ``remember`` best configurations of ``known`` (training rows) and random
    candidates of a (``dtype``, ``quant_group``) study (space/weight_format.py) with
    ``prior`` and enqueue the best ``k`` accepted ones."""
    tried = {params_key(queued_params(t)) for t in study.get_trials(deepcopy=False)}
    weights = WeightChoices.for_study(spec, dtype, quant_group)
    pool, seen = [], set(tried)
    for p, c in [*(remembered(known, target, weights, remember) if known is not None else []),
                 *sample_candidates(target, candidates, seed, weights)]:
        key = params_key(p)
        if key not in seen:
            seen.add(key)
            pool.append((p, c))
    if not pool or k < 1:
        return ()
    context = context_fields(spec, target, dtype)
    rows = pd.DataFrame([{**context, **knob_fields(c)} for _, c in pool])
    fractions = prior.fraction(rows)
    order = sorted(range(len(pool)), key=lambda i: -fractions[i])
    picks: list[Pick] = []
    for i in order[:max_checks]:
        params, cand = pool[i]
        programs = accepted_programs(spec, target, cand, prompt_len)
        if programs is None:
            continue
        floor = target.floor_us(program_stats(programs["timed launch"]).weight_bytes)
        chosen = Pick(params, float(fractions[i]), float(latency_us(floor, fractions[i])))
        study.enqueue_trial(params, user_attrs={"role": ROLE,
                                                "prior_predicted_us": chosen.predicted_us})
        picks.append(chosen)
        if len(picks) == k:
            break
    return tuple(picks)


def warm_start(study: optuna.Study, spec: ModelSpec, target: Target, dtype: str, *,
               storage: str | None, prompt_len: int, k: int = 4, seed: int = 0,
               corpus: str | Path = CORPUS_PATH, quant_group: int | None = None) -> WarmStart:
    """Train the prior on the corpus + ``storage`` and enqueue its picks into ``study``."""
    rows = training_data(storage, corpus)
    try:
        prior = fit_prior(rows, seed=seed)
    except ValueError as e:
        return WarmStart((), f"prior off: {e}")
    picks = pick(study, prior, spec, target, dtype, prompt_len=prompt_len, k=k, seed=seed,
                 quant_group=quant_group, known=rows)
    note = (f"prior trained on {prior.rows} measured trials ({prior.positives} feasible); "
            f"{len(picks)} of {k} picks passed the objective's checks")
    return WarmStart(picks, note)
